//! Backups and restores in the library (the processes and the CLI are tested in
//! `crates/torc/tests/tsdb_backup.rs`): a backup holds points in segments and in heads and no
//! deleted point; a restore into the store where the database was deleted and dropped after the
//! backup survives a crash (the WAL's records of the old database are not replayed over it);
//! a segment damaged behind a right record checksum is refused by the segment's own checks, and
//! nothing is left staged; an existing database is refused before the data is read.

use std::sync::Arc;

use torc_tsdb::exec::Val;
use torc_tsdb::restore::{RestoreError, Selection};
use torc_tsdb::{Options, Tsdb};

fn opts() -> Options {
    Options {
        // Small heads: the data is in several segments and a head.
        flush_values: 500,
        ..Default::default()
    }
}

async fn write(db: &Tsdb, from: i64, to: i64) {
    let body: String = (from..to)
        .map(|i| format!("m,h=h{} v={i}i {i}\n", i % 3))
        .collect();
    let pts =
        torc_tsdb::lineproto::parse(body.as_bytes(), torc_tsdb::lineproto::Precision::Nanos, 0)
            .points;
    db.write("d", None, pts).await.unwrap();
    if db.take_flush_request() {
        db.flush().await.unwrap();
    }
}

async fn run(db: &Tsdb, q: &str) -> Vec<Vec<Val>> {
    let stmts = torc_tsdb::influxql::parse_query(q).unwrap();
    let mut r = torc_tsdb::exec::execute(db, &stmts, Some("d")).await;
    let r = r.remove(0);
    assert!(r.error.is_none(), "{q}: {:?}", r.error);
    r.series.into_iter().flat_map(|s| s.values).collect()
}

/// count(v) and sum(v) of database d.
async fn count_sum(db: &Tsdb) -> (i64, i64) {
    let rows = run(db, "SELECT count(v), sum(v) FROM m").await;
    match rows.first().map(|r| (&r[1], &r[2])) {
        Some((Val::Int(c), Val::Int(s))) => (*c, *s),
        None => (0, 0),
        other => panic!("{other:?}"),
    }
}

/// The backup's bytes, as `POST /torc/backup` streams them.
async fn backup(db: &Tsdb, only: Option<&str>) -> Vec<u8> {
    let mut rx = torc_tsdb::backup::stream(db, only).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_over_a_dropped_database_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open(dir.path(), opts()).unwrap());
    db.create_database("d").unwrap();
    write(&db, 0, 2_000).await;
    run(&db, "DELETE FROM m WHERE time < 100").await;
    write(&db, 2_000, 2_300).await; // some of it stays in the head
    let expected = count_sum(&db).await;
    assert_eq!(expected, (2_200, (100..2_300).sum::<i64>()));
    let file = backup(&db, Some("d")).await;

    // After the backup: more writes, a deletion of everything, then the database dropped. Their
    // WAL records must not touch the restored database, before or after a crash.
    write(&db, 5_000, 5_100).await;
    run(&db, "DELETE FROM m").await;
    db.drop_database("d").await.unwrap();
    let restored = torc_tsdb::restore::restore(
        db.clone(),
        std::io::Cursor::new(file.clone()),
        Selection::default(),
    )
    .await
    .unwrap();
    assert_eq!(restored[0].values, 2_200);
    assert_eq!(count_sum(&db).await, expected);
    // A crash: the store goes without a flush; open replays the WAL.
    drop(db);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(count_sum(&db).await, expected);
    assert!(!dir.path().join("restore").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_is_refused_and_nothing_stays_staged() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open(dir.path(), opts()).unwrap());
    db.create_database("d").unwrap();
    write(&db, 0, 1_000).await;
    let mut file = backup(&db, None).await;
    // A byte inside the first segment's bytes, with its record's checksum made right again:
    // the segment's own checks refuse it.
    let start = file
        .windows(8)
        .position(|w| w == torc_tsdb::segment::SEG_MAGIC)
        .unwrap();
    file[start + 40] ^= 1;
    let mut at = 24; // the header
    loop {
        let len = u64::from_le_bytes(file[at + 1..at + 9].try_into().unwrap()) as usize;
        let (p, end) = (at + 13, at + 13 + len);
        if (p..end).contains(&start) {
            let crc = crc32fast::hash(&file[p..end]);
            file[end..end + 4].copy_from_slice(&crc.to_le_bytes());
            break;
        }
        at = end + 4;
    }
    let into = tempfile::tempdir().unwrap();
    let other = Arc::new(Tsdb::open(into.path(), opts()).unwrap());
    let e = torc_tsdb::restore::restore(
        other.clone(),
        std::io::Cursor::new(file.clone()),
        Selection::default(),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("the backup is damaged: record 2 at byte ")
            && text.contains(": segment 1 of d.autogen: corrupt data in"),
        "{text}"
    );
    assert!(other.databases().is_empty());
    assert!(!into.path().join("restore").exists());
    // Restoring d where d exists is refused before its data is read.
    let good = backup(&db, Some("d")).await;
    let e = torc_tsdb::restore::restore(
        db.clone(),
        std::io::Cursor::new(good.clone()),
        Selection::default(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("database \"d\" exists"), "{e}");
    let e = torc_tsdb::restore::restore(
        db.clone(),
        std::io::Cursor::new(good.clone()),
        Selection {
            db: None,
            newdb: Some("x".into()),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RestoreError::NewDbWithoutDb), "{e}");
}
