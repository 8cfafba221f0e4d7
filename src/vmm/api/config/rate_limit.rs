//! A device's rate limit, shared by disks and network interfaces.

use serde::{Deserialize, Serialize};

/// Limits on one device's requests (disk) or frames (network), both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Operations (requests or frames) per second, with a one-second burst.
    #[serde(default)]
    pub ops_per_sec: Option<u64>,
    /// Bytes per second, with a one-second burst.
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
}

/// A rate that is not a positive integer.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidRate;

impl RateLimit {
    /// Applies a `--disk`/`--net` item `ops=N` or `bw=N`; `Ok(false)` if `key` is neither.
    pub fn apply_flag(&mut self, key: &str, value: &str) -> Result<bool, InvalidRate> {
        let slot = match key {
            "ops" => &mut self.ops_per_sec,
            "bw" => &mut self.bytes_per_sec,
            _ => return Ok(false),
        };
        *slot = Some(value.parse().ok().filter(|&rate: &u64| rate > 0).ok_or(InvalidRate)?);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let mut limit = RateLimit::default();
        assert_eq!(limit.apply_flag("ops", "100"), Ok(true));
        assert_eq!(limit.apply_flag("bw", "1048576"), Ok(true));
        assert_eq!(limit.apply_flag("id", "x"), Ok(false));
        assert_eq!(limit.apply_flag("ops", "0"), Err(InvalidRate));
        assert_eq!(limit.apply_flag("bw", "-1"), Err(InvalidRate));
        assert_eq!(limit, RateLimit { ops_per_sec: Some(100), bytes_per_sec: Some(1 << 20) });
    }
}
