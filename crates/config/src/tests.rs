//! Behaviour of the public API. Config files that must fail or pass live under
//! `tests/data/` and are checked by `tests/configs.rs`.

use std::net::{IpAddr, Ipv4Addr};

use torc_types::{Constraints, Resources, TaskNetwork, TaskSpec};

use super::*;

const NODES: &str = "\
nodes:
  - name: wedge
    ip: 127.0.3.20
    type: master
    function: controller
  - name: bladerunner1
    ip: 127.0.3.21
    type: slave
";

fn parse(text: &str) -> Result<RackConfig, ConfigError> {
    RackConfig::parse(text, "t.yaml")
}

fn parse_ok(text: &str) -> RackConfig {
    parse(text).unwrap_or_else(|err| panic!("{err}"))
}

fn with_service(service: &str) -> String {
    format!("{NODES}healthcheck:\n  system_services:\n{service}")
}

fn master_ip(ip: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("MASTER_IP".to_string(), ip.to_string())])
}

#[test]
fn defaults() {
    let config = parse_ok(NODES);
    assert_eq!(config.name, "torc-scheduler");
    assert_eq!(config.domain, "homer.ave");
    assert_eq!(config.service_domain, "service.torc");
    assert!(!config.open_join);
    assert_eq!(config.ipmiproxy, None);
    assert_eq!(config.network_agent, None);
    assert!(config.dns_addons.is_empty());
    assert_eq!(config.statesync, StateSyncConfig::default());
    assert_eq!(config.statesync.poll_interval_in_seconds, 5);
    let clean = &config.stateclean;
    assert_eq!(
        (
            clean.poll_interval_in_seconds,
            clean.timeout_in_seconds,
            clean.restart_delay_in_seconds,
            clean.max_restart_delay_in_seconds
        ),
        (18, 30, 30, 300)
    );
    assert_eq!(config.healthcheck.poll_interval_in_seconds, 12);
    assert!(config.healthcheck.system_services.is_empty());
    assert!(config.api.service_groups.is_empty());

    let wedge = config.node("wedge").expect("wedge");
    assert_eq!(wedge.ip, IpAddr::V4(Ipv4Addr::new(127, 0, 3, 20)));
    assert_eq!(wedge.node_type, NodeType::Master);
    assert_eq!(wedge.function.as_deref(), Some("controller"));
    assert_eq!(wedge.port, 0);
    assert_eq!(
        config.node("bladerunner1").map(|n| n.node_type),
        Some(NodeType::Slave)
    );
    assert!(config.node("bladerunner9").is_none());
}

#[test]
fn service_defaults_follow_the_original() {
    let config = parse_ok(&with_service("    - name: dns\n      image_name: dns\n"));
    let dns = &config.healthcheck.system_services[0];
    assert_eq!(dns.memory, 128.0);
    assert_eq!(dns.cpu, 0.2);
    assert_eq!(dns.disk, 0.0);
    assert_eq!(dns.network_type, "host");
    assert_eq!(dns.number_of_instances, 1);
    assert_eq!(dns.sla, None);
    assert!(!dns.privileged && !dns.is_job && !dns.is_metered);
    // Only an image: a container that runs the image's entrypoint, not a process.
    assert_eq!(dns.process_command(), None);
    let spec = dns.to_task_spec().expect("a container spec");
    assert_eq!(spec.command, "");
    let container = spec.container.expect("container");
    assert_eq!(container.image.as_str(), "docker.io/library/dns:latest");
    assert!(container.volumes.is_empty() && container.options.is_default());
}

