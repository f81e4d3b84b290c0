//! The figures each fault prints: one row per fault, and the checks every row must pass.
//!
//! A row goes to stdout (`FAULT-FIGURES|...`, which `scripts/faults` collects into the README's
//! table) and, when `TORC_FAULT_FIGURES` names a file, is appended there too. `check` fails the
//! test when an acknowledged operation was lost or a task ran twice: those must be 0, always.

use std::io::Write;
use std::time::Duration;

/// What one fault did.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// What was broken, e.g. "kill -9 controller during 64 concurrent launches".
    pub fault: String,
    /// Operations the role acknowledged before or during the fault (writes, launches, points).
    pub acknowledged: u64,
    /// Acknowledged operations missing afterwards. Must be 0.
    pub lost: u64,
    /// Tasks running more than once afterwards (on one node or across nodes). Must be 0.
    pub duplicated: u64,
    /// DNS answers served after the fault that named what no longer ran there; `None` where the
    /// fault does not touch names.
    pub stale_dns: Option<u64>,
    /// From the fault's end (process restarted, partition healed, space freed) to the role
    /// answering correctly again; `None` where nothing had to recover.
    pub recovery: Option<Duration>,
}

/// Whether to run the long variants (`scripts/faults` sets `TORC_FAULTS_LONG=1`).
pub fn long() -> bool {
    std::env::var_os("TORC_FAULTS_LONG").is_some_and(|v| v != "0")
}

/// `short` in CI, `long` under `scripts/faults`.
pub fn scale(short: usize, long_: usize) -> usize {
    if long() { long_ } else { short }
}

impl Figures {
    pub fn new(fault: impl Into<String>) -> Figures {
        Figures {
            fault: fault.into(),
            ..Figures::default()
        }
    }

    /// The row as `scripts/faults` reads it.
    pub fn row(&self) -> String {
        let stale = self
            .stale_dns
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        let recovery = self
            .recovery
            .map_or_else(|| "-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
        format!(
            "FAULT-FIGURES|{}|{}|{}|{}|{}|{}",
            self.fault, self.acknowledged, self.lost, self.duplicated, stale, recovery
        )
    }

    /// Prints the row (and appends it to `$TORC_FAULT_FIGURES`), then fails the test if anything
    /// acknowledged was lost or any task ran twice.
    pub fn check(&self) {
        let row = self.row();
        println!("{row}");
        if let Some(path) = std::env::var_os("TORC_FAULT_FIGURES") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.to_string_lossy()));
            writeln!(file, "{row}").expect("appending the figures");
        }
        assert_eq!(self.lost, 0, "acknowledged operations lost: {row}");
        assert_eq!(self.duplicated, 0, "tasks duplicated: {row}");
    }
}

#[test]
fn a_row_names_every_figure() {
    let mut f = Figures::new("example");
    f.acknowledged = 64;
    f.recovery = Some(Duration::from_millis(1500));
    assert_eq!(f.row(), "FAULT-FIGURES|example|64|0|0|-|1.50 s");
}
