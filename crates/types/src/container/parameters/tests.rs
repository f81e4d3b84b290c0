//! The `parameters` parser: every mapped option, every refusal, and the error texts.

use super::*;
use crate::{ContainerSpec, ServiceName};

fn parse(text: &str) -> Parameters {
    Parameters::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn error(text: &str) -> String {
    match Parameters::parse(text) {
        Ok(p) => panic!("{text}: parsed as {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_asks_for_nothing() {
    assert_eq!(parse(""), Parameters::default());
    assert_eq!(parse("  \n\t "), Parameters::default());
}

#[test]
fn the_originals_ipc_host() {
    let p = parse("--ipc=host");
    assert!(p.options.host_ipc);
    assert_eq!(
        p,
        Parameters {
            options: ContainerOptions {
                host_ipc: true,
                ..Default::default()
            },
            ..Default::default()
        }
    );
}

#[test]
fn every_mapped_option() {
    let p = parse(
        "--ipc host --pid=host --uts=host --net=torc -u 1000:100 -w /srv --entrypoint=/bin/sh \
         -h web-1 --read-only --cap-add=net_admin --cap-add NET_ADMIN --cap-drop=ALL \
         --shm-size=64m --tmpfs /run:rw,size=1m --ulimit nofile=1024:2048 \
         --sysctl net.core.somaxconn=1024 --security-opt=no-new-privileges \
         --add-host db:10.0.0.5 --dns 10.0.0.53 --stop-signal=SIGINT -e A=1 --env=B=x=y \
         -eC= -v $DATA_DIR:/data --volume=/sys:/sys:ro -l team=dns --label=bare \
         --privileged --device=/dev/fuse",
    );
    let o = &p.options;
    assert!(o.host_ipc && o.host_pid && o.host_uts && o.read_only && o.no_new_privileges);
    assert!(!o.no_network);
    assert_eq!(p.network, Some(NetworkMode::Rack));
    assert_eq!(o.user.as_deref(), Some("1000:100"));
    assert_eq!(o.workdir.as_deref(), Some("/srv"));
    assert_eq!(p.entrypoint.as_deref(), Some("/bin/sh"));
    assert_eq!(o.hostname.as_deref(), Some("web-1"));
    let caps = |c: &[Capability]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(
        caps(&o.cap_add),
        ["CAP_NET_ADMIN"],
        "given twice, added once"
    );
    assert_eq!(caps(&o.cap_drop), ["ALL"]);
    assert_eq!(o.shm_size, Some(64 << 20));
    assert_eq!(o.tmpfs[0].to_string(), "/run:rw,size=1m");
    assert_eq!(o.ulimits[0].to_string(), "nofile=1024:2048");
    assert_eq!(o.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(o.extra_hosts[0].to_string(), "db:10.0.0.5");
    assert_eq!(o.dns, ["10.0.0.53".parse::<IpAddr>().unwrap()]);
    assert_eq!(o.stop_signal.map(|s| s.number()), Some(2));
    let env: Vec<(&str, &str)> = (p.env.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "1"), ("B", "x=y"), ("C", "")]);
    let volumes: Vec<String> = p.volumes.iter().map(|v| v.to_string()).collect();
    assert_eq!(volumes, ["$DATA_DIR:/data", "/sys:/sys:ro"]);
    assert_eq!(o.labels["team"], "dns");
    assert_eq!(o.labels["bare"], "");
    assert!(p.privileged);
    assert_eq!(o.devices[0].to_string(), "/dev/fuse:/dev/fuse:rwm");
}

#[test]
fn value_forms() {
    for text in ["--user=root", "--user root", "-u root", "-uroot", "-u=root"] {
        assert_eq!(parse(text).options.user.as_deref(), Some("root"), "{text}");
    }
    assert!(!parse("--read-only=false").options.read_only);
    assert!(parse("--read-only=true").options.read_only);
    // A bare flag does not take the next token as its value.
    let p = parse("--privileged --ipc=host");
    assert!(p.privileged && p.options.host_ipc);
    // A value may start with a dash, as docker reads it.
    assert_eq!(parse("--entrypoint -x").entrypoint.as_deref(), Some("-x"));
    assert_eq!(parse("--net none").network, Some(NetworkMode::None));
    assert_eq!(parse("--network=host").network, Some(NetworkMode::Host));
    assert_eq!(parse("--net=calico").network, Some(NetworkMode::Rack));
    assert!(
        !parse("--security-opt no-new-privileges:false")
            .options
            .no_new_privileges
    );
    // The same value twice is one value.
    assert_eq!(parse("-u a -u a").options.user.as_deref(), Some("a"));
}

#[test]
fn refused_options_say_why() {
    let ports = "ports are not published: a container on the node's network uses ports from \
                 the node's range ($PORT, ports: N); one on the rack network has an address of \
                 its own";
    assert_eq!(error("-p 80:80"), format!("-p: {ports}"));
    assert_eq!(error("--publish=80:80"), format!("--publish: {ports}"));
    assert_eq!(error("-P"), format!("-P: {ports}"));
    assert_eq!(error("--expose 80"), format!("--expose: {ports}"));
    let limits = "set memory: and cpu: (the scheduler places by them and the engine enforces them)";
    for option in [
        "-m",
        "--memory",
        "--memory-swap",
        "--memory-reservation",
        "--cpus",
        "--cpu-shares",
        "-c",
        "--cpu-quota",
        "--cpu-period",
        "--cpuset-cpus",
        "--kernel-memory",
    ] {
        assert_eq!(error(&format!("{option} 1")), format!("{option}: {limits}"));
    }
    let lifecycle = "torc names, restarts and detaches tasks itself";
    for option in [
        "--name",
        "--rm",
        "-d",
        "--detach",
        "--restart",
        "-i",
        "-t",
        "--tty",
    ] {
        assert_eq!(
            error(&format!("{option} x")),
            format!("{option}: {lifecycle}")
        );
    }
    assert_eq!(error("-it"), format!("-i: {lifecycle}"));
    assert_eq!(error("--ipc=host -dit"), format!("-d: {lifecycle}"));
    let logs = "output goes to the task's sandbox (torc logs)";
    assert_eq!(error("--log-driver=none"), format!("--log-driver: {logs}"));
    assert_eq!(error("--log-opt max-size=1m"), format!("--log-opt: {logs}"));
}

#[test]
fn unknown_options_list_the_mapped_ones() {
    assert_eq!(
        error("--ipc=host --foo=bar"),
        "unknown docker run option --foo (torc maps: ipc, pid, uts, net, user, workdir, \
         entrypoint, hostname, read-only, cap-add, cap-drop, shm-size, tmpfs, ulimit, sysctl, \
         security-opt, add-host, dns, stop-signal, env, volume, label, privileged, device)"
    );
    assert!(error("-x").starts_with("unknown docker run option -x (torc maps: ipc,"));
    assert!(error("--env-file=/x").starts_with("unknown docker run option --env-file ("));
}

#[test]
fn what_is_not_an_option() {
    let not = |t: &str| {
        format!(
            "{t:?} is not a docker run option (such as --ipc=host); the command's arguments go \
             in `arguments` or `args`"
        )
    };
    assert_eq!(error("host"), not("host"));
    assert_eq!(error("--ipc=host sh"), not("sh"));
    assert_eq!(error("-"), not("-"));
    assert_eq!(error("--"), not("--"));
    assert_eq!(error("--=x"), not("--=x"));
}

#[test]
fn bad_values_name_option_value_and_rule() {
    for (text, expected) in [
        ("--user", "--user needs a value"),
        ("-e", "-e needs a value"),
        (
            "--ipc=private",
            "--ipc \"private\": torc supports only `host`",
        ),
        (
            "--pid container:x",
            "--pid \"container:x\": torc supports only `host`",
        ),
        (
            "--net=bridge",
            "--net \"bridge\": torc has no bridge network; use host (the node's network), none \
             (loopback only) or torc (an address of its own on the rack network)",
        ),
        ("--net=host --net=torc", "--net \"torc\": is given twice"),
        ("-u a:", "-u \"a:\": must be USER[:GROUP]"),
        ("-w srv", "-w \"srv\": must be an absolute path"),
        ("--entrypoint=", "--entrypoint \"\": must not be empty"),
        ("-h a_b", "-h \"a_b\": must be a host name"),
        (
            "--read-only=yes",
            "--read-only \"yes\": must be true or false",
        ),
        (
            "--privileged=1",
            "--privileged \"1\": must be true or false",
        ),
        (
            "--cap-add=NET_ADMINS",
            "--cap-add \"NET_ADMINS\": unknown capability; known: ALL, CHOWN,",
        ),
        ("--shm-size=0", "--shm-size \"0\": must be a size"),
        (
            "--shm-size 1m --shm-size 2m",
            "--shm-size \"2m\": is given twice",
        ),
        ("--tmpfs run", "--tmpfs \"run\": must be /PATH[:OPTIONS]"),
        (
            "--ulimit nofile=2:1",
            "--ulimit \"nofile=2:1\": must be NAME=SOFT[:HARD]",
        ),
        (
            "--ulimit nofile=1 --ulimit nofile=2",
            "--ulimit \"nofile=2\": is given twice",
        ),
        ("--sysctl x", "--sysctl \"x\": must be KEY=VALUE"),
        (
            "--sysctl ../x=1",
            "--sysctl \"../x=1\": is not a kernel parameter name",
        ),
        (
            "--sysctl a=1 --sysctl a=2",
            "--sysctl \"a=2\": is given twice",
        ),
        (
            "--security-opt seccomp=unconfined",
            "--security-opt \"seccomp=unconfined\": torc supports only no-new-privileges",
        ),
        ("--add-host db", "--add-host \"db\": must be NAME:IP"),
        (
            "--dns resolver",
            "--dns \"resolver\": must be an IP address",
        ),
        (
            "--stop-signal=SIGNOPE",
            "--stop-signal \"SIGNOPE\": must be a signal name",
        ),
        (
            "-e PATH",
            "-e \"PATH\": needs a value (NAME=VALUE): torc does not copy the node's environment",
        ),
        ("-e 1X=1", "-e \"1X=1\": must be a variable name"),
        ("-e A=1 --env A=2", "--env \"A=2\": is given twice"),
        ("-v /a", "-v \"/a\": \"/a\" is not HOST:CONTAINER[:ro|rw]"),
        (
            "-v data:/data",
            "-v \"data:/data\": host path \"data\" must be absolute or start with $DATA_DIR",
        ),
        (
            "-v /a:/b:z",
            "-v \"/a:/b:z\": volume option \"z\" of \"/a:/b:z\" is not supported",
        ),
        ("--label==x", "--label \"=x\": is not a label key"),
        (
            "--device=dev/sda",
            "--device \"dev/sda\": must be HOST[:CONTAINER][:PERMISSIONS]",
        ),
    ] {
        let got = error(text);
        assert!(
            got.starts_with(expected),
            "{text}:\n got      {got}\n expected {expected}"
        );
    }
}

fn container_task(command: &str) -> TaskSpec {
    let mut spec = TaskSpec::new(ServiceName::new("t").unwrap(), command);
    spec.container = Some(ContainerSpec::new("busybox".parse().unwrap()));
    spec
}

#[test]
fn applied_to_a_spec() {
    let mut spec = container_task("");
    spec.env.insert("A".into(), "1".into());
    parse("--entrypoint=/bin/sh --net=none -e A=1 -e B=2 -v $DATA_DIR:/d --privileged --ipc=host")
        .apply_to(&mut spec)
        .unwrap();
    assert_eq!(spec.command, "/bin/sh");
    assert_eq!(spec.env.len(), 2);
    assert!(spec.privileged);
    assert_eq!(spec.network, TaskNetwork::Node);
    let container = spec.container.as_ref().unwrap();
    assert!(container.options.no_network && container.options.host_ipc);
    assert_eq!(container.volumes.len(), 1);
    assert_eq!(spec.validate(), Ok(()));

    let mut spec = container_task("");
    parse("--net=torc").apply_to(&mut spec).unwrap();
    assert_eq!(spec.network, TaskNetwork::Rack);
    // Nothing asked, nothing changed.
    let mut spec = container_task("sh");
    let before = spec.clone();
    parse("").apply_to(&mut spec).unwrap();
    assert_eq!(spec, before);
}

#[test]
fn conflicts_when_applied() {
    let apply =
        |text: &str, spec: &mut TaskSpec| parse(text).apply_to(spec).unwrap_err().to_string();
    let mut process = TaskSpec::new(ServiceName::new("t").unwrap(), "sh");
    assert_eq!(
        apply("--ipc=host", &mut process),
        "docker run options need an image to run"
    );
    assert_eq!(
        apply("--entrypoint=/bin/sh", &mut container_task("sh")),
        "--entrypoint=/bin/sh and the command \"sh\" both name the program; keep one of them"
    );
    let mut rack = container_task("");
    rack.network = TaskNetwork::Rack;
    assert_eq!(
        apply("--net=host", &mut rack),
        "--net=host contradicts the task's network (torc); keep one of them"
    );
    let mut none = container_task("");
    none.container.as_mut().unwrap().options.no_network = true;
    assert_eq!(
        apply("--net=torc", &mut none),
        "--net=torc contradicts the task's network (none); keep one of them"
    );
    parse("--net=none").apply_to(&mut none).unwrap();
    assert!(none.container.as_ref().unwrap().options.no_network, "kept");
    let mut env = container_task("");
    env.env.insert("A".into(), "1".into());
    assert_eq!(
        apply("-e A=2", &mut env),
        "-e A=2 contradicts env A=1; keep one of them"
    );
    let mut given = container_task("");
    given.container.as_mut().unwrap().options.read_only = true;
    assert_eq!(
        apply("--ipc=host", &mut given),
        "the container's options are given twice: as options and as docker run options"
    );
}

/// No text makes the parser panic: every prefix and a few corruptions of a long line.
#[test]
fn no_input_panics() {
    let text = "--ipc=host -u 1000 --ulimit nofile=1:2 -v $DATA_DIR:/d:ro --device=/dev/x:r \
                --add-host a:[::1] --shm-size=1.5g --stop-signal=9 --tmpfs=/t:size=1m -e A=ü";
    for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
        let _ = Parameters::parse(&text[..end]);
        for insert in ["=", "-", ":", "--", " ", "\0", "é", "[", "@"] {
            let mut t = text[..end].to_string();
            t.push_str(insert);
            t.push_str(&text[end..]);
            let _ = Parameters::parse(&t);
        }
    }
}
