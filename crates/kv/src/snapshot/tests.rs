//! The bbolt writer read back by the bbolt reader: deep trees, overflow
//! pages, empty buckets, and damage found rather than followed.

use super::bbolt_read::{BoltError, BoltFile};
use super::bbolt_write::{self, BUCKET_ELEMENT, FIRST_DATA_PAGE, PAGE_SIZE, PageOut, Tree};

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A file with the buckets `buckets` (names in order), as the snapshot
/// writer lays one out: counted, then written.
fn build(buckets: &[(&[u8], Entries)]) -> Vec<u8> {
    fn body(buckets: &[(&[u8], Entries)], out: &mut PageOut<'_>) -> u64 {
        let mut roots = Vec::new();
        for (name, entries) in buckets {
            let mut t = Tree::new();
            for (k, v) in entries {
                t.push(out, 0, k, v).expect("push");
            }
            roots.push((*name, t.finish(out).expect("finish")));
        }
        let mut root = Tree::new();
        for (name, page) in roots {
            root.push(out, BUCKET_ELEMENT, name, &bbolt_write::bucket_value(page))
                .expect("push bucket");
        }
        root.finish(out).expect("finish root")
    }
    let mut counter = PageOut::counting(FIRST_DATA_PAGE);
    let root = body(buckets, &mut counter);
    let pages = counter.next_id();
    let mut file = Vec::new();
    bbolt_write::write_head(&mut file, root, pages).expect("head");
    let mut out = PageOut::writing(&mut file, FIRST_DATA_PAGE);
    assert_eq!(body(buckets, &mut out), root);
    assert_eq!(out.next_id(), pages);
    assert_eq!(file.len() as u64, pages * PAGE_SIZE as u64);
    file
}

fn read_all(bolt: &BoltFile, name: &[u8]) -> Entries {
    let bucket = bolt.bucket(name).expect("bucket").expect("present");
    let mut got = Vec::new();
    bolt.walk::<BoltError>(&bucket, &mut |_, k, v| {
        got.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .expect("walk");
    got
}

#[test]
fn what_is_written_reads_back_in_order() {
    let many: Entries = (0..30_000u32)
        .map(|i| (i.to_be_bytes().to_vec(), format!("value {i}").into_bytes()))
        .collect();
    let big: Entries = vec![
        (b"a".to_vec(), vec![1u8; 3 * PAGE_SIZE + 5]),
        (b"b".to_vec(), b"small".to_vec()),
        (b"c".to_vec(), vec![2u8; PAGE_SIZE]),
    ];
    let file = build(&[
        (b"big", big.clone()),
        (b"empty", Vec::new()),
        (b"many", many.clone()),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    std::fs::write(&path, &file).expect("write");
    let bolt = BoltFile::open(&path, file.len() as u64).expect("open");
    assert_eq!(read_all(&bolt, b"many"), many);
    assert_eq!(read_all(&bolt, b"big"), big);
    assert_eq!(read_all(&bolt, b"empty"), Vec::new());
    assert!(bolt.bucket(b"missing").expect("lookup").is_none());
}

#[test]
fn keys_out_of_order_are_refused() {
    let mut out = PageOut::counting(FIRST_DATA_PAGE);
    let mut t = Tree::new();
    t.push(&mut out, 0, b"b", b"").expect("first");
    assert!(t.push(&mut out, 0, b"a", b"").is_err());
    assert!(t.push(&mut out, 0, b"b", b"").is_err());
}

#[test]
fn damage_is_an_error_naming_the_page() {
    let many: Entries = (0..2_000u32)
        .map(|i| (i.to_be_bytes().to_vec(), vec![0u8; 40]))
        .collect();
    let file = build(&[(b"many", many)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let walk = |bytes: &[u8]| -> Result<usize, BoltError> {
        std::fs::write(&path, bytes).expect("write");
        let bolt = BoltFile::open(&path, bytes.len() as u64)?;
        let Some(bucket) = bolt.bucket(b"many")? else {
            return Ok(0);
        };
        let mut n = 0;
        bolt.walk::<BoltError>(&bucket, &mut |_, _, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    };
    assert_eq!(walk(&file).expect("intact"), 2_000);
    // Truncated: the meta page counts more pages than there are.
    let e = walk(&file[..file.len() - PAGE_SIZE]).expect_err("truncated");
    assert!(e.to_string().contains("truncated"), "{e}");
    // Both meta pages damaged.
    let mut b = file.clone();
    b[16 + 20] ^= 1;
    b[PAGE_SIZE + 16 + 20] ^= 1;
    let e = walk(&b).expect_err("metas");
    assert!(e.to_string().contains("checksum"), "{e}");
    // One damaged meta page: the other is used.
    let mut b = file.clone();
    b[16 + 20] ^= 1;
    assert_eq!(walk(&b).expect("meta 1"), 2_000);
    // Each data page's flags in turn made nonsense, and each element count made huge:
    // an error, never a panic or a wrong count taken silently.
    for page in FIRST_DATA_PAGE as usize..file.len() / PAGE_SIZE {
        let mut b = file.clone();
        b[page * PAGE_SIZE + 8] = 0x77;
        assert!(walk(&b).is_err(), "page {page} flags");
        let mut b = file.clone();
        b[page * PAGE_SIZE + 10] = 0xff;
        b[page * PAGE_SIZE + 11] = 0xff;
        assert!(walk(&b).is_err(), "page {page} count");
    }
}

/// `base`'s rows come in (revision, key) order whatever the window: one
/// pass when it holds them all, many when it holds one row.
#[test]
fn base_rows_come_by_revision_in_bounded_windows() {
    use crate::mvcc::{Core, Limits};
    use crate::proto::etcdserverpb as pb;
    use crate::proto::mvccpb::KeyValue;
    use crate::storage::Storage;
    use prost::Message;

    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, _wal, _) = Storage::open(&dir.path().join("kv.redb"), (1, 2)).expect("open");
    let mut core = Core::new(Limits::default(), 1);
    let mut pending = Vec::new();
    // Keys written in an order unlike their names', so key order is not revision order.
    for i in 0..6000u32 {
        let key = format!("k{:03}", (i * 7919) % 500);
        let out = core
            .put(&pb::PutRequest {
                key: key.into_bytes().into(),
                value: format!("v{i}").into_bytes().into(),
                ..Default::default()
            })
            .expect("put");
        pending.extend(out.mutations);
    }
    storage.commit(pending.iter(), 0, true).expect("commit");
    let out = core
        .compact(core.revision() - 10, core.revision())
        .expect("compact");
    storage
        .commit(out.mutations.iter(), 0, true)
        .expect("compact");
    // The next commit folds compacted revisions into `base`.
    let out = core
        .put(&pb::PutRequest {
            key: b"last".to_vec().into(),
            ..Default::default()
        })
        .expect("put");
    storage.commit(out.mutations.iter(), 0, true).expect("fold");

    let view = storage.reader().view().expect("view");
    let rows = |window: usize| {
        let mut got = Vec::new();
        super::base_by_revision(&view, window, &mut |&rev, value| {
            let kv = KeyValue::decode(value).expect("kv");
            assert_eq!(kv.mod_revision, rev);
            got.push((rev, kv.key.to_vec()));
            Ok(())
        })
        .expect("rows");
        got
    };
    let all = rows(usize::MAX);
    assert!(all.len() > 100, "{} rows folded", all.len());
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "in (revision, key) order"
    );
    assert_eq!(rows(1), all);
    assert_eq!(rows(300), all);
}
