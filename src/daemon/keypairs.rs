//! Key pairs: SSH keys the daemon creates (ed25519 or RSA, the private key returned once in
//! OpenSSH format) or imports (an OpenSSH public key), fingerprinted as EC2 shows them, and
//! handed to instances through their config drive.

use std::fmt::Write as _;
use std::sync::Arc;

use sha1::Digest as _;
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::describe::Describable;
use super::DaemonError;
use crate::state::id::{new_id, now};
use crate::state::keypair::{KeyPairRecord, KeyPairStore};
use crate::state::tag::TagStore;

/// Bits of the RSA keys CreateKeyPair makes (as EC2's).
const RSA_BITS: usize = 2048;
/// The smallest RSA key ImportKeyPair takes.
const MIN_IMPORTED_RSA_BITS: u32 = 2048;
/// The longest public key line ImportKeyPair takes.
const MAX_PUBLIC_KEY_BYTES: usize = 16 << 10;

/// Errors of key pair requests.
#[derive(Debug, thiserror::Error)]
pub enum KeyPairError {
    /// No key pair has that name.
    #[error("the key pair {0:?} does not exist")]
    NotFound(String),
    /// The name is taken.
    #[error("the key pair {0:?} already exists")]
    Duplicate(String),
    /// The key material is not a key nuage takes.
    #[error("{0}")]
    Format(String),
}

/// The kinds of key CreateKeyPair makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, 2048 bits (EC2's default).
    Rsa,
    /// Ed25519.
    Ed25519,
}

impl std::str::FromStr for KeyType {
    type Err = DaemonError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" | "rsa" => Ok(Self::Rsa),
            "ed25519" => Ok(Self::Ed25519),
            other => Err(DaemonError::InvalidParameter(format!("key type {other:?}: rsa or ed25519"))),
        }
    }
}

/// The key pairs of one daemon.
#[derive(Clone)]
pub struct KeyPairs {
    db: Arc<dyn KeyPairStore>,
    tags: Arc<dyn TagStore>,
}

impl Describable for KeyPairRecord {
    const FILTERS: &'static [&'static str] = &["key-name", "key-pair-id", "key-type", "fingerprint"];

    fn id(&self) -> &str {
        &self.id
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "key-name" => self.name.clone(),
            "key-pair-id" => self.id.clone(),
            "key-type" => self.key_type.clone(),
            _ => self.fingerprint.clone(),
        }
    }
}

impl KeyPairs {
    /// Key pairs recorded in `db`; a deleted one's tags are forgotten in `tags`.
    pub fn new(db: Arc<dyn KeyPairStore>, tags: Arc<dyn TagStore>) -> Self {
        Self { db, tags }
    }