#[test]
fn container_keys_make_a_container_spec() {
    let config = parse_ok(&format!(
        "{NODES}    task_block: 198.19.1.0/24
healthcheck:
  system_services:
    - name: pcp
      image_name: attinnovate/charmander-pcp
      command: /bin/pmcd
      arguments: -f -x /dev/null
      env: {{PCP_HOST: $IP}}
      memory: 64
      cpu: 0.5
      privileged: true
      volumes:
        - {{host_path: /sys, container_path: /sys, read_only_mode: true}}
        - {{host_path: $DATA_DIR/log, container_path: /var/log/pcp}}
      parameters: --ipc=host -v /run:/run -e MODE=x --user=pcp --net=torc
      network_type: torc
      kill_grace_in_seconds: 2
    - name: quiet
      image_name: localhost:5000/quiet:1
      network_type: none
"
    ));
    let [pcp, quiet] = &config.healthcheck.system_services[..] else {
        panic!("two services");
    };
    let spec = pcp.to_task_spec().expect("a container");
    assert_eq!(spec.command, "/bin/pmcd", "command is the entrypoint");
    assert_eq!(spec.args, ["-f", "-x", "/dev/null"]);
    assert_eq!(
        spec.env,
        BTreeMap::from([
            ("MODE".into(), "x".into()),
            ("PCP_HOST".into(), "$IP".into())
        ])
    );
    assert_eq!(spec.resources, Resources::new(0.5, 64.0, 0.0));
    assert!(spec.privileged);
    assert_eq!(spec.network, TaskNetwork::Rack);
    assert_eq!(spec.kill_grace_ms, 2_000);
    let container = spec.container.as_ref().expect("container");
    assert_eq!(
        container.image.as_str(),
        "docker.io/attinnovate/charmander-pcp:latest"
    );
    let mounts: Vec<String> = container.volumes.iter().map(|v| v.to_string()).collect();
    assert_eq!(
        mounts,
        ["/sys:/sys:ro", "$DATA_DIR/log:/var/log/pcp", "/run:/run"]
    );
    assert!(container.options.host_ipc);
    assert_eq!(container.options.user.as_deref(), Some("pcp"));
    assert!(!container.options.no_network);
    assert_eq!(spec.validate(), Ok(()));

    let spec = quiet.to_task_spec().expect("a container");
    assert_eq!(spec.network, TaskNetwork::Node);
    assert!(
        spec.container
            .as_ref()
            .expect("container")
            .options
            .no_network
    );
}

#[test]
fn container_key_errors_name_their_key() {
    let err = |service: &str| parse(&with_service(service)).unwrap_err().to_string();
    assert_eq!(
        err("    - name: a\n      image_name: Busybox\n"),
        "t.yaml:12: healthcheck.system_services[0].image_name: invalid image reference \
         \"Busybox\": the repository name \"Busybox\" must be lowercase"
    );
    assert_eq!(
        err("    - name: a\n      image_name: x\n      parameters: -p 80:80\n"),
        "t.yaml:13: healthcheck.system_services[0].parameters: -p: ports are not published: a \
         container on the node's network uses ports from the node's range ($PORT, ports: N); \
         one on the rack network has an address of its own"
    );
    let ServiceSpecError::Volume { index, .. } = parse(&with_service(
        "    - name: a\n      image_name: x\n      volumes:\n        - {host_path: /a, container_path: /b}\n        - {host_path: a, container_path: /c}\n",
    ))
    .map_err(|e| match e {
        ConfigError::Invalid { rule, .. } => match *rule {
            Rule::Service(e) => e,
            other => panic!("{other}"),
        },
        other => panic!("{other}"),
    })
    .unwrap_err() else {
        panic!("a volume error");
    };
    assert_eq!(index, 1);
    // A process keeps the original's lenient `network_type`: it is kept as data.
    let config = parse_ok(&with_service(
        "    - {name: a, command: x, network_type: bridge}\n",
    ));
    let spec = config.healthcheck.system_services[0].to_task_spec();
    assert_eq!(spec.map(|s| s.network), Some(TaskNetwork::Node));
}

#[test]
fn arguments_are_split_when_args_are_absent() {
    let config = parse_ok(&with_service(
        "    - name: a\n      command: torc\n      arguments: dns  --listen 127.0.0.1:53\n\
         \x20   - name: b\n      command: torc\n      args: [\"kv\", \"--name\", \"a b\"]\n",
    ));
    let [a, b] = &config.healthcheck.system_services[..] else {
        panic!("two services expected");
    };
    assert_eq!(
        a.process_command(),
        Some((
            "torc",
            vec!["dns".into(), "--listen".into(), "127.0.0.1:53".into()]
        ))
    );
    assert_eq!(
        b.process_command(),
        Some(("torc", vec!["kv".into(), "--name".into(), "a b".into()]))
    );
}

