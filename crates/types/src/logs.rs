//! How much of a task's output its node keeps: a cap on each of its output files (`stdout`,
//! `stderr`) and how many rotated files (`stdout.1` ... `stdout.N`) stay besides the current
//! one. The rack config sets the rack's defaults (`logs:`), a service may override either key
//! (`logs:` in the service), and the agent applies the result (see the agent's `logfiles`).
//!
//! A size is written as a number of bytes or with a binary unit (`10MiB`, `512KiB`, `1GiB`);
//! a value outside the bounds is refused naming the key and the bound, wherever it is read
//! (the rack config, a task spec sent to the API).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The smallest cap of an output file: a smaller one would rotate on almost every line.
pub const MIN_LOG_BYTES: u64 = 4 << 10;
/// The largest cap of an output file.
pub const MAX_LOG_BYTES: u64 = 1 << 40;
/// The most rotated files kept per output file.
pub const MAX_LOG_FILES: u32 = 100;
/// The built-in cap of an output file when neither the rack nor the service sets one.
pub const DEFAULT_LOG_BYTES: u64 = 10 << 20;
/// The built-in number of rotated files.
pub const DEFAULT_LOG_FILES: u32 = 3;

/// How many ended tasks' sandboxes a node keeps per service when the rack sets nothing.
pub const DEFAULT_KEEP_ENDED_PER_SERVICE: u32 = 5;
/// How long a node keeps an ended task's sandbox when the rack sets nothing: a week.
pub const DEFAULT_KEEP_ENDED_FOR_SECS: u64 = 7 * 24 * 3600;
/// Below this share of free space (percent) a node warns when the rack sets nothing.
pub const DEFAULT_DISK_FREE_WARNING_PERCENT: u8 = 10;

/// A number of bytes, read as an integer or as text with a binary unit (`10MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

/// Why a size or a log limit is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogLimitError {
    #[error(
        "{text:?} is not a size: write a number of bytes, or one with a unit (B, KiB, MiB, GiB, TiB; e.g. 10MiB)"
    )]
    BadSize { text: String },
    #[error(
        "max_bytes must be between {} and {}, got {got}",
        ByteSize(MIN_LOG_BYTES),
        ByteSize(MAX_LOG_BYTES)
    )]
    MaxBytes { got: ByteSize },
    #[error("files must be at most {MAX_LOG_FILES}, got {got}")]
    Files { got: u32 },
}

impl std::str::FromStr for ByteSize {
    type Err = LogLimitError;

    fn from_str(text: &str) -> Result<ByteSize, LogLimitError> {
        let bad = || LogLimitError::BadSize {
            text: text.to_string(),
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KiB" | "k" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            _ => return Err(bad()),
        };
        n.checked_mul(1 << shift).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    /// In the largest binary unit that divides it (`10MiB`), else in bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A task's own output limits (a service's `logs:`): what it leaves out is the rack's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLogLimits")]
pub struct LogLimits {
    /// The cap of each output file, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// How many rotated files stay besides the current one (0: the current one only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogLimits {
    #[serde(default)]
    max_bytes: Option<ByteSize>,
    #[serde(default)]
    files: Option<u32>,
}

impl TryFrom<RawLogLimits> for LogLimits {
    type Error = LogLimitError;

    fn try_from(raw: RawLogLimits) -> Result<LogLimits, LogLimitError> {
        if let Some(size) = raw.max_bytes {
            check_max_bytes(size)?;
        }
        if let Some(files) = raw.files {
            check_files(files)?;
        }
        Ok(LogLimits {
            max_bytes: raw.max_bytes.map(|b| b.0),
            files: raw.files,
        })
    }
}

/// Refuses a cap outside [`MIN_LOG_BYTES`]..=[`MAX_LOG_BYTES`].
pub fn check_max_bytes(size: ByteSize) -> Result<(), LogLimitError> {
    if (MIN_LOG_BYTES..=MAX_LOG_BYTES).contains(&size.0) {
        Ok(())
    } else {
        Err(LogLimitError::MaxBytes { got: size })
    }
}

/// Refuses more than [`MAX_LOG_FILES`] rotated files.
pub fn check_files(files: u32) -> Result<(), LogLimitError> {
    if files <= MAX_LOG_FILES {
        Ok(())
    } else {
        Err(LogLimitError::Files { got: files })
    }
}

/// The limits a task's output is kept under: every key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogCap {
    pub max_bytes: u64,
    pub files: u32,
}

impl Default for LogCap {
    fn default() -> LogCap {
        LogCap {
            max_bytes: DEFAULT_LOG_BYTES,
            files: DEFAULT_LOG_FILES,
        }
    }
}

impl LogCap {
    /// These limits with what `own` sets over them.
    pub fn with(self, own: Option<&LogLimits>) -> LogCap {
        let own = own.copied().unwrap_or_default();
        LogCap {
            max_bytes: own.max_bytes.unwrap_or(self.max_bytes),
            files: own.files.unwrap_or(self.files),
        }
    }

    /// The most bytes one output file takes on disk with its rotated files.
    pub fn most_bytes(&self) -> u64 {
        self.max_bytes.saturating_mul(u64::from(self.files) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_units_and_print_back() {
        for (text, bytes) in [
            ("4096", 4096),
            ("10MiB", 10 << 20),
            ("512KiB", 512 << 10),
            (" 1 GiB ", 1 << 30),
            ("7B", 7),
            ("2T", 2 << 40),
        ] {
            assert_eq!(text.parse::<ByteSize>().unwrap(), ByteSize(bytes), "{text}");
        }
        assert_eq!(ByteSize(10 << 20).to_string(), "10MiB");
        assert_eq!(ByteSize(4097).to_string(), "4097B");
        for bad in ["", "MiB", "10 MB", "-1", "1.5MiB", "99999999999999999999"] {
            let e = bad.parse::<ByteSize>().unwrap_err();
            assert!(e.to_string().contains("is not a size"), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_are_checked_when_read_and_merged_over_the_racks() {
        let own: LogLimits = serde_json::from_str(r#"{"max_bytes":"1MiB"}"#).unwrap();
        assert_eq!(own.max_bytes, Some(1 << 20));
        let cap = LogCap::default().with(Some(&own));
        assert_eq!(
            cap,
            LogCap {
                max_bytes: 1 << 20,
                files: DEFAULT_LOG_FILES
            }
        );
        assert_eq!(cap.most_bytes(), 4 << 20);
        assert_eq!(LogCap::default().with(None), LogCap::default());

        let small = serde_json::from_str::<LogLimits>(r#"{"max_bytes":100}"#).unwrap_err();
        assert!(
            small
                .to_string()
                .contains("max_bytes must be between 4KiB and 1TiB, got 100B"),
            "{small}"
        );
        let many = serde_json::from_str::<LogLimits>(r#"{"files":1000}"#).unwrap_err();
        assert!(
            many.to_string()
                .contains("files must be at most 100, got 1000"),
            "{many}"
        );
        let unknown = serde_json::from_str::<LogLimits>(r#"{"max_size":1}"#).unwrap_err();
        assert!(unknown.to_string().contains("max_size"), "{unknown}");
        // Written back as plain numbers.
        assert_eq!(
            serde_json::to_string(&own).unwrap(),
            r#"{"max_bytes":1048576}"#
        );
    }
}