    /// Makes a key pair named `name`; returns its record and the private key in OpenSSH
    /// format, which is not kept.
    pub fn create(&self, name: &str, key_type: KeyType) -> Result<(KeyPairRecord, String), DaemonError> {
        check_name(name)?;
        if self.db.key_pair(name)?.is_some() {
            return Err(KeyPairError::Duplicate(name.to_owned()).into());
        }
        let crypto = |e: ssh_key::Error| DaemonError::Internal(format!("generating a key: {e}"));
        let (mut private, fingerprint) = match key_type {
            KeyType::Ed25519 => {
                let private = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(crypto)?;
                let fingerprint = sha256_fingerprint(private.public_key());
                (private, fingerprint)
            }
            KeyType::Rsa => {
                let rsa = rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                    .map_err(|e| DaemonError::Internal(format!("generating an RSA key: {e}")))?;
                // EC2 fingerprints a key it made by the SHA-1 of its PKCS#8 DER encoding.
                let der = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&rsa)
                    .map_err(|e| DaemonError::Internal(format!("encoding an RSA key: {e}")))?;
                let fingerprint = hex_pairs(&sha1::Sha1::digest(der.as_bytes()));
                let keypair = RsaKeypair::try_from(rsa).map_err(crypto)?;
                (PrivateKey::new(KeypairData::Rsa(keypair), "").map_err(crypto)?, fingerprint)
            }
        };
        // The comment names the key pair, as the public key line's last word.
        private.set_comment(name);
        let public_key = private.public_key().to_openssh().map_err(crypto)?;
        let material = private.to_openssh(LineEnding::LF).map_err(crypto)?;
        let record = self.insert(name, key_type_name(private.algorithm()), fingerprint, public_key)?;
        Ok((record, material.to_string()))
    }

    /// Records the OpenSSH public key `material` (an `authorized_keys` line) as key pair
    /// `name`.
    pub fn import(&self, name: &str, material: &str) -> Result<KeyPairRecord, DaemonError> {
        check_name(name)?;
        let public = parse_public_key(material)?;
        if self.db.key_pair(name)?.is_some() {
            return Err(KeyPairError::Duplicate(name.to_owned()).into());
        }
        let fingerprint = match public.key_data() {
            // EC2 fingerprints an imported RSA key by the MD5 of its DER public key.
            KeyData::Rsa(key) => {
                let key =
                    rsa::RsaPublicKey::try_from(key).map_err(|e| KeyPairError::Format(e.to_string()))?;
                let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key)
                    .map_err(|e| DaemonError::Internal(format!("encoding an RSA key: {e}")))?;
                hex_pairs(&md5::Md5::digest(der.as_bytes()))
            }
            _ => sha256_fingerprint(&public),
        };
        let line = public.to_openssh().map_err(|e| KeyPairError::Format(e.to_string()))?;
        self.insert(name, key_type_name(public.algorithm()), fingerprint, line)
    }

    fn insert(
        &self,
        name: &str,
        key_type: &str,
        fingerprint: String,
        public_key: String,
    ) -> Result<KeyPairRecord, DaemonError> {
        let record = KeyPairRecord {
            id: new_id("key"),
            name: name.to_owned(),
            key_type: key_type.to_owned(),
            fingerprint,
            public_key,
            create_time: now() as i64,
        };
        if !self.db.insert_key_pair(&record)? {
            return Err(KeyPairError::Duplicate(name.to_owned()).into());
        }
        Ok(record)
    }

    /// The key pairs named (all when `names` is empty); any unknown name fails the call.
    pub fn describe(&self, names: &[String]) -> Result<Vec<KeyPairRecord>, DaemonError> {
        let all = self.db.key_pairs()?;
        if let Some(missing) = names.iter().find(|name| !all.iter().any(|k| &k.name == *name)) {
            return Err(KeyPairError::NotFound(missing.clone()).into());
        }
        Ok(all.into_iter().filter(|k| names.is_empty() || names.contains(&k.name)).collect())
    }

    /// The key pair named `name`.
    pub fn get(&self, name: &str) -> Result<KeyPairRecord, DaemonError> {
        self.db.key_pair(name)?.ok_or_else(|| KeyPairError::NotFound(name.to_owned()).into())
    }

    /// Deletes key pair `name`. Instances launched with it keep the key they got; as in
    /// EC2, deleting a key pair that does not exist succeeds.
    pub fn delete(&self, name: &str) -> Result<(), DaemonError> {
        check_name(name)?;
        if let Some(record) = self.db.key_pair(name)? {
            self.db.delete_key_pair(name)?;
            self.tags.forget_tags(&record.id)?;
        }
        Ok(())
    }
}

/// Names are 1 to 255 printable ASCII characters, as EC2's.
fn check_name(name: &str) -> Result<(), DaemonError> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(DaemonError::InvalidParameter(format!(
            "key name {name:?} must be 1 to 255 printable ASCII characters"
        )));
    }
    Ok(())
}

/// Parses one OpenSSH public key line, refusing kinds and sizes nuage does not take.
fn parse_public_key(material: &str) -> Result<PublicKey, KeyPairError> {
    let line = material.trim();
    if line.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(KeyPairError::Format(format!("the key is longer than {MAX_PUBLIC_KEY_BYTES} bytes")));
    }
    if line.lines().count() != 1 {
        return Err(KeyPairError::Format("expected one OpenSSH public key line".into()));
    }
    let public = PublicKey::from_openssh(line)
        .map_err(|e| KeyPairError::Format(format!("not an OpenSSH public key ({e})")))?;
    match public.key_data() {
        KeyData::Ed25519(_) => Ok(public),
        KeyData::Rsa(key) => {
            let bits = key.n.as_positive_bytes().map_or(0, |n| {
                let lead = n.first().map_or(0, |b| b.leading_zeros());
                n.len() as u32 * 8 - lead
            });
            if bits < MIN_IMPORTED_RSA_BITS {
                return Err(KeyPairError::Format(format!(
                    "an RSA key of {bits} bits; at least {MIN_IMPORTED_RSA_BITS} are needed"
                )));
            }
            Ok(public)
        }
        _ => Err(KeyPairError::Format(format!(
            "{} keys are not supported: use ed25519 or rsa",
            public.algorithm()
        ))),
    }
}

fn key_type_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Ed25519 => "ed25519",
        _ => "rsa",
    }
}

/// OpenSSH's fingerprint (SHA-256 of the wire-format key), base64 with padding as EC2
/// prints it.
fn sha256_fingerprint(public: &PublicKey) -> String {
    let fingerprint = public.fingerprint(HashAlg::Sha256);
    <base64ct::Base64 as base64ct::Encoding>::encode_string(fingerprint.as_bytes())
}