#[test]
fn task_spec_mapping() {
    let config = parse_ok(&with_service(
        "    - name: web
      command: /usr/bin/web
      args: [--port, $PORT0]
      env: {RUST_LOG: info}
      memory: 64
      cpu: 0.5
      disk: 10
      ports: 2
      node_name: bladerunner1
      node_type: slave
      node_function: compute
      kill_grace_in_seconds: 7
      restart_delay_in_seconds: 3
",
    ));
    let web = &config.healthcheck.system_services[0];
    let mut expected = TaskSpec::new(web.name.clone(), "/usr/bin/web");
    expected.args = vec!["--port".into(), "$PORT0".into()];
    expected.env = BTreeMap::from([("RUST_LOG".into(), "info".into())]);
    expected.resources = Resources::new(0.5, 64.0, 10.0);
    expected.ports = 2;
    expected.constraints = Constraints {
        node_name: Some("bladerunner1".parse().unwrap()),
        node_type: Some(NodeType::Slave),
        node_function: Some("compute".into()),
    };
    expected.kill_grace_ms = 7_000;
    assert_eq!(web.to_task_spec(), Some(expected));
    assert_eq!(
        web.restart_delay(config.stateclean.restart_delay()),
        std::time::Duration::from_secs(3)
    );

    // Without an override, the default grace of `TaskSpec`.
    let config = parse_ok(&with_service("    - name: a\n      command: sleep\n"));
    let spec = config.healthcheck.system_services[0]
        .to_task_spec()
        .unwrap();
    assert_eq!(
        spec.kill_grace_ms,
        torc_types::TaskSpec::new(spec.name.clone(), "x").kill_grace_ms
    );
    assert_eq!(spec.resources, Resources::new(0.2, 128.0, 0.0));
}

