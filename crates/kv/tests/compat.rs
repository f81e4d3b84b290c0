//! Compatibility: the same etcdctl sessions against a real etcd 3.4 and
//! against torc kv must give the same output. The case files' expected text
//! is what etcd prints, so running them against both compares the two.

mod common;

use common::{Etcd, TorcKv, WATCH_EXPECTED, case_files, run_case, watch_session};

#[test]
fn case_files_match_real_etcd() {
    let mut failures = Vec::new();
    for (name, text) in case_files() {
        let etcd = Etcd::start();
        failures.extend(run_case(&name, &text, &etcd.endpoint));
    }
    assert!(
        failures.is_empty(),
        "etcd disagrees with the case files:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn watch_sessions_match() {
    let etcd = Etcd::start();
    let torc = TorcKv::start();
    let from_etcd = watch_session(&etcd.endpoint);
    let from_torc = watch_session(&torc.endpoint);
    assert_eq!(from_torc, from_etcd);
    assert_eq!(&from_etcd[..WATCH_EXPECTED.len()], WATCH_EXPECTED);
}
