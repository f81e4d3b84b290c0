//! A query whose expression is a long chain of binary operators (issue 14: hundreds of
//! thousands of terms, well under the body limit, overflowed the stack and killed the server)
//! is refused with a parse error naming the limit; a chain at the limit runs, in the fields,
//! the condition and inside nested subqueries, on a server thread's stack. The server answers
//! normally afterwards.

mod common;

use torc_tsdb::influxql::MAX_EXPR_DEPTH;

/// `v <op> v <op> ... v` with `terms` terms.
fn chain(terms: usize, op: &str) -> String {
    vec!["v"; terms].join(op)
}

async fn setup() -> common::TorcServer {
    let torc = common::TorcServer::start().await;
    let (s, b) = common::query(&torc.url(), "", "CREATE DATABASE d").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = common::write(&torc.url(), "d", "s", "m,h=a v=1 1\nm,h=b v=0 2").await;
    assert_eq!(s, 204, "{b}");
    torc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_chains_are_refused_not_a_crash() {
    let torc = setup().await;
    // ~2.4 MB of query: far under the 25 MB body limit.
    for q in [
        format!("SELECT {} FROM m", chain(300_000, " + ")),
        format!(
            "SELECT v FROM m WHERE {}",
            chain(300_000, " = 1 OR ") + " = 1"
        ),
        format!("SELECT v FROM m WHERE v > {}", chain(300_000, " * ")),
    ] {
        let (s, b) = common::query_form(&torc.url(), "d", &q).await;
        assert_eq!(s, 400, "{}", &b[..b.len().min(300)]);
        assert!(
            b.contains(&format!(
                "expression too deep: more than {MAX_EXPR_DEPTH} nested operators"
            )),
            "{}",
            &b[..b.len().min(300)]
        );
    }
    // Still serving.
    let (s, b) = common::query(&torc.url(), "d", "SELECT count(v) FROM m").await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains(r#"[0,2]"#) || b.contains(",2]"), "{b}");
    torc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_at_the_limit_run() {
    let torc = setup().await;
    // `n` terms and `n - 1` operators: the deepest tree allowed.
    let n = MAX_EXPR_DEPTH;
    let sum = chain(n, " + ");
    // `v = 1` is two levels, so `n - 1` of them under `n - 2` ORs.
    let ors = chain(n - 1, " = 1 OR ") + " = 1";
    let cases = [
        (
            format!("SELECT {sum} FROM m WHERE h = 'a'"),
            format!(",{n}]"),
        ),
        (
            format!("SELECT v FROM m WHERE {ors}"),
            "\"1970-01-01T00:00:01Z\",1]".to_string(),
        ),
        // The deepest expression inside the deepest subquery nesting.
        (
            format!(
                "SELECT sum(x) FROM {}(SELECT {sum} AS x FROM m WHERE {ors}){}",
                "(SELECT x FROM ".repeat(95),
                ")".repeat(95)
            ),
            format!(",{n}]"),
        ),
    ];
    for (q, want) in cases {
        let (s, b) = common::query_form(&torc.url(), "d", &q).await;
        assert_eq!(s, 200, "{}", &b[..b.len().min(300)]);
        assert!(b.contains(&want), "{want} not in {b}");
    }
    // One more operator is refused.
    let q = format!("SELECT {} FROM m", chain(n + 1, " + "));
    let (s, b) = common::query_form(&torc.url(), "d", &q).await;
    assert_eq!(s, 400, "{b}");
    torc.stop().await;
}