#[test]
fn health_probes() {
    let config = parse_ok(&with_service(
        "    - name: a
      command: x
      health: {tcp: \"$IP:$PORT\"}
    - name: b
      command: x
      health: {http: \"http://$IP:$PORT/health\", interval_in_seconds: 1, timeout_in_seconds: 1, failure_threshold: 5}
    - name: c
      command: x
      health:
        command: [test, -e, /tmp/ready]
",
    ));
    let probes: Vec<_> = config
        .healthcheck
        .system_services
        .iter()
        .map(|s| s.health.clone().expect("health"))
        .collect();
    assert_eq!(probes[0].probe, HealthProbe::Tcp("$IP:$PORT".into()));
    assert_eq!(
        (
            probes[0].interval_in_seconds,
            probes[0].timeout_in_seconds,
            probes[0].failure_threshold
        ),
        (5, 2, 3)
    );
    assert_eq!(
        probes[1].probe,
        HealthProbe::Http("http://$IP:$PORT/health".into())
    );
    assert_eq!(probes[1].failure_threshold, 5);
    assert_eq!(
        probes[2].probe,
        HealthProbe::Command(vec!["test".into(), "-e".into(), "/tmp/ready".into()])
    );
}

#[test]
fn torc_node_keys() {
    let config = parse_ok(
        "power_command:
  on: [ipmitool, -H, \"{management_ip}\", power, on]
  off: [ipmitool, -H, \"{management_ip}\", power, off]
  status: [ipmitool, -H, \"{management_ip}\", chassis, power, status]
nodes:
  - name: wedge
    ip: 127.0.3.20
    management_ip: 10.250.1.111
    port: 7
    type: master
    resources: {cpus: 4, mem_mb: 8192}
    port_range: 31000-31099
",
    );
    let power = config.power_command.as_ref().expect("power_command");
    assert_eq!(power.on[2], "{management_ip}");
    assert_eq!(
        power.status.as_ref().map(|s| s[3].as_str()),
        Some("chassis")
    );
    let wedge = &config.nodes[0];
    assert_eq!(
        wedge.management_ip,
        Some(IpAddr::V4(Ipv4Addr::new(10, 250, 1, 111)))
    );
    assert_eq!(wedge.port, 7);
    assert_eq!(wedge.resources, Some(Resources::new(4.0, 8192.0, 0.0)));
    assert_eq!(wedge.port_range.map(|r| r.len()), Some(100));
}

#[test]
fn rack_network_keys() {
    let config = parse_ok(
        "nodes:
  - name: wedge
    ip: 198.18.0.20
    endpoint: 127.0.3.20
    type: master
    task_block: 198.19.0.0/24
  - name: bladerunner1
    ip: 198.18.0.21
    type: slave
    task_block: 198.19.1.0/24
network-agent:
  type: netlink
healthcheck:
  system_services:
    - {name: web, command: python3, network_type: torc}
    - {name: api, command: python3, network: rack}
    - {name: calico, command: python3, network_type: calico}
    - {name: dns, command: torc}
    - {name: bridged, command: torc, network_type: bridge}
",
    );
    let wedge = &config.nodes[0];
    assert_eq!(wedge.task_block, Some("198.19.0.0/24".parse().unwrap()));
    assert_eq!(
        wedge.endpoint,
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 20)))
    );
    assert_eq!(config.nodes[1].endpoint, None);
    let agent = config.network_agent.as_ref().expect("network-agent");
    assert_eq!(agent.agent_type, NetworkAgentKind::Netlink);
    assert_eq!(agent.connection, "");
    let networks: Vec<(&str, TaskNetwork)> = (config.healthcheck.system_services.iter())
        .map(|s| (s.name.as_str(), s.to_task_spec().unwrap().network))
        .collect();
    assert_eq!(
        networks,
        [
            ("web", TaskNetwork::Rack),
            ("api", TaskNetwork::Rack),
            ("calico", TaskNetwork::Rack),
            ("dns", TaskNetwork::Node),
            ("bridged", TaskNetwork::Node),
        ]
    );
}

#[test]
fn lookups() {
    let config = parse_ok(&format!(
        "{NODES}api:\n  service-groups:\n    - name: demo\n      services:\n        - name: a\n          command: sleep\n"
    ));
    assert_eq!(
        config.service_group("demo").map(|g| g.services.len()),
        Some(1)
    );
    assert!(config.service_group("nope").is_none());
}

#[test]
fn master_ip_is_substituted() {
    let text = "nodes:\n  - name: wedge\n    ip: $MASTER_IP\n    external_ip: $MASTER_IP\n    type: master\n";
    let config = RackConfig::parse_with(text, "t.yaml", &master_ip("10.250.3.20")).unwrap();
    let ip = IpAddr::V4(Ipv4Addr::new(10, 250, 3, 20));
    assert_eq!(config.nodes[0].ip, ip);
    assert_eq!(config.nodes[0].external_ip, Some(ip));

    let err = parse(text).unwrap_err();
    assert_eq!(
        err.to_string().split(" (").next(),
        Some("t.yaml:3:9: nodes[0].ip: unknown variable `$MASTER_IP`")
    );
}

#[test]
fn columns_refer_to_the_text_as_written() {
    // Substituting `$MASTER_IP` (10 chars) by `10.250.3.20` (11) shifts what follows it on
    // the line; reported columns must not shift.
    let text = "nodes:\n  - {name: wedge, ip: $MASTER_IP, type: boss}\n";
    let column_of = |needle| {
        text.lines()
            .nth(1)
            .and_then(|l| l.find(needle))
            .map(|i| i + 1)
    };
    let err = RackConfig::parse_with(text, "t.yaml", &master_ip("10.250.3.20")).unwrap_err();
    match err {
        ConfigError::Parse {
            line,
            column,
            key_path,
            ..
        } => {
            assert_eq!((line, column), (Some(2), column_of("boss")));
            assert_eq!(key_path.as_deref(), Some("nodes[0].type"));
        }
        other => panic!("unexpected {other}"),
    }
    // An error inside a substituted value points at its `$`.
    let err = RackConfig::parse_with(text, "t.yaml", &master_ip("not-an-ip")).unwrap_err();
    let expected = format!(
        "t.yaml:2:{}: nodes[0].ip: invalid IP address \"not-an-ip\"",
        column_of("$").unwrap_or(0)
    );
    assert_eq!(err.to_string(), expected);
}

#[test]
fn variables_must_be_single_line() {
    let err = RackConfig::parse_with(NODES, "t.yaml", &master_ip("a\nb")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key_path, .. } if key_path == "$MASTER_IP"),
        "{err}"
    );
}

