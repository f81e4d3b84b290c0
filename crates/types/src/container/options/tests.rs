//! The option values: each parser, its errors, and the options' serde shape.

use super::*;

#[test]
fn capabilities() {
    let cap = |t: &str| Capability::parse(t).unwrap().to_string();
    assert_eq!(cap("net_admin"), "CAP_NET_ADMIN");
    assert_eq!(cap("CAP_SYS_ADMIN"), "CAP_SYS_ADMIN");
    assert_eq!(cap("all"), "ALL");
    assert_eq!(Capability::parse("ALL").unwrap(), Capability::ALL);
    assert_eq!(
        Capability::parse("cap_chown").unwrap().name(),
        Some("CHOWN")
    );
    let err = Capability::parse("NET_ADMINS").unwrap_err().to_string();
    assert!(
        err.starts_with("unknown capability; known: ALL, CHOWN, DAC_OVERRIDE"),
        "{err}"
    );
    assert!(err.ends_with("BPF, CHECKPOINT_RESTORE"), "{err}");
    assert_eq!(CAPABILITIES.len(), 41);
}

#[test]
fn signals() {
    let sig = |t: &str| Signal::parse(t).map(|s| (s.number(), s.to_string()));
    assert_eq!(sig("SIGTERM"), Ok((15, "SIGTERM".into())));
    assert_eq!(sig("term"), Ok((15, "SIGTERM".into())));
    assert_eq!(sig("9"), Ok((9, "SIGKILL".into())));
    assert_eq!(sig("SIGSYS"), Ok((31, "SIGSYS".into())));
    assert_eq!(sig("40"), Ok((40, "40".into())));
    for bad in ["0", "65", "SIGFOO", "", "-1", "15x"] {
        assert_eq!(sig(bad), Err(ValueProblem::Signal), "{bad}");
    }
    let s: Signal = serde_json::from_str("\"quit\"").unwrap();
    assert_eq!(serde_json::to_string(&s).unwrap(), "\"SIGQUIT\"");
}

#[test]
fn ulimits() {
    let u = Ulimit::parse("nofile=1024:2048").unwrap();
    assert_eq!(
        (u.name(), u.soft, u.hard, u.oci_type()),
        ("nofile", 1024, 2048, "RLIMIT_NOFILE")
    );
    let u = Ulimit::parse("core=-1").unwrap();
    assert_eq!((u.soft, u.hard), (Ulimit::UNLIMITED, Ulimit::UNLIMITED));
    assert_eq!(u.to_string(), "core=-1:-1");
    assert_eq!(
        Ulimit::parse("nproc=10:-1").unwrap().to_string(),
        "nproc=10:-1"
    );
    for bad in [
        "nofile",
        "nofile=",
        "nofile=2:1",
        "nofile=x",
        "as=1",
        "nofile=1:2:3",
        "nofile=-2",
    ] {
        assert_eq!(Ulimit::parse(bad), Err(ValueProblem::Ulimit), "{bad}");
    }
    assert!(ValueProblem::Ulimit.to_string().contains("core, cpu, data"));
}

#[test]
fn devices() {
    let d = |t: &str| Device::parse(t).map(|d| d.to_string());
    assert_eq!(d("/dev/fuse"), Ok("/dev/fuse:/dev/fuse:rwm".into()));
    assert_eq!(d("/dev/sda:r"), Ok("/dev/sda:/dev/sda:r".into()));
    assert_eq!(d("/dev/sda:/dev/xvdc"), Ok("/dev/sda:/dev/xvdc:rwm".into()));
    assert_eq!(
        d("/dev/sda:/dev/xvdc:rw"),
        Ok("/dev/sda:/dev/xvdc:rw".into())
    );
    for bad in [
        "dev/sda",
        "/dev/sda:/x:rwx",
        "/dev/sda:/x:rr",
        "/a:/b:r:w",
        "/dev/../etc",
        "",
        "/",
    ] {
        assert_eq!(Device::parse(bad), Err(ValueProblem::Device), "{bad}");
    }
}

#[test]
fn tmpfs_and_hosts() {
    let t = Tmpfs::parse("/run:rw,size=64m").unwrap();
    assert_eq!((t.path.as_str(), t.options.len()), ("/run", 2));
    assert_eq!(t.to_string(), "/run:rw,size=64m");
    assert_eq!(Tmpfs::parse("/tmp").unwrap().to_string(), "/tmp");
    for bad in ["tmp", "/", "/run:", "/run:a,,b", "/run:a b"] {
        assert_eq!(Tmpfs::parse(bad), Err(ValueProblem::Tmpfs), "{bad}");
    }
    let h = ExtraHost::parse("db:10.0.0.5").unwrap();
    assert_eq!(h.to_string(), "db:10.0.0.5");
    assert_eq!(
        ExtraHost::parse("v6:[::1]").unwrap().ip,
        "::1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        ExtraHost::parse("v6:fe80::1").unwrap().to_string(),
        "v6:fe80::1"
    );
    assert_eq!(ExtraHost::parse("eq=10.0.0.1").unwrap().name, "eq");
    for bad in [
        "db",
        "db:host-gateway",
        ":1.2.3.4",
        "-x:1.2.3.4",
        "a b:1.2.3.4",
    ] {
        assert_eq!(ExtraHost::parse(bad), Err(ValueProblem::ExtraHost), "{bad}");
    }
}

