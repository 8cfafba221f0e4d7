//! IMDSv2 session tokens. A token is its expiry and an HMAC-SHA256 over the instance it
//! was issued to and that expiry, under a key kept in the daemon's state: nothing is
//! stored per token (a guest cannot fill a table by asking for tokens), a token keeps
//! working across a daemon restart, and one instance's token is worthless to another.

use std::io;
use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::state::file::write_atomic;

/// The longest life a token may ask for (EC2's six hours).
pub const MAX_TTL_SECONDS: u64 = 21_600;

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this service issued.
    #[error("malformed token")]
    Malformed,
    /// Issued, but its time is up.
    #[error("expired token")]
    Expired,
    /// Issued to another instance, or under another key.
    #[error("token not issued to this instance")]
    Foreign,
}

/// The key tokens are signed with.
pub struct TokenKey([u8; KEY_LEN]);

impl TokenKey {
    /// The key kept at `path` (0600), made there on first use.
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key = bytes.try_into().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a {KEY_LEN}-byte key", path.display()),
                    )
                })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = Self::random()?;
                write_atomic(path, &key.0)?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    /// A fresh random key.
    pub fn random() -> io::Result<Self> {
        let mut key = [0u8; KEY_LEN];
        // SAFETY: the kernel writes at most `key.len()` bytes into `key`.
        let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
        if n != KEY_LEN as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(key))
    }

    fn tag(&self, instance_id: &str, expiry: u64) -> Hmac<Sha256> {
        // An HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(&expiry.to_be_bytes());
        mac.update(instance_id.as_bytes());
        mac
    }

    /// A token for `instance_id`, valid for `ttl` seconds from `now` (seconds since the
    /// epoch).
    pub fn issue(&self, instance_id: &str, ttl: u64, now: u64) -> String {
        let expiry = now.saturating_add(ttl.min(MAX_TTL_SECONDS));
        let mut bytes = expiry.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.tag(instance_id, expiry).finalize().into_bytes());
        Base64UrlUnpadded::encode_string(&bytes)
    }

    /// Whether `token` was issued to `instance_id` and is still valid at `now`.
    pub fn check(&self, token: &str, instance_id: &str, now: u64) -> Result<(), TokenError> {
        let mut bytes = [0u8; 8 + TAG_LEN];
        let decoded =
            Base64UrlUnpadded::decode(token.trim(), &mut bytes).map_err(|_| TokenError::Malformed)?;
        if decoded.len() != bytes.len() {
            return Err(TokenError::Malformed);
        }
        let (expiry, tag) = bytes.split_at(8);
        let expiry = u64::from_be_bytes(expiry.try_into().map_err(|_| TokenError::Malformed)?);
        // Compared in constant time, so the tag cannot be found byte by byte.
        self.tag(instance_id, expiry).verify_slice(tag).map_err(|_| TokenError::Foreign)?;
        if expiry <= now {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_good_for_its_instance_until_it_expires() {
        let key = TokenKey::random().unwrap();
        let token = key.issue("i-1", 60, 1000);
        assert_eq!(key.check(&token, "i-1", 1000), Ok(()));
        assert_eq!(key.check(&token, "i-1", 1059), Ok(()));
        assert_eq!(key.check(&token, "i-1", 1060), Err(TokenError::Expired));
        assert_eq!(key.check(&token, "i-2", 1000), Err(TokenError::Foreign));
        assert_eq!(TokenKey::random().unwrap().check(&token, "i-1", 1000), Err(TokenError::Foreign));
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let key = TokenKey::random().unwrap();
        let token = key.issue("i-1", 60, 1000);
        // A later expiry written over the real one no longer matches the tag.
        let mut bytes = Base64UrlUnpadded::decode_vec(&token).unwrap();
        bytes[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        let forged = Base64UrlUnpadded::encode_string(&bytes);
        assert_eq!(key.check(&forged, "i-1", 1000), Err(TokenError::Foreign));
        for bad in ["", "x", "!!!!", &token[..token.len() - 2], &format!("{token}AAAA")] {
            assert!(key.check(bad, "i-1", 1000).is_err(), "{bad:?}");
        }
        // A TTL beyond six hours is cut to six hours.
        let long = key.issue("i-1", 1 << 40, 0);
        assert_eq!(key.check(&long, "i-1", MAX_TTL_SECONDS), Err(TokenError::Expired));
    }

    #[test]
    fn the_key_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.key");
        let first = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let token = first.issue("i-1", 60, 0);
        let again = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(again.check(&token, "i-1", 1), Ok(()), "a restart keeps tokens valid");
        std::fs::write(&path, b"short").unwrap();
        assert!(TokenKey::load_or_create(&path).is_err(), "a truncated key is an error, not a new key");
    }
}