#[test]
fn errors_are_one_line() {
    for text in [
        "nodes: [",
        "nodes:\n  - name: wedge\n    ip: 1.2.3.4\n    typo: master\n",
        "bogus: 1\n",
        "",
        "- a\n- b\n",
        "nodes: []\n---\nnodes: []\n",
    ] {
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("t.yaml"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }
}

#[test]
fn io_error_names_the_file() {
    let path = std::path::Path::new("/nonexistent/torc/rack.yaml");
    let err = RackConfig::load(path).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/torc/rack.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn broken_rules_carry_their_values() {
    let err = parse(&format!(
        "{NODES}  - name: wedge\n    ip: 127.0.3.30\n    type: slave\n"
    ))
    .unwrap_err();
    let ConfigError::Invalid { key_path, rule, .. } = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(key_path, "nodes[2].name");
    assert_eq!(
        **rule,
        Rule::DuplicateNodeName {
            name: "wedge".into(),
            first: "nodes[0]".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "t.yaml:9: nodes[2].name: duplicate node name `wedge` (also nodes[0])"
    );

    let err = parse(&with_service(
        "    - name: a\n      command: x\n      memory: -1\n",
    ))
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { rule, .. }
            if matches!(**rule, Rule::NotFiniteNonNegative { value } if value == -1.0)),
        "{err}"
    );
}

#[test]
fn logs_take_sizes_with_units_and_errors_name_the_key() {
    let config = parse_ok(NODES);
    assert_eq!(config.logs, LogsConfig::default());
    assert_eq!(config.logs.cap(), torc_types::LogCap::default());

    let text = format!(
        "{NODES}logs: {{max_bytes: 1MiB, files: 2, keep_ended_per_service: 1, \
         keep_ended_for_in_seconds: 60, disk_free_warning_percent: 20}}\n\
         healthcheck:\n  system_services:\n    - {{name: chatty, command: x, logs: {{max_bytes: 64KiB}}}}\n"
    );
    let config = parse_ok(&text);
    assert_eq!(config.logs.max_bytes, torc_types::ByteSize(1 << 20));
    assert_eq!(config.logs.files, 2);
    assert_eq!(config.logs.keep_ended_per_service, 1);
    let spec = config.healthcheck.system_services[0]
        .to_task_spec()
        .unwrap();
    // The service's own cap over the rack's; `files` stays the rack's.
    assert_eq!(
        config.logs.cap().with(spec.logs.as_ref()),
        torc_types::LogCap {
            max_bytes: 64 << 10,
            files: 2
        }
    );

    let err = |text: &str| parse(text).unwrap_err().to_string();
    assert_eq!(
        err(&format!("{NODES}logs: {{max_bytes: 10}}\n")),
        "t.yaml:9: logs.max_bytes: max_bytes must be between 4KiB and 1TiB, got 10B"
    );
    assert_eq!(
        err(&format!("{NODES}logs: {{files: 500}}\n")),
        "t.yaml:9: logs.files: files must be at most 100, got 500"
    );
    assert_eq!(
        err(&format!(
            "{NODES}logs: {{disk_free_warning_percent: 100}}\n"
        )),
        "t.yaml:9: logs.disk_free_warning_percent: must be a percentage below 100, got 100"
    );
    let bad_unit = err(&format!("{NODES}logs: {{max_bytes: 10MB}}\n"));
    assert!(
        bad_unit.contains("logs.max_bytes") && bad_unit.contains("\"10MB\" is not a size"),
        "{bad_unit}"
    );
    let service = err(&with_service(
        "    - {name: a, command: x, logs: {max_bytes: 1}}\n",
    ));
    assert!(
        service.contains("healthcheck.system_services[0].logs")
            && service.contains("max_bytes must be between 4KiB and 1TiB, got 1B"),
        "{service}"
    );
    let unknown = err(&format!("{NODES}logs: {{max_size: 1MiB}}\n"));
    assert!(unknown.contains("max_size"), "{unknown}");
}
