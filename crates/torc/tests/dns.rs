//! `torc dns` as the rack's `dns` system service, asked with the real `dig`.

use std::process::Command;
use std::time::Duration;

use torc_test_utils::{
    DNS_SYSTEM_SERVICE, LocalRack, RackOptions, system_services, wait_for, which,
};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn dig(server: &str, args: &[&str]) -> String {
    assert!(
        which("dig").is_some(),
        "dig is not installed: run ./scripts/test (it installs it) or `apt-get install bind9-dnsutils`"
    );
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args(["+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(server: &str, args: &[&str]) -> Vec<String> {
    let mut a = args.to_vec();
    a.push("+short");
    // dig prints its own trouble (`; <<>> DiG ...`, `;; communications error ... connection
    // refused`) even with +short: that is no answer.
    let mut v: Vec<String> = (dig(server, &a).lines())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(|l| l.to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rack_answers_for_its_nodes_and_services() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: format!(
                "{}{}{}",
                "service_ttl_in_seconds: 7\ndns-addons:\n  - name: etcd\n    ip: 10.250.3.20\n",
                system_services(&[DNS_SYSTEM_SERVICE]),
                r#"      health:
        tcp: "$IP:53"
        interval_in_seconds: 1
api:
  service-groups:
    - name: web
      services:
        - name: web
          command: sleep
          args: ["600"]
          ports: 1
          memory: 8
          cpu: 0.05
          number_of_instances: 2
          dns_ttl_in_seconds: 30
"#
            ),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let server = rack.nodes["wedge"].to_string();
    let s = server.clone();
    // Its own service name is the last to appear: the node names are answered from the first
    // snapshot on, the dns service's own record only once its health check has passed.
    wait_for("dns to answer for itself", Duration::from_secs(30), || {
        let s = s.clone();
        async move { (!short(&s, &["dns.service.torc"]).is_empty()).then_some(()) }
    })
    .await
    .unwrap();

    // The node domain, its apex and its reverse zone.
    assert_eq!(
        short(&server, &["bladerunner1.homer.ave"]),
        [rack.nodes["bladerunner1"].to_string()]
    );
    assert_eq!(
        short(&server, &["WEDGE.Homer.Ave"]),
        [server.as_str()],
        "case-insensitive"
    );
    assert!(short(&server, &["homer.ave", "SOA"])[0].starts_with("ns.homer.ave."));
    assert_eq!(
        short(&server, &["-x", &rack.nodes["bladerunner2"].to_string()]),
        ["bladerunner2.homer.ave."]
    );
    let nx = dig(&server, &["nosuch.homer.ave"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("SOA"),
        "{nx}"
    );
    assert!(nx.contains(" aa"), "authoritative: {nx}");

    // The service domain: the controller, the addons, the dns service itself.
    assert_eq!(
        short(&server, &["torc-scheduler.service.torc"]),
        [server.as_str()]
    );
    assert_eq!(short(&server, &["etcd.service.torc"]), ["10.250.3.20"]);
    assert_eq!(short(&server, &["dns.service.torc"]), [server.as_str()]);
    // TTLs: the rack's default for service names, the node domain's own.
    let ttl = |name: &str| -> String {
        let out = dig(&server, &[name, "+noall", "+answer"]);
        out.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(ttl("dns.service.torc"), "7");
    assert_eq!(ttl("wedge.homer.ave"), "60");

    // A started group shows up (both instances, with SRV ports); a stopped one disappears.
    client.start_group(&"web".parse().unwrap()).await.unwrap();
    let s = server.clone();
    let a = wait_for(
        "web.service.torc to have two addresses",
        Duration::from_secs(20),
        || {
            let s = s.clone();
            async move {
                let a = short(&s, &["web.service.torc"]);
                (a.len() == 2).then_some(a)
            }
        },
    )
    .await
    .unwrap();
    let web: Vec<_> = client
        .services()
        .await
        .unwrap()
        .into_iter()
        .filter(|x| x.service.as_str() == "web")
        .collect();
    let mut ips: Vec<String> = web.iter().map(|w| w.ip.unwrap().to_string()).collect();
    ips.sort();
    assert_eq!(a, ips);
    assert_eq!(
        ttl("web.service.torc"),
        "30",
        "the service's own dns_ttl_in_seconds"
    );
    let srv = short(&server, &["_web._tcp.service.torc", "SRV"]);
    assert_eq!(srv.len(), 2, "{srv:?}");
    for w in &web {
        let line = format!("{} {}.service.torc.", w.ports[0], w.name);
        assert!(
            srv.iter().any(|l| l.ends_with(&line)),
            "{line} not in {srv:?}"
        );
    }
    client.stop_group(&"web".parse().unwrap()).await.unwrap();
    let s = server.clone();
    wait_for(
        "web.service.torc to be gone",
        Duration::from_secs(10),
        || {
            let s = s.clone();
            async move {
                dig(&s, &["web.service.torc"])
                    .contains("status: NXDOMAIN")
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Outside the rack's zones, with no upstream configured: REFUSED.
    let out = dig(&server, &["example.com"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

/// The controller numbers its name snapshots from 1 again after a restart; a DNS server that
/// served a higher generation from the controller before must still take the new controller's
/// names, at once, not after as many changes as it had seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_follow_a_restarted_controller() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            extra_yaml: system_services(&[DNS_SYSTEM_SERVICE]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let server = rack.nodes["wedge"].to_string();
    let answers = |name: &'static str| {
        let s = server.clone();
        move || {
            let s = s.clone();
            async move { (!short(&s, &[name]).is_empty()).then_some(()) }
        }
    };
    // Several name changes, so the DNS server's generation is well above 1.
    for i in 0..4 {
        let mut spec = torc_types::TaskSpec::new(format!("before{i}").parse().unwrap(), "sleep");
        spec.args = vec!["600".into()];
        client.launch(&spec).await.unwrap();
    }
    wait_for(
        "before3 in DNS",
        Duration::from_secs(30),
        answers("before3.service.torc"),
    )
    .await
    .unwrap();

    rack.kill_controller();
    rack.start_controller().unwrap();
    let names: Vec<String> = rack.nodes.keys().cloned().collect();
    rack.wait_active(&names, true).await.unwrap();
    let mut spec = torc_types::TaskSpec::new("after".parse().unwrap(), "sleep");
    spec.args = vec!["600".into()];
    client.launch(&spec).await.unwrap();
    wait_for(
        "a task started after the restart in DNS",
        Duration::from_secs(30),
        answers("after.service.torc"),
    )
    .await
    .unwrap();
}

/// `torc dns --metrics-listen`: what it answered, counted as Prometheus reads it (the real
/// `promtool` parses and lints the text), and a scrape is read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_metrics_count_what_it_answered() {
    use torc_test_utils::prom::{promtool_check, sample};
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("metrics.test.zone");
    std::fs::write(
        &zone,
        "$ORIGIN metrics.test.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n\
         @ IN NS ns\nns IN A 198.18.0.1\nwww IN A 198.18.0.2\n",
    )
    .unwrap();
    let ip = std::net::Ipv4Addr::LOCALHOST;
    let (dns_port, metrics_port) = (
        torc_test_utils::free_port(ip),
        torc_test_utils::free_port(ip),
    );
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _dns = Kill(
        Command::new(TORC)
            .args(["dns", "--threads", "1", "--listen"])
            .arg(format!("127.0.0.1:{dns_port}"))
            .arg("--zone-file")
            .arg(format!("metrics.test.={}", zone.display()))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env_remove("TORC_CONTROLLER")
            .env_remove("TORC_CONTROLLERS")
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let http = reqwest::Client::new();
    wait_for("torc dns's /metrics", Duration::from_secs(20), || async {
        http.get(&url).send().await.ok()
    })
    .await
    .unwrap();
    let port = dns_port.to_string();
    let ask = |args: &[&'static str]| -> Vec<&str> { [&["-p", port.as_str()], args].concat() };
    for _ in 0..3 {
        assert_eq!(
            short("127.0.0.1", &ask(&["www.metrics.test"])),
            ["198.18.0.2"]
        );
    }
    assert!(dig("127.0.0.1", &ask(&["nope.metrics.test"])).contains("status: NXDOMAIN"));
    assert_eq!(
        short("127.0.0.1", &ask(&["+tcp", "www.metrics.test"])),
        ["198.18.0.2"]
    );

    let response = http.get(&url).send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    promtool_check(&text).unwrap();
    for (series, want) in [
        ("torc_dns_queries_total{transport=\"udp\"}", 4.0),
        ("torc_dns_queries_total{transport=\"tcp\"}", 1.0),
        ("torc_dns_responses_total{rcode=\"NOERROR\"}", 4.0),
        ("torc_dns_responses_total{rcode=\"NXDOMAIN\"}", 1.0),
        ("torc_dns_responses_total{rcode=\"REFUSED\"}", 0.0),
        // The first UDP question is looked up, the next two come from the cache.
        ("torc_dns_cache_hits_total", 2.0),
        (
            "torc_dns_rrl_limited_responses_total{action=\"dropped\"}",
            0.0,
        ),
        ("torc_dns_snapshot_generation", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(
        sample(&text, "process_resident_memory_bytes") > Some(0.0),
        "{text}"
    );
    // Read-only: another method is refused, and scraping again counts no query.
    let post = http.post(&url).send().await.unwrap();
    assert_eq!(post.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    let again = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        sample(&again, "torc_dns_queries_total{transport=\"udp\"}"),
        Some(4.0)
    );
}