#[test]
fn sizes() {
    for (text, bytes) in [
        ("64m", 64 << 20),
        ("64MB", 64 << 20),
        ("1GiB", 1 << 30),
        ("1.5k", 1536),
        ("100", 100),
        ("100b", 100),
        ("2t", 2 << 40),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for bad in [
        "",
        "m",
        "0",
        "0.1",
        "-1m",
        "1x",
        "1..2m",
        ".5m",
        "5.m",
        "99999999p",
        "1 m",
    ] {
        assert_eq!(parse_size(bad), Err(ValueProblem::Size), "{bad}");
    }
}

#[test]
fn free_text_checks() {
    let check = |o: ContainerOptions| o.check().map_err(|e| e.to_string());
    assert_eq!(check(ContainerOptions::default()), Ok(()));
    let mut o = ContainerOptions {
        user: Some("1000:1000".into()),
        workdir: Some("/srv".into()),
        hostname: Some("web-1.rack".into()),
        ..Default::default()
    };
    o.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    o.labels.insert("team".into(), "".into());
    assert_eq!(check(o.clone()), Ok(()));
    for (change, expected) in [
        (
            ContainerOptions {
                user: Some("a:".into()),
                ..o.clone()
            },
            "user \"a:\": must be USER[:GROUP]",
        ),
        (
            ContainerOptions {
                user: Some("a b".into()),
                ..o.clone()
            },
            "user \"a b\": must be",
        ),
        (
            ContainerOptions {
                workdir: Some("srv".into()),
                ..o.clone()
            },
            "workdir \"srv\": must be an absolute path",
        ),
        (
            ContainerOptions {
                workdir: Some("/a/../b".into()),
                ..o.clone()
            },
            "workdir \"/a/../b\": must not contain a `..`",
        ),
        (
            ContainerOptions {
                hostname: Some("a_b".into()),
                ..o.clone()
            },
            "hostname \"a_b\": must be a host name",
        ),
        (
            ContainerOptions {
                hostname: Some("a".repeat(65)),
                ..o.clone()
            },
            "must be a host name",
        ),
        (
            ContainerOptions {
                shm_size: Some(0),
                ..o.clone()
            },
            "shm-size \"0\": must be a size",
        ),
        (
            ContainerOptions {
                ulimits: vec![
                    Ulimit::parse("nofile=1").unwrap(),
                    Ulimit::parse("nofile=2").unwrap(),
                ],
                ..o.clone()
            },
            "ulimit \"nofile=2:2\": is given twice",
        ),
        (
            ContainerOptions {
                sysctls: [("../x".to_string(), "1".to_string())].into(),
                ..o.clone()
            },
            "sysctl \"../x\": is not a kernel parameter name",
        ),
        (
            ContainerOptions {
                sysctls: [("a.b".to_string(), "1\n2".to_string())].into(),
                ..o.clone()
            },
            "sysctl \"a.b=1\\n2\": must not contain control characters",
        ),
        (
            ContainerOptions {
                labels: [(String::new(), "1".to_string())].into(),
                ..o.clone()
            },
            "label \"\": is not a label key",
        ),
    ] {
        let got = check(change).unwrap_err();
        assert!(got.contains(expected), "{got} ≠ {expected}");
    }
}

#[test]
fn options_serde_round_trips_and_refuses_unknown_fields() {
    let o = ContainerOptions {
        host_ipc: true,
        cap_add: vec![Capability::parse("net_admin").unwrap()],
        ulimits: vec![Ulimit::parse("nofile=1024:2048").unwrap()],
        stop_signal: Some(Signal::parse("SIGINT").unwrap()),
        devices: vec![Device::parse("/dev/fuse").unwrap()],
        dns: vec!["10.0.0.53".parse().unwrap()],
        ..Default::default()
    };
    let json = serde_json::to_string(&o).unwrap();
    assert_eq!(
        json,
        r#"{"host_ipc":true,"cap_add":["CAP_NET_ADMIN"],"ulimits":["nofile=1024:2048"],"dns":["10.0.0.53"],"stop_signal":"SIGINT","devices":["/dev/fuse:/dev/fuse:rwm"]}"#
    );
    assert_eq!(serde_json::from_str::<ContainerOptions>(&json).unwrap(), o);
    assert_eq!(
        serde_json::to_string(&ContainerOptions::default()).unwrap(),
        "{}"
    );
    let err = serde_json::from_str::<ContainerOptions>(r#"{"ipc":"host"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `ipc`"), "{err}");
    let err = serde_json::from_str::<ContainerOptions>(r#"{"cap_add":["X"]}"#).unwrap_err();
    assert!(err.to_string().contains("unknown capability"), "{err}");
}

#[test]
fn network_modes() {
    assert_eq!(NetworkMode::parse("calico"), Ok(NetworkMode::Rack));
    assert_eq!(
        NetworkMode::parse("none").map(|m| m.to_string()),
        Ok("none".into())
    );
    assert_eq!(
        NetworkMode::parse("bridge").unwrap_err().to_string(),
        "torc has no bridge network; use host (the node's network), none (loopback only) \
         or torc (an address of its own on the rack network)"
    );
}