/// `aa:bb:cc...`, how EC2 prints SHA-1 and MD5 fingerprints.
fn hex_pairs(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{b:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::db::Database;

    fn key_pairs(dir: &tempfile::TempDir) -> KeyPairs {
        let db = Arc::new(Database::open(&dir.path().join("nuage.db")).unwrap());
        KeyPairs::new(db.clone(), db)
    }

    /// Runs ssh-keygen when it is installed.
    fn ssh_keygen(args: &[&str]) -> Option<String> {
        let output = std::process::Command::new("ssh-keygen").args(args).output().ok()?;
        assert!(output.status.success(), "ssh-keygen {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    #[test]
    fn created_keys_are_openssh_keys_with_ec2_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let keys = key_pairs(&dir);
        for (name, key_type, fingerprint_len) in [("ed", KeyType::Ed25519, 44), ("rs", KeyType::Rsa, 59)] {
            let (record, material) = keys.create(name, key_type).unwrap();
            assert!(material.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{material}");
            assert_eq!(record.fingerprint.len(), fingerprint_len, "{}", record.fingerprint);
            assert!(record.id.starts_with("key-"));
            let private = PrivateKey::from_openssh(&material).unwrap();
            assert_eq!(private.public_key().to_openssh().unwrap(), record.public_key);
            // OpenSSH itself reads the private key and derives the same public key.
            let path = dir.path().join(name);
            std::fs::write(&path, &material).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            if let Some(public) = ssh_keygen(&["-y", "-f", path.to_str().unwrap()]) {
                assert_eq!(
                    public.split_whitespace().take(2).collect::<Vec<_>>(),
                    record.public_key.split_whitespace().take(2).collect::<Vec<_>>()
                );
            }
            if key_type == KeyType::Ed25519 {
                if let Some(fp) = ssh_keygen(&["-l", "-E", "sha256", "-f", path.to_str().unwrap()]) {
                    // "256 SHA256:<base64 without padding> comment (ED25519)"
                    let unpadded = record.fingerprint.trim_end_matches('=');
                    assert!(fp.contains(&format!("SHA256:{unpadded} ")), "{fp} vs {}", record.fingerprint);
                }
            }
        }
        assert!(matches!(
            keys.create("ed", KeyType::Ed25519),
            Err(DaemonError::KeyPair(KeyPairError::Duplicate(_)))
        ));
        assert_eq!(keys.describe(&[]).unwrap().len(), 2);
    }

    #[test]
    fn imported_keys_are_checked_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let keys = key_pairs(&dir);
        let ed = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let line = format!("{} someone@laptop\n", ed.public_key().to_openssh().unwrap());
        let record = keys.import("laptop", &line).unwrap();
        assert_eq!(record.key_type, "ed25519");
        assert_eq!(record.fingerprint, sha256_fingerprint(ed.public_key()));
        let rsa = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let rsa = PrivateKey::new(KeypairData::Rsa(RsaKeypair::try_from(rsa).unwrap()), "").unwrap();
        let record = keys.import("rsa", &rsa.public_key().to_openssh().unwrap()).unwrap();
        assert_eq!((record.key_type.as_str(), record.fingerprint.len()), ("rsa", 47), "MD5, hex pairs");

        for bad in ["", "ssh-ed25519", "ssh-ed25519 AAAA!!", "not a key at all", &format!("{line}{line}")] {
            let err = keys.import("bad", bad).unwrap_err();
            assert!(matches!(err, DaemonError::KeyPair(KeyPairError::Format(_))), "{bad:?}: {err}");
        }
        let small = rsa::RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let small = PrivateKey::new(KeypairData::Rsa(RsaKeypair::try_from(small).unwrap()), "").unwrap();
        let err = keys.import("small", &small.public_key().to_openssh().unwrap()).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{err}");
        assert!(matches!(
            keys.import("laptop", &line),
            Err(DaemonError::KeyPair(KeyPairError::Duplicate(_)))
        ));
        assert!(matches!(keys.import("", &line), Err(DaemonError::InvalidParameter(_))));
        let names: Vec<String> = keys.describe(&[]).unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["laptop", "rsa"], "failed imports left nothing");
        assert!(matches!(
            keys.describe(&["nope".into()]),
            Err(DaemonError::KeyPair(KeyPairError::NotFound(_)))
        ));
        keys.delete("laptop").unwrap();
        keys.delete("laptop").unwrap();
        assert!(keys.get("laptop").is_err());
    }

    #[test]
    fn key_types_parse() {
        assert_eq!("".parse::<KeyType>().unwrap(), KeyType::Rsa);
        assert_eq!("ed25519".parse::<KeyType>().unwrap(), KeyType::Ed25519);
        assert!("dsa".parse::<KeyType>().is_err());
    }
}
