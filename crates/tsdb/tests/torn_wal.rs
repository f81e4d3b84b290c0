//! The WAL's torn tails as crashes leave them (issue 19, bug 4): a start killed before it
//! replayed the log, and tails the file system left zero-filled. Every acknowledged point is
//! still there after the next open; damage that is not a torn tail still refuses to open, naming
//! the file and the offset.

use std::path::{Path, PathBuf};

use torc_tsdb::Tsdb;
use torc_tsdb::lineproto::{Precision, parse};

/// Points written (and acknowledged) before the crash.
const POINTS: usize = 20;

/// A directory whose newest WAL file holds `POINTS` acknowledged points, one record each; the
/// store was dropped, not flushed, so the records are only in the WAL.
async fn written() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Tsdb::open(dir.path(), Default::default()).expect("open");
    db.create_database("d").expect("create database");
    for i in 0..POINTS {
        let line = format!("m v={i} {}", i + 1);
        let pts = parse(line.as_bytes(), Precision::Seconds, 0).points;
        db.write("d", None, pts).await.expect("write");
    }
    drop(db);
    let newest = wal_files(dir.path()).pop().expect("a wal file");
    (dir, newest)
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// The WAL file after `path` in sequence.
fn next_wal(path: &Path) -> PathBuf {
    let seq: u64 = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("wal file name");
    path.with_file_name(format!("{:020}.wal", seq + 1))
}

fn append(path: &Path, bytes: &[u8]) {
    let mut b = std::fs::read(path).expect("read wal");
    b.extend_from_slice(bytes);
    std::fs::write(path, b).expect("write wal");
}

async fn count(db: &Tsdb) -> u64 {
    let stmts = torc_tsdb::influxql::parse_query("SELECT count(v) FROM m").expect("parse");
    let r = torc_tsdb::exec::execute(db, &stmts, Some("d")).await;
    let json = torc_tsdb::json::results_json(&r, torc_tsdb::json::Epoch::parse(None));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {json}"))
}

async fn opens_with_every_point(dir: &Path) {
    let db = Tsdb::open(dir, Default::default())
        .unwrap_or_else(|e| panic!("the store refused to open: {e}"));
    assert_eq!(count(&db).await, POINTS as u64, "acknowledged points lost");
}

/// A torn record at the tail of the newest file with records, then the next file as a start
/// killed before (or during) its replay left it: with its header only, cut short, or empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_killed_before_replay_leaves_a_log_that_opens() {
    for next in [&b"TSDBWAL\0\x02\0\0\0"[..], b"TSDBW", b""] {
        let (dir, newest) = written().await;
        append(&newest, &[40, 0, 0, 0, 1, 2, 3]);
        std::fs::write(next_wal(&newest), next).expect("next wal");
        opens_with_every_point(dir.path()).await;
        // And once more: the open above must have left a log that opens again.
        opens_with_every_point(dir.path()).await;
    }
}

/// Tails a file system leaves zero-filled (the size reached the disk, the data did not):
/// zeroes alone, zeroes after a record header, and a whole block of them. They parse as
/// records of length 0 with checksum 0 (crc32 of nothing), which are no records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_filled_tail_is_a_torn_tail() {
    let mut header_then_zeroes = vec![0u8; 4096];
    header_then_zeroes[..8].copy_from_slice(&[30, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    for tail in [vec![0u8; 8], vec![0u8; 4096], header_then_zeroes] {
        let (dir, newest) = written().await;
        append(&newest, &tail);
        opens_with_every_point(dir.path()).await;
    }
    // The same tail in the newest file while a killed start left an empty next file.
    let (dir, newest) = written().await;
    append(&newest, &[0u8; 100]);
    std::fs::write(next_wal(&newest), b"TSDBWAL\0\x02\0\0\0").expect("next wal");
    opens_with_every_point(dir.path()).await;
}

/// Zeroes followed by anything else are damage, not a torn tail: refused, naming the file and
/// the offset. So is a torn record in a file followed by one that holds records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_the_tail_still_refuses_naming_file_and_offset() {
    let (dir, newest) = written().await;
    let at = std::fs::metadata(&newest).expect("stat").len();
    let mut tail = vec![0u8; 64];
    tail.push(1);
    append(&newest, &tail);
    let e = Tsdb::open(dir.path(), Default::default())
        .expect_err("zeroes then data must refuse")
        .to_string();
    assert!(e.contains(&newest.display().to_string()), "{e}");
    assert!(e.contains(&format!("offset {at}")), "{e}");

    let (dir, newest) = written().await;
    let at = std::fs::metadata(&newest).expect("stat").len();
    append(&newest, &[40, 0, 0, 0, 1, 2, 3]);
    let next = next_wal(&newest);
    // A copy of a whole file: it holds records, so the torn one before it is damage.
    let mut records = std::fs::read(&newest).expect("read");
    records.truncate(at as usize);
    std::fs::write(&next, records).expect("next wal");
    let e = Tsdb::open(dir.path(), Default::default())
        .expect_err("a torn record before a file with records must refuse")
        .to_string();
    assert!(e.contains(&newest.display().to_string()), "{e}");
    assert!(e.contains(&format!("offset {at}")), "{e}");
}
