//! The config files torc ships and must read: the sample racks (`config/rack.yaml`,
//! `config/rack-containers.yaml`), the original ToRC `config.yml`, and the data-driven cases
//! under `tests/data/`:
//!
//! - `bad/<case>.yaml` must fail; every non-empty line of `bad/<case>.expected` must appear in
//!   the error's `Display`.
//! - `good/<case>.yaml` must parse; every non-empty line of `good/<case>.expected` (optional)
//!   must appear in the config's pretty `Debug`.
//!
//! Both are loaded with `MASTER_IP=10.250.3.20`. Add a case by adding a file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use torc_config::{ConfigError, NodeType, RackConfig, Sla};
use torc_types::{Resources, TaskNetwork, Volume};

const SAMPLE: &str = include_str!("../../../config/rack.yaml");
const CONTAINERS: &str = include_str!("../../../config/rack-containers.yaml");
const ORIGINAL: &str = include_str!("data/original-config.yml");

fn vars() -> BTreeMap<String, String> {
    BTreeMap::from([("MASTER_IP".to_string(), "10.250.3.20".to_string())])
}

fn data_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(sub)
}

/// The `*.yaml` files of `dir`, in name order, each with the lines of its `.expected`.
fn cases(dir: &Path) -> Vec<(PathBuf, Option<Vec<String>>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let expected = std::fs::read_to_string(path.with_extension("expected"))
                .ok()
                .map(|text| {
                    text.lines()
                        .map(str::trim_end)
                        .filter(|line| !line.is_empty())
                        .map(str::to_string)
                        .collect()
                });
            (path, expected)
        })
        .collect()
}

