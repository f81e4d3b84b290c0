//! The seed's InfluxDB 0.8 queries, as written, against data in the datacollector's shape
//! (reference §2.6: series machine/network/stats, `time` in seconds). With authentication
//! enabled, the 0.8 endpoints check `u`/`p` and `Authorization` as 0.8 did (see `v08.rs`).

mod common;

use serde_json::{Value, json};

async fn post_json(url: &str, body: Value) -> (u16, String) {
    let r = common::client().post(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn q08(base: &str, q: &str, extra: &[(&str, &str)]) -> Value {
    let mut params = vec![("u", "root"), ("p", "root"), ("q", q)];
    params.extend_from_slice(extra);
    let r = common::client()
        .get(format!("{base}/db/torc/series"))
        .query(&params)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{q}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_queries_work_as_written() {
    let srv = common::TorcServer::start().await;
    let base = srv.url();
    let (s, _) = post_json(&format!("{base}/db?u=root&p=root"), json!({"name": "torc"})).await;
    assert_eq!(s, 201);
    // Second create is an error that the datacollector only logs.
    let (s, _) = post_json(&format!("{base}/db?u=root&p=root"), json!({"name": "torc"})).await;
    assert_eq!(s, 409);
    let t0 = 1_470_000_000i64;
    let mut machine = Vec::new();
    let mut network = Vec::new();
    let mut stats = Vec::new();
    for i in 0..20i64 {
        let t = t0 + i * 5;
        for host in ["bladerunner1", "slave2"] {
            machine.push(json!([t, host, 1_000_000 + i, 12, 3.5]));
            for iface in ["p2p2", "eth0"] {
                network.push(json!([t, host, 20_000 + i, 31_000 + i, iface, 0, 0]));
            }
            for c in ["dns-sl1", "dns-sl2", "web-1"] {
                stats.push(json!([t, 5000 + i, host, c, 1.5, 2]));
            }
        }
    }
    let body = json!([
        {"name": "machine", "columns": ["time","hostname","memory_usage","cpu_usage_system","cpu_usage_user"], "points": machine},
        {"name": "network", "columns": ["time","hostname","network_in_bytes","network_out_bytes","interface_name","network_in_drops","network_out_drops"], "points": network},
        {"name": "stats", "columns": ["time","memory_usage","hostname","container_name","cpu_usage_user","cpu_usage_system"], "points": stats},
    ]);
    let (s, b) = post_json(
        &format!("{base}/db/torc/series?u=root&p=root&time_precision=s"),
        body,
    )
    .await;
    assert_eq!(s, 200, "{b}");

    let v = q08(&base, "list series", &[]).await;
    assert_eq!(
        v,
        json!([{"name":"list_series_result","columns":["time","name"],"points":[[0,"machine"],[0,"network"],[0,"stats"]]}])
    );

    let v = q08(
        &base,
        "select * from machine where hostname = 'bladerunner1' limit 1000",
        &[],
    )
    .await;
    let obj = &v[0];
    assert_eq!(obj["name"], "machine");
    assert_eq!(
        obj["columns"],
        json!([
            "time",
            "sequence_number",
            "cpu_usage_system",
            "cpu_usage_user",
            "hostname",
            "memory_usage"
        ])
    );
    let pts = obj["points"].as_array().unwrap();
    assert_eq!(pts.len(), 20);
    // Newest first, milliseconds.
    assert_eq!(pts[0][0], json!((t0 + 95) * 1000));
    assert_eq!(pts[19][0], json!(t0 * 1000));
    assert_eq!(pts[0][4], "bladerunner1");

    let v = q08(&base, "select * from network where hostname = 'bladerunner1' and interface_name = 'p2p2' limit 1000", &[]).await;
    assert_eq!(v[0]["points"].as_array().unwrap().len(), 20);

    let v = q08(
        &base,
        "select network_in_bytes,network_out_bytes from network where interface_name ='p2p2' AND hostname='bladerunner1' limit 5",
        &[],
    )
    .await;
    assert_eq!(
        v[0]["columns"],
        json!([
            "time",
            "sequence_number",
            "network_in_bytes",
            "network_out_bytes"
        ])
    );
    let pts = v[0]["points"].as_array().unwrap();
    assert_eq!(pts.len(), 5);
    assert_eq!(pts[0][2], json!(20_019));
    assert_eq!(pts[0][3], json!(31_019));

    let v = q08(
        &base,
        "select * from stats where hostname = 'slave2' and container_name =~ /dns-sl*/",
        &[("time_precision", "s")],
    )
    .await;
    let pts = v[0]["points"].as_array().unwrap();
    assert_eq!(pts.len(), 40, "two dns containers x 20 samples");
    assert_eq!(pts[0][0], json!(t0 + 95));
    let cols = v[0]["columns"].as_array().unwrap();
    let ci = cols.iter().position(|c| c == "container_name").unwrap();
    assert!(
        pts.iter()
            .all(|p| p[ci].as_str().unwrap().starts_with("dns-sl"))
    );

    // The same data over 1.x.
    let (s, b) = common::query(
        &base,
        "torc",
        "SELECT count(memory_usage) FROM machine WHERE hostname = 'slave2'",
    )
    .await;
    assert_eq!(s, 200);
    assert!(b.contains("[\"1970-01-01T00:00:00Z\",20]"), "{b}");

    // Bad 0.8 input: error, server keeps serving.
    let r = common::client()
        .post(format!("{base}/db/torc/series"))
        .body("[{]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = common::client()
        .get(format!("{base}/db/nope/series?q=list%20series"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = common::client()
        .get(format!("{base}/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    srv.stop().await;
}

/// A 0.8 request: status, `Content-Type`, `WWW-Authenticate`, body.
async fn req08(
    method: reqwest::Method,
    url: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, String, String, String) {
    let mut r = common::client().request(method, url);
    if let Some(a) = auth {
        r = r.header("Authorization", a);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (ct, www) = (h("content-type"), h("www-authenticate"));
    (r.status().as_u16(), ct, www, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_as_08_did() {
    use reqwest::Method;
    let srv = common::TorcServer::start_with_auth().await;
    let base = srv.url();
    let admin = "u=root&p=rpw";
    for q in [
        "CREATE USER root WITH PASSWORD 'rpw' WITH ALL PRIVILEGES",
        "CREATE DATABASE d",
        "CREATE USER reader WITH PASSWORD 'r'",
        "CREATE USER writer WITH PASSWORD 'w'",
        "CREATE USER other WITH PASSWORD 'o'",
        "GRANT READ ON d TO reader",
        "GRANT WRITE ON d TO writer",
    ] {
        let r = common::client()
            .post(format!("{base}/query?{admin}"))
            .query(&[("q", q)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{q}");
    }
    let series = |who: &str| format!("{base}/db/d/series?{who}&q=select+*+from+cpu");
    let point = json!([{"name": "cpu", "columns": ["time", "v"], "points": [[1, 2]]}]);
    let unauthorized = |msg: &str| {
        (
            401,
            "text/plain".to_string(),
            "Basic realm=\"influxdb\"".to_string(),
            msg.to_string(),
        )
    };
    // No credentials, wrong ones, malformed headers.
    let none = "Invalid database/username/password";
    let bad = "Invalid username/password";
    assert_eq!(
        req08(Method::GET, &series(""), None, None).await,
        unauthorized(none)
    );
    assert_eq!(
        req08(Method::GET, &series("u=root&p=bad"), None, None).await,
        unauthorized(bad)
    );
    assert_eq!(
        req08(Method::GET, &series("u=nobody&p=x"), None, None).await,
        unauthorized(bad)
    );
    for (header, msg) in [
        ("Basic", "Bad auth header"),
        ("Basic !!", "Bad encoding"),
        ("Basic YTpiOmM=", "Bad auth value"),
    ] {
        let (s, _, _, b) = req08(Method::GET, &series(""), Some(header), None).await;
        assert_eq!((s, b.as_str()), (400, msg), "{header}");
    }
    // The admin (0.8's cluster admin), also through Basic auth ("root:rpw").
    let (s, _, _, b) = req08(Method::GET, &format!("{base}/db?{admin}"), None, None).await;
    assert_eq!((s, b.as_str()), (200, r#"[{"name":"d"}]"#));
    let (s, ..) = req08(Method::GET, &series(""), Some("Basic cm9vdDpycHc="), None).await;
    assert_eq!(s, 200);
    // Others are not cluster admins.
    assert_eq!(
        req08(Method::GET, &format!("{base}/db?u=reader&p=r"), None, None).await,
        unauthorized(bad)
    );
    assert_eq!(
        req08(
            Method::POST,
            &format!("{base}/db?u=reader&p=r"),
            None,
            Some(json!({"name": "x"}))
        )
        .await,
        unauthorized(bad)
    );
    // A user without a privilege on the database is not one of its users.
    assert_eq!(
        req08(Method::GET, &series("u=other&p=o"), None, None).await,
        unauthorized(bad)
    );
    // READ may read, not write; WRITE may write, not read.
    let w = |who: &str| format!("{base}/db/d/series?{who}");
    let (s, _, _, b) = req08(Method::POST, &w("u=reader&p=r"), None, Some(point.clone())).await;
    assert_eq!(
        (s, b.as_str()),
        (403, "User reader doesn't have write permissions for cpu")
    );
    let (s, _, _, b) = req08(Method::POST, &w("u=writer&p=w"), None, Some(point.clone())).await;
    assert_eq!((s, b.as_str()), (200, ""));
    let (s, _, _, b) = req08(Method::GET, &series("u=writer&p=w"), None, None).await;
    assert_eq!(
        (s, b.as_str()),
        (403, "User doesn't have read access to cpu")
    );
    let (s, _, _, b) = req08(Method::GET, &series("u=reader&p=r"), None, None).await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v[0]["points"][0][2], json!(2));
    // A reader cannot reach another database through a qualified name.
    let q = format!("{base}/db/d/series?u=reader&p=r&q=select+*+from+other..cpu");
    let (s, _, _, b) = req08(Method::GET, &q, None, None).await;
    assert_eq!(
        (s, b.as_str()),
        (403, "User doesn't have read access to cpu")
    );
    srv.stop().await;
}
