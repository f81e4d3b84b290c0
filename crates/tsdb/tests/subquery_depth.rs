//! Subqueries nest as deep as the parser allows (`MAX_NESTING`) without exhausting a server
//! thread's stack; deeper is a parse error, not a crash.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_subqueries_run_or_are_refused() {
    let torc = common::TorcServer::start().await;
    common::query(&torc.url(), "", "CREATE DATABASE d").await;
    let (s, b) = common::write(&torc.url(), "d", "s", "m v=1 1").await;
    assert_eq!(s, 204, "{b}");
    for n in [1usize, 50, 99] {
        let q = format!(
            "SELECT mean(v) FROM {}m{}",
            "(SELECT v FROM ".repeat(n),
            ")".repeat(n)
        );
        let (s, b) = common::query(&torc.url(), "d", &q).await;
        assert_eq!(s, 200, "{n}: {b}");
        assert!(
            b.contains(r#""values":[["1970-01-01T00:00:00Z",1]]"#),
            "{n}: {b}"
        );
    }
    let q = format!(
        "SELECT mean(v) FROM {}m{}",
        "(SELECT v FROM ".repeat(300),
        ")".repeat(300)
    );
    let (s, b) = common::query(&torc.url(), "d", &q).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("nested too deeply"), "{b}");
    torc.stop().await;
}
