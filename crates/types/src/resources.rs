//! Resources a node offers and a task asks for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Scalar resources. `cpus` in cores, memory and disk in MiB (the original's `memory` unit).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub cpus: f64,
    #[serde(default)]
    pub mem_mb: f64,
    #[serde(default)]
    pub disk_mb: f64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpus: 0.0,
        mem_mb: 0.0,
        disk_mb: 0.0,
    };

    pub fn new(cpus: f64, mem_mb: f64, disk_mb: f64) -> Self {
        Self {
            cpus,
            mem_mb,
            disk_mb,
        }
    }

    /// Whether `self` (a request) fits in `free`. A small epsilon absorbs float sums such as
    /// ten tasks of 0.1 cpu on a 1-cpu node.
    pub fn fits_in(&self, free: &Resources) -> bool {
        const EPS: f64 = 1e-9;
        self.cpus <= free.cpus + EPS
            && self.mem_mb <= free.mem_mb + EPS
            && self.disk_mb <= free.disk_mb + EPS
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources::new(
            self.cpus + other.cpus,
            self.mem_mb + other.mem_mb,
            self.disk_mb + other.disk_mb,
        )
    }

    /// `self - other`, floored at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources::new(
            (self.cpus - other.cpus).max(0.0),
            (self.mem_mb - other.mem_mb).max(0.0),
            (self.disk_mb - other.disk_mb).max(0.0),
        )
    }

    /// Every value finite and non-negative.
    pub fn is_valid(&self) -> bool {
        [self.cpus, self.mem_mb, self.disk_mb]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cpus, {} MiB memory, {} MiB disk",
            self.cpus, self.mem_mb, self.disk_mb
        )
    }
}

/// An inclusive range of TCP/UDP ports a node hands out to its tasks (`31000-31999`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port range {text:?}: expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535")]
pub struct PortRangeError {
    pub text: String,
}

impl PortRange {
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 31000,
            last: 31999,
        }
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || PortRangeError {
            text: text.to_string(),
        };
        let (a, b) = text.split_once('-').ok_or_else(err)?;
        let first: u16 = a.trim().parse().map_err(|_| err())?;
        let last: u16 = b.trim().parse().map_err(|_| err())?;
        if first == 0 || first > last {
            return Err(err());
        }
        Ok(PortRange { first, last })
    }
}

impl TryFrom<String> for PortRange {
    type Error = PortRangeError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_with_float_sums() {
        let mut used = Resources::ZERO;
        for _ in 0..10 {
            used = used.add(&Resources::new(0.1, 0.0, 0.0));
        }
        assert!(Resources::ZERO.fits_in(&Resources::new(1.0, 0.0, 0.0).saturating_sub(&used)));
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "31000-31009".parse().unwrap();
        assert_eq!(r.len(), 10);
        assert!("5-1".parse::<PortRange>().is_err());
        assert!("0-1".parse::<PortRange>().is_err());
        assert!("x".parse::<PortRange>().is_err());
    }
}