#[test]
fn bad_configs_fail_as_expected() {
    let cases = cases(&data_dir("bad"));
    assert!(cases.len() >= 10, "too few bad cases: {}", cases.len());
    let mut failures = Vec::new();
    for (path, expected) in cases {
        let Some(expected) = expected else {
            failures.push(format!("{}: no .expected file", path.display()));
            continue;
        };
        match RackConfig::load_with(&path, &vars()) {
            Ok(_) => failures.push(format!("{}: parsed, but must fail", path.display())),
            Err(err) => {
                let shown = err.to_string();
                for line in expected
                    .iter()
                    .filter(|line| !shown.contains(line.as_str()))
                {
                    failures.push(format!(
                        "{}:\n    error:   {shown}\n    missing: {line}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn good_configs_parse() {
    let cases = cases(&data_dir("good"));
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for (path, expected) in cases {
        match RackConfig::load_with(&path, &vars()) {
            Err(err) => failures.push(format!("{err}")),
            Ok(config) => {
                let shown = format!("{config:#?}");
                for line in expected.iter().flatten() {
                    if !shown.contains(line.as_str()) {
                        failures.push(format!("{}: missing {line}", path.display()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn sample_rack_parses() {
    let config = RackConfig::parse(SAMPLE, "config/rack.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.name, "torc-scheduler");
    assert_eq!(config.domain, "homer.ave");
    let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "wedge",
            "bladerunner1",
            "bladerunner2",
            "bladerunner3",
            "bladerunner4"
        ]
    );
    for (i, node) in config.nodes.iter().enumerate() {
        let last_octet = 20 + u8::try_from(i).expect("few nodes");
        assert_eq!(node.ip, IpAddr::V4(Ipv4Addr::new(127, 0, 3, last_octet)));
        let (node_type, function) = if i == 0 {
            (NodeType::Master, "controller")
        } else {
            (NodeType::Slave, "compute")
        };
        assert_eq!(node.node_type, node_type);
        assert_eq!(node.function.as_deref(), Some(function));
    }
    assert!(config.dns_addons.is_empty());
    assert_eq!(config.statesync.poll_interval_in_seconds, 10);
    assert_eq!(config.stateclean.poll_interval_in_seconds, 18);
    assert_eq!(config.stateclean.timeout_in_seconds, 30);
    assert_eq!(config.stateclean.restart_delay_in_seconds, 30);
    assert_eq!(config.healthcheck.poll_interval_in_seconds, 12);
    // The core services run as roles of the torc binary itself.
    let core: Vec<&str> = config
        .healthcheck
        .system_services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(core.contains(&"dns") && core.contains(&"etcd"), "{core:?}");
    for s in &config.healthcheck.system_services {
        let spec = s.to_task_spec().expect("a process");
        assert_eq!(spec.command, "torc", "{}", s.name);
    }

    let hello = config.service_group("hello").expect("group hello");
    let [service] = &hello.services[..] else {
        panic!("one service in hello");
    };
    assert_eq!(service.number_of_instances, 2);
    let spec = service.to_task_spec().expect("a process");
    assert_eq!(spec.command, "sleep");
    assert_eq!(spec.args, ["3600"]);
    assert_eq!(spec.resources, Resources::new(0.1, 16.0, 0.0));
    assert!(spec.validate().is_ok());
}

#[test]
fn original_config_parses_with_master_ip() {
    let config = RackConfig::parse_with(ORIGINAL, "original-config.yml", &vars())
        .unwrap_or_else(|e| panic!("{e}"));
    let master = IpAddr::V4(Ipv4Addr::new(10, 250, 3, 20));

    assert_eq!(config.name, "torc-scheduler");
    assert_eq!(config.nodes.len(), 5);
    let wedge = config.node("wedge").expect("wedge");
    assert_eq!((wedge.ip, wedge.external_ip), (master, Some(master)));
    assert_eq!(wedge.node_type, NodeType::Master);
    let br3 = config.node("bladerunner3").expect("bladerunner3");
    assert_eq!(br3.ip, IpAddr::V4(Ipv4Addr::new(10, 250, 3, 23)));
    assert_eq!(br3.external_ip, Some(br3.ip));
    assert_eq!(br3.node_type, NodeType::Slave);

    let addons: Vec<(&str, IpAddr)> = config
        .dns_addons
        .iter()
        .map(|a| (a.name.as_str(), a.ip))
        .collect();
    assert_eq!(
        addons,
        [
            ("etcd", master),
            ("network-agent", master),
            ("mesos-master", master)
        ]
    );
    let agent = config.network_agent.as_ref().expect("network-agent");
    assert_eq!(agent.agent_type, torc_config::NetworkAgentKind::Snaproute);
    assert_eq!(agent.connection, "10.250.3.20:8080");

    assert_eq!(config.statesync.poll_interval_in_seconds, 10);
    assert_eq!(config.stateclean.poll_interval_in_seconds, 18);
    assert_eq!(config.stateclean.timeout_in_seconds, 30);
    assert_eq!(config.stateclean.restart_delay_in_seconds, 30);
    assert_eq!(config.stateclean.max_restart_delay_in_seconds, 300);
    assert_eq!(config.healthcheck.poll_interval_in_seconds, 12);

    let services = &config.healthcheck.system_services;
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dns",
            "vector",
            "pcp",
            "influxdb",
            "datacollector",
            "statesync"
        ]
    );
    let [dns, vector, pcp, influxdb, datacollector, statesync] = &services[..] else {
        unreachable!("checked above");
    };
    assert_eq!(dns.image_name.as_deref(), Some("dns"));
    assert_eq!(dns.arguments, "-bind=10.250.3.20");
    assert_eq!(dns.node_function.as_deref(), Some("controller"));
    assert_eq!((dns.memory, dns.cpu), (128.0, 0.2));
    assert_eq!(vector.effective_args(), ["-p", "9091"]);

    assert!(pcp.privileged);
    assert_eq!(pcp.sla, Some(Sla::SingletonEachNode));
    assert_eq!(pcp.parameters, "--ipc=host");
    let volumes: Vec<(&str, bool)> = pcp
        .volumes
        .iter()
        .map(|v| (v.host_path.as_str(), v.read_only_mode))
        .collect();
    assert_eq!(
        volumes,
        [
            ("/sys", true),
            ("/etc/localtime", true),
            ("/var/lib/docker", true),
            ("/run", false),
            ("/var/log", false),
            ("/dev/log", false)
        ]
    );
    assert_eq!(influxdb.memory, 1024.0);
    assert_eq!(
        influxdb.node_name.as_ref().map(|n| n.as_str()),
        Some("bladerunner3")
    );
    assert_eq!(datacollector.memory, 40.0);
    assert_eq!(datacollector.arguments, "-influxdb_name=torc");
    let args = statesync.effective_args();
    assert_eq!(args.len(), 12);
    assert_eq!(args[1], "http://10.250.3.20:2379/v2/keys/");
    assert_eq!(args[11], "http://10.250.3.20:3000/nodes");

    // Image-only services are containers, their images named as Docker names them, their
    // arguments replacing the image's Cmd.
    let dns_spec = dns.to_task_spec().expect("a container");
    let image = |s: &torc_types::TaskSpec| s.container.as_ref().map(|c| c.image.to_string());
    assert_eq!(
        image(&dns_spec).as_deref(),
        Some("docker.io/library/dns:latest")
    );
    assert_eq!(
        (dns_spec.command.as_str(), &dns_spec.args[..]),
        ("", &["-bind=10.250.3.20".to_string()][..])
    );
    assert!(dns_spec.validate().is_ok());
    let pcp_spec = pcp.to_task_spec().expect("a container");
    assert_eq!(
        image(&pcp_spec).as_deref(),
        Some("docker.io/attinnovate/charmander-pcp:latest")
    );
    assert!(pcp_spec.privileged);
    let container = pcp_spec.container.as_ref().expect("container");
    assert!(container.options.host_ipc, "--ipc=host");
    let mounts: Vec<String> = container.volumes.iter().map(Volume::to_string).collect();
    assert_eq!(
        mounts,
        [
            "/sys:/sys:ro",
            "/etc/localtime:/etc/localtime:ro",
            "/var/lib/docker:/var/lib/docker:ro",
            "/run:/run",
            "/var/log:/var/log",
            "/dev/log:/dev/log"
        ]
    );
    assert_eq!(
        container.privileged_volume().map(Volume::host_path),
        Some("/sys"),
        "host paths need the privileged grant"
    );
    for s in services {
        let spec = s.to_task_spec().expect("each a container");
        assert!(
            spec.container.is_some() && spec.validate().is_ok(),
            "{}",
            s.name
        );
        assert_eq!(spec.network, TaskNetwork::Node, "network_type: host");
    }

    let group = config
        .service_group("torc-dns-scheduler")
        .expect("torc-dns-scheduler group");
    let [scheduler] = &group.services[..] else {
        panic!("one service in the group");
    };
    assert_eq!(scheduler.memory, 1024.0);
    assert_eq!(
        scheduler.effective_args(),
        ["--master", "10.250.3.20", "--config", "config.yml"]
    );
}

#[test]
fn container_sample_parses() {
    let config = RackConfig::parse(CONTAINERS, "config/rack-containers.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    // The sample rack's nodes and core services, unchanged.
    let sample = RackConfig::parse(SAMPLE, "config/rack.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.nodes, sample.nodes);
    assert_eq!(
        config.healthcheck.system_services,
        sample.healthcheck.system_services
    );
    assert_eq!(config.access, sample.access);
    assert!(config.containers.registries.is_empty());
    assert_eq!(config.containers.pull_timeout().as_secs(), 300);

    let group = config
        .service_group("containers")
        .expect("group containers");
    let [hello, counter] = &group.services[..] else {
        panic!("two services in the group");
    };
    let spec = hello.to_task_spec().expect("a container");
    let container = spec.container.as_ref().expect("container");
    assert_eq!(container.image.as_str(), "docker.io/library/busybox:1.36");
    assert_eq!(spec.command, "", "the image's entrypoint");
    assert_eq!(
        spec.args,
        ["sh", "-c", "while true; do date; sleep 5; done"]
    );
    assert_eq!(spec.resources, Resources::new(0.1, 16.0, 0.0));
    assert_eq!(spec.network, TaskNetwork::Node);
    assert!(spec.validate().is_ok());

    let spec = counter.to_task_spec().expect("a container");
    let container = spec.container.as_ref().expect("container");
    assert_eq!(
        container.volumes,
        [Volume::new("$DATA_DIR", "/data", false).unwrap()]
    );
    assert!(container.privileged_volume().is_none());
    assert!(container.options.read_only);
    assert_eq!(container.options.tmpfs[0].path, "/tmp");
    assert!(spec.validate().is_ok());
}

#[test]
fn original_config_needs_master_ip() {
    let err = RackConfig::parse(ORIGINAL, "original-config.yml").unwrap_err();
    let ConfigError::UnknownVariable {
        line,
        column,
        key_path,
        name,
        known,
        ..
    } = &err
    else {
        panic!("unexpected {err}");
    };
    let first = ORIGINAL
        .lines()
        .position(|l| l.contains("$MASTER_IP") && !l.trim_start().starts_with('#'))
        .map(|i| i + 1);
    assert_eq!(Some(*line), first);
    assert_eq!(*column, 11);
    assert_eq!(key_path.as_deref(), Some("nodes[0].ip"));
    assert_eq!(name, "MASTER_IP");
    assert!(known.is_empty());
    assert!(
        err.to_string().contains("unknown variable `$MASTER_IP`"),
        "{err}"
    );
}

/// What parses must serialize to YAML that parses back to the same config.
#[test]
fn round_trip() {
    for (text, origin) in [
        (SAMPLE, "rack.yaml"),
        (CONTAINERS, "rack-containers.yaml"),
        (ORIGINAL, "original-config.yml"),
    ] {
        let config =
            RackConfig::parse_with(text, origin, &vars()).unwrap_or_else(|e| panic!("{e}"));
        let yaml = serde_saphyr::to_string(&config).expect("serialize");
        let again =
            RackConfig::parse(&yaml, "round-trip.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, config, "{yaml}");
    }
}

/// No input panics: every truncation of the shipped configs, and a few byte-level
/// corruptions, give a result (almost always an error), never a panic. Of the container
/// sample, only what the plain sample lacks: one node, its `containers` section and groups.
#[test]
fn no_input_panics() {
    let containers_part = format!(
        "nodes: [{{name: wedge, ip: 127.0.3.20, type: master}}]\n{}",
        &CONTAINERS[CONTAINERS
            .find("\ncontainers:")
            .expect("a containers section")..]
    );
    let parsed = RackConfig::parse(&containers_part, "t.yaml");
    assert!(parsed.is_ok(), "{parsed:?}");
    for text in [SAMPLE, &containers_part, ORIGINAL] {
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &end in boundaries.iter().step_by(5) {
            let _ = RackConfig::parse_with(&text[..end], "t.yaml", &vars());
        }
        for (i, _) in text.char_indices().step_by(23) {
            for replacement in [
                "\t", "'", "\"", "{", "[", ":", "#", "$", "&a ", "*a", "\u{feff}",
            ] {
                let mut corrupted = text.to_string();
                corrupted.replace_range(
                    i..i + text[i..].chars().next().map_or(0, char::len_utf8),
                    replacement,
                );
                let _ = RackConfig::parse_with(&corrupted, "t.yaml", &vars());
            }
        }
    }
}
