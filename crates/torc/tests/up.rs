//! `torc up` and the CLI, as a new user runs them: on loopback, on network namespaces (root,
//! or CAP_SYS_ADMIN and CAP_NET_ADMIN; otherwise those tests print `skipped: needs
//! CAP_NET_ADMIN` and pass), and falling back to loopback without the privilege.
//!
//! Every `torc up` here gets a free loopback block for its endpoints and a state directory of
//! its own (hence its own rack slug), gets SIGTERM if the test process dies, and is stopped
//! with Ctrl-C when its test ends, panics included, so it removes what it made.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use torc_test_utils::up::{
    self, Up, assert_host_has_no_rack_address, assert_rack_gone, env_for, eventually, free_base,
    guard_route_present, listed_namespaces, namespace_id, namespaces_of, netns_path, rack_prefix,
    rack_state, up_args,
};
use torc_test_utils::{
    TestImage, containers_or_skip, namespaces_or_skip, processes_mentioning, without_forks,
};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn cli(env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    up::cli(TORC, env, args)
}

#[test]
fn torc_up_on_loopback_runs_a_rack_the_cli_drives_it_and_ctrl_c_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (base, port) = free_base();
    // As root too: the loopback rack stays tested where namespaces are the default.
    let mut up = Up::start(TORC, &[], &up_args(2, base, port, dir.path(), "loopback"));
    let text = up.until_up();
    assert!(text.contains("registered (3/3)"), "{text}");
    assert!(!text.contains("network:     namespaces"), "{text}");
    let url = format!("https://{base}:{port}");
    assert!(
        text.contains(&format!("API:         {url}/api/v1/nodes")),
        "{text}"
    );
    // Credentials: printed where they are, private to the user.
    let token_file = dir.path().join("credentials").join("admin.token");
    let ca = dir.path().join("pki").join("ca.pem");
    assert!(
        text.contains(&token_file.display().to_string())
            && text.contains(&ca.display().to_string()),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(dir.path()),
        0o711,
        "tasks reach their sandboxes, list nothing"
    );
    assert_eq!(mode(&dir.path().join("credentials")), 0o700);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(
        mode(&dir.path().join("credentials").join("join.token")),
        0o600
    );
    assert_eq!(mode(&dir.path().join("pki").join("ca.key")), 0o600);

    let env = [
        ("TORC_CONTROLLER", url.clone()),
        ("TORC_TOKEN_FILE", token_file.display().to_string()),
        ("TORC_CA", ca.display().to_string()),
    ];
    let (ok, out, err) = cli(&env, &["nodes"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    for n in ["wedge", "bladerunner1", "bladerunner2"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(n) && l.contains("active")),
            "{out}"
        );
    }

    let (ok, out, err) = cli(
        &env,
        &[
            "run",
            "--wait",
            "--node-function",
            "compute",
            "--",
            "sleep",
            "300",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains(" running on bladerunner"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_string();
    let (ok, out, _) = cli(&env, &["tasks", "--json"]);
    assert!(ok);
    let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed = tasks.as_array().unwrap();
    assert!(listed.iter().any(|t| t["id"] == id.as_str()), "{tasks}");
    // The sample rack runs its DNS as a system service.
    assert!(listed.iter().any(|t| t["name"] == "dns"), "{tasks}");

    // Without a token, a change (and a read) is refused with a clear message.
    let no_token = [
        ("TORC_CONTROLLER", url.clone()),
        ("TORC_CA", ca.display().to_string()),
    ];
    let (ok, _, err) = cli(&no_token, &["kill", &id]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("Bearer"), "{err}");
    let (ok, _, err) = cli(&no_token, &["tasks"]);
    assert!(!ok && err.contains("401"), "{err}");
    // Without the CA, the controller's certificate is not trusted.
    let (ok, _, err) = cli(
        &[
            ("TORC_CONTROLLER", url.clone()),
            ("TORC_TOKEN_FILE", token_file.display().to_string()),
        ],
        &["nodes"],
    );
    assert!(!ok && err.contains("--ca"), "{err}");

    // A viewer token, made with the CLI: it reads, it changes nothing; revoked, it is refused.
    let (ok, viewer, err) = cli(
        &env,
        &["token", "create", "--role", "viewer", "--name", "dash"],
    );
    assert!(ok, "{err}");
    let viewer_file = dir.path().join("viewer.token");
    std::fs::write(&viewer_file, viewer.trim()).unwrap();
    std::fs::set_permissions(&viewer_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_viewer = [
        ("TORC_CONTROLLER", url.clone()),
        ("TORC_TOKEN_FILE", viewer_file.display().to_string()),
        ("TORC_CA", ca.display().to_string()),
    ];
    let (ok, out, err) = cli(&as_viewer, &["tasks"]);
    assert!(ok && out.contains(&id), "{out}{err}");
    let (ok, _, err) = cli(&as_viewer, &["kill", &id]);
    assert!(!ok && err.contains("403") && err.contains("admin"), "{err}");
    let (ok, out, _) = cli(&env, &["token", "list"]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.contains("dash"))
        .unwrap()
        .to_string();
    assert!(line.contains("viewer"), "{out}");
    let viewer_id = line.split_whitespace().next().unwrap();
    let (ok, _, err) = cli(&env, &["token", "revoke", viewer_id]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&as_viewer, &["tasks"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = cli(&env, &["kill", "no-such-task.1"]);
    assert!(!ok);
    assert!(err.contains("no task with id"), "{err}");

    // The README's checks, with the rack's credentials: the core services answer dig, etcdctl
    // (as root, with the rack secret), the influx shell over HTTPS (trusting the rack CA) and
    // the seed's 0.8 query with curl; without credentials they refuse.
    let o = base.octets();
    readme_checks(&env, base, Ipv4Addr::new(o[0], o[1], o[2], o[3] + 1), &ca);

    // Ctrl-C: everything stops, the task included.
    let status = up.interrupt();
    assert!(status.success(), "{status}\n{}", up.said());
    let left = processes_mentioning(dir.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// `torc up --ha`: two controllers on a real 3-member etcd it starts; it prints who leads, the
/// CLI follows the leader, a kill -9 of the leader is survived (the rack stays up, the other
/// takes over, a launch after it runs), and Ctrl-C leaves no etcd and no torc behind.
#[test]
fn torc_up_ha_runs_two_controllers_on_etcd_and_survives_the_loss_of_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (base, port) = free_base();
    let mut args = up_args(1, base, port, dir.path(), "loopback");
    args.extend(["--ha".to_string(), "--containers".into(), "off".into()]);
    let mut up = Up::start(TORC, &[], &args);
    let text = up.until_up();
    assert!(text.contains("registered (3/3)"), "{text}");
    assert!(text.contains("etcd:        3 members healthy"), "{text}");
    assert!(text.contains(" leads (epoch "), "{text}");
    let wedge2 = Ipv4Addr::from(u32::from(base) + 2);
    let urls = format!("https://{base}:{port},https://{wedge2}:{port}");
    assert!(
        text.contains(&format!("export TORC_CONTROLLER={urls} ")),
        "{text}"
    );
    let env = env_for(dir.path(), &urls);
    let (ok, out, err) = cli(&env, &["controller", "status"]);
    assert!(ok, "{err}");
    let leader = out
        .split("controller: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    assert!(out.contains("store etcd, 3/3 members healthy"), "{out}");

    // kill -9 the leader: the rack stays up and the other controller takes over.
    let data = match leader.as_str() {
        "wedge" => dir.path().join("controller"),
        other => dir.path().join(format!("controller-{other}")),
    };
    let pid = without_forks(processes_mentioning(&data))
        .into_iter()
        .find(|(_, cmd)| cmd.contains(" controller "))
        .map(|(pid, _)| pid)
        .unwrap_or_else(|| panic!("no controller process for {}", data.display()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, _) = cli(&env, &["controller", "status"]);
        if ok
            && out.starts_with("controller: ")
            && !out.starts_with(&format!("controller: {leader} "))
            && out.contains(" leads")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader:\n{out}\n{}",
            up.said()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out, err) = cli(
        &env,
        &["run", "--name", "after", "--wait", "--", "sleep", "60"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("running on"), "{out}");

    assert!(up.interrupt().success(), "{}", up.said());
    let left = without_forks(processes_mentioning(dir.path()));
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The rack prefix torc up printed (`  network:     namespaces torc-3fa9c2-*: ...`).
#[test]
fn torc_up_on_namespaces_puts_each_node_in_a_namespace_and_the_readme_works_from_the_host() {
    if !namespaces_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (base, port) = free_base();
    let mut up = Up::start(TORC, &[], &up_args(2, base, port, dir.path(), "namespaces"));
    let text = up.until_up();
    let prefix = rack_prefix(&text);
    let nodes = ["wedge", "bladerunner1", "bladerunner2"];

    // Checked before anything is sent: `ip netns` lists exactly the rack's namespaces, each a
    // namespace mounted there; the host has the guard route and no rack address.
    let expected: BTreeSet<String> = nodes.iter().map(|n| format!("{prefix}{n}")).collect();
    assert_eq!(listed_namespaces(&prefix), expected);
    let run_netns = std::fs::metadata("/run/netns").unwrap().dev();
    for name in &expected {
        assert_ne!(namespace_id(&netns_path(name)).0, run_netns, "{name}");
        torc_net::Netns::open(name).unwrap();
    }
    assert!(
        guard_route_present(),
        "the guard route is in the host's table"
    );
    assert_host_has_no_rack_address();
    // Each agent runs inside its node's namespace, the controller inside the switch's.
    for node in nodes {
        assert_eq!(
            namespaces_of(dir.path(), &[" agent ", &format!("--name {node} ")]),
            BTreeSet::from([namespace_id(&netns_path(&format!("{prefix}{node}")))]),
            "the agent of {node}"
        );
    }
    assert_eq!(
        namespaces_of(dir.path(), &[" controller --config "]),
        BTreeSet::from([namespace_id(&netns_path(&format!("{prefix}wedge")))])
    );
    // The nodes registered with their rack addresses; the host reaches the API at its endpoint.
    assert!(text.contains("198.18.0.22"), "{text}");
    let url = format!("https://{base}:{port}");
    assert!(
        text.contains(&format!("API:         {url}/api/v1/nodes")),
        "{text}"
    );

    let env = env_for(dir.path(), &url);
    let (ok, out, err) = cli(&env, &["nodes"]);
    assert!(ok, "{err}");
    for n in nodes {
        assert!(
            out.lines()
                .any(|l| l.starts_with(n) && l.contains("active") && l.contains("198.18.0.")),
            "{out}"
        );
    }
    let (ok, out, err) = cli(&env, &["status"]);
    assert!(ok && out.contains("3/3 nodes active"), "{out}{err}");
    // The README's lines, unchanged, through the endpoints: DNS answers rack addresses.
    let checked = std::panic::catch_unwind(|| {
        readme_checks(
            &env,
            base,
            Ipv4Addr::new(198, 18, 0, 21),
            &dir.path().join("pki").join("ca.pem"),
        )
    });
    if let Err(panic) = checked {
        eprintln!("{}", rack_state(TORC, &env, dir.path()));
        std::panic::resume_unwind(panic);
    }

    // Ctrl-C: no process, no namespace, no guard route is left.
    let status = up.interrupt();
    assert!(status.success(), "{status}\n{}", up.said());
    assert_rack_gone(dir.path(), &prefix);
}

#[test]
fn a_second_torc_up_on_the_same_directory_is_refused_and_one_after_a_kill_9_sweeps() {
    if !namespaces_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (base, port) = free_base();
    let args = up_args(1, base, port, dir.path(), "namespaces");
    let mut first = Up::start(TORC, &[], &args);
    let prefix = rack_prefix(&first.until_up());
    let wedge = netns_path(&format!("{prefix}wedge"));
    let first_wedge = namespace_id(&wedge);
    // Held until the end, so that the kernel cannot give its inode number to a namespace made
    // after it is swept (it reuses freed numbers at once, and parallel tests free many).
    let _first_wedge_held = std::fs::File::open(&wedge).unwrap();

    // A second torc up with the same state directory is refused and changes nothing.
    let (other_base, other_port) = free_base();
    let mut second = Up::start(
        TORC,
        &[],
        &up_args(1, other_base, other_port, dir.path(), "namespaces"),
    );
    let status = second.wait_exit();
    let said = second.said();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "another torc up runs with the state directory {}",
            dir.path().display()
        )),
        "{said}"
    );
    assert_eq!(namespace_id(&wedge), first_wedge);
    let env = env_for(dir.path(), &format!("https://{base}:{port}"));
    let (ok, _, err) = cli(&env, &["nodes"]);
    assert!(ok, "the first rack still answers: {err}");

    // kill -9: the namespaces stay behind, and the next torc up sweeps them and comes up.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit();
    // Left behind (unless a rack starting in parallel swept them already: see below).
    let left = listed_namespaces(&prefix).len();
    assert!(left == 2 || left == 0, "{left} of the 2 namespaces left");
    let mut third = Up::start(TORC, &[], &args);
    let text = third.until_up();
    assert_eq!(
        rack_prefix(&text),
        prefix,
        "the same directory, the same slug"
    );
    // Every rack start sweeps every killed rack of the machine: a test rack starting in
    // parallel may have swept these first. Either way they are gone, and a new switch
    // namespace stands in the old one's place (below).
    match text.lines().find(|l| l.contains("left by killed racks")) {
        Some(swept) => assert!(swept.contains(&format!("{prefix}wedge")), "{swept}"),
        None => println!("swept by another rack's start before this one:\n{text}"),
    }
    assert_ne!(namespace_id(&wedge), first_wedge, "a new switch namespace");
    let (ok, out, err) = cli(&env, &["nodes"]);
    assert!(ok && out.contains("bladerunner1"), "{out}{err}");

    // Killed again, its leftovers go with `torc up --clean`, which starts nothing.
    third.signal(nix::sys::signal::Signal::SIGKILL);
    third.wait_exit();
    let (ok, out, err) = cli(&[], &["up", "--clean"]);
    assert!(ok, "{out}{err}");
    let cleaned = out
        .lines()
        .find(|l| l.starts_with("torc up --clean: removed 2 namespace(s) left by killed racks"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        cleaned.contains(&format!("{prefix}bladerunner1")),
        "{cleaned}"
    );
    assert_rack_gone(dir.path(), &prefix);
}

#[test]
fn torc_up_without_the_privilege_runs_the_loopback_rack_and_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (base, port) = free_base();
    // As root, take the privilege away as a container would (the bounding set); as another
    // user it is missing already.
    let drop_caps: &[&str] = if nix::unistd::geteuid().is_root() {
        &["setpriv", "--bounding-set", "-sys_admin,-net_admin"]
    } else {
        &[]
    };
    let mut up = Up::start(TORC, drop_caps, &up_args(1, base, port, dir.path(), "auto"));
    let text = up.until_up();
    let o = base.octets();
    let node1 = Ipv4Addr::new(o[0], o[1], o[2], o[3] + 1);
    let containers: Vec<&str> = text.lines().filter(|l| l.contains("containers")).collect();
    assert_eq!(containers.len(), 1, "{text}");
    assert!(
        containers[0].starts_with("torc up: no containers on this rack: torc up runs without "),
        "{text}"
    );
    let about: Vec<&str> = text.lines().filter(|l| l.contains("namespace")).collect();
    assert_eq!(
        about,
        [format!(
            "torc up: cannot create network namespaces here (needs CAP_SYS_ADMIN and CAP_NET_ADMIN); running the loopback rack on {base}-{}",
            o[3] + 1
        )],
        "{text}"
    );
    assert!(text.contains(&node1.to_string()), "{text}");
    let env = env_for(dir.path(), &format!("https://{base}:{port}"));
    let (ok, out, err) = cli(&env, &["nodes"]);
    assert!(ok && out.contains(&node1.to_string()), "{out}{err}");
    // Its agents say they cannot give a task a namespace, and why; the loopback rack gives no
    // task an address of its own, and says why.
    let (ok, nodes, err) = cli(&env, &["nodes", "--json"]);
    assert!(ok, "{err}");
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&nodes).unwrap();
    assert!(!nodes.is_empty());
    for node in &nodes {
        let runtime = &node["runtime"];
        assert!(
            runtime["rack_network"] == false
                && (runtime["rack_network_note"].as_str())
                    .is_some_and(|note| note.starts_with("not privileged")),
            "{node}"
        );
    }
    let (ok, out, err) = cli(&env, &["run", "--network", "rack", "--", "sleep", "1"]);
    assert!(
        !ok && err.contains("422")
            && err.contains(
                "network: rack needs a rack network, and no node of this rack has a task_block"
            )
            && err.contains("as root or with CAP_NET_ADMIN"),
        "{out}{err}"
    );
    let (_, tasks, _) = cli(&env, &["tasks"]);
    assert!(!tasks.contains("sleep"), "nothing was launched: {tasks}");
    // Its agents run no containers (`--containerd off`), and `torc nodes` says so.
    let (ok, out, err) = cli(&env, &["nodes"]);
    assert!(
        ok && out.lines().next().unwrap().contains("  CONTAINERS  "),
        "{out}{err}"
    );
    assert!(
        out.lines().skip(1).all(|l| l.contains("  unavailable: ")),
        "{out}"
    );
    assert!(
        processes_mentioning(dir.path())
            .iter()
            .filter(|(_, cmd)| cmd.contains(" agent "))
            .all(|(_, cmd)| cmd.contains("--containerd off")),
        "{:?}",
        processes_mentioning(dir.path())
    );
    // `--containers on` is refused with the reason, before anything is made.
    let (other_base, other_port) = free_base();
    let other = tempfile::tempdir().unwrap();
    let mut on_args = up_args(1, other_base, other_port, other.path(), "loopback");
    on_args.extend(["--containers".to_string(), "on".to_string()]);
    let mut refused = Up::start(TORC, drop_caps, &on_args);
    let status = refused.wait_exit();
    let said = refused.said();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("torc: --containers on: torc up runs without "),
        "{said}"
    );
    let status = up.interrupt();
    assert!(status.success(), "{status}\n{}", up.said());
    let left = processes_mentioning(dir.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// `ctr` against the containerd at `socket`, in containerd namespace `namespace`; its stdout.
fn ctr(socket: &Path, namespace: &str, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ctr {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The containerd processes of the rack whose run files are in `run`.
fn containerds_of(run: &Path) -> Vec<(u32, String)> {
    processes_mentioning(&run.join("config.toml"))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("containerd --config"))
        .collect()
}

#[test]
fn torc_up_with_containers_runs_one_containerd_whose_namespaces_are_the_nodes_and_leaves_nothing() {
    if !namespaces_or_skip() || !containers_or_skip() {
        return;
    }
    let image = TestImage::get(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (base, port) = free_base();
    let mut args = up_args(1, base, port, dir.path(), "namespaces");
    args.extend(["--containers".to_string(), "on".to_string()]);
    let mut up = Up::start(TORC, &[], &args);
    let text = up.until_up();
    let prefix = rack_prefix(&text);
    let slug = prefix.trim_start_matches("torc-").trim_end_matches('-');
    let run = Path::new("/run/torc").join(slug).join("containerd");
    let socket = run.join("containerd.sock");
    assert!(
        text.lines()
            .any(|l| l.starts_with("  containers:  containerd ")
                && l.ends_with(&format!(
                    "at {}; agents in {prefix}<node>",
                    socket.display()
                ))),
        "{text}"
    );
    // One containerd, outside every rack namespace (in this test's), answering.
    let daemons = containerds_of(&run);
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    assert_eq!(
        namespace_id(&PathBuf::from(format!("/proc/{}/ns/net", daemons[0].0))),
        namespace_id(Path::new("/proc/self/ns/net"))
    );
    // Each agent works in the containerd namespace named as its node's network namespace.
    for node in ["wedge", "bladerunner1"] {
        let flags = format!(
            "--containerd {} --containerd-namespace {prefix}{node} ",
            socket.display()
        );
        let agents: Vec<(u32, String)> = without_forks(processes_mentioning(dir.path()))
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(&format!("--name {node} ")))
            .collect();
        assert!(
            agents.len() == 1 && agents[0].1.contains(&flags),
            "{flags}: {agents:?}"
        );
        assert!(netns_path(&format!("{prefix}{node}")).exists());
    }
    // What an agent keeps there (an image) lives in that namespace, under the state directory.
    let node_ns = format!("{prefix}bladerunner1");
    ctr(
        &socket,
        &node_ns,
        &["images", "import", &image.oci_archive.display().to_string()],
    );
    assert!(ctr(&socket, &node_ns, &["namespaces", "ls", "-q"]).contains(&node_ns));
    assert!(dir.path().join("containerd").is_dir());

    let status = up.interrupt();
    assert!(
        status.success(),
        "{status}
{}",
        up.said()
    );
    assert_eq!(containerds_of(&run), []);
    assert!(
        !run.exists() && !run.parent().unwrap().exists(),
        "{}",
        run.display()
    );
    assert_rack_gone(dir.path(), &prefix);

    // Again on the same state directory: the image is still there. Killed, the rack's
    // containerd outlives it, and `torc up --clean` ends it.
    let mut again = Up::start(TORC, &[], &args);
    again.until_up();
    assert!(
        ctr(&socket, &node_ns, &["images", "ls", "-q"]).contains(torc_test_utils::TEST_IMAGE),
        "the image survived the restart"
    );
    again.signal(nix::sys::signal::Signal::SIGKILL);
    again.wait_exit();
    assert_eq!(containerds_of(&run).len(), 1, "left behind by the kill");
    let (ok, out, err) = cli(&[], &["up", "--clean"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "torc up --clean: removed the containerd of the killed rack {prefix}*"
        ))),
        "{out}"
    );
    assert_eq!(containerds_of(&run), []);
    assert!(!run.parent().unwrap().exists(), "{}", run.display());
    assert_rack_gone(dir.path(), &prefix);
}

/// Runs `cmd` until it succeeds and its stdout contains `want`, for up to 60 s.
/// The README's lines against the rack whose controller's endpoint is `base` (all from the
/// host): `dig` (whose answer for bladerunner1 is `node1`), etcdctl, the influx shell, the
/// seed's 0.8 query with curl, each refused without credentials or the rack CA.
fn readme_checks(env: &[(&str, String)], base: Ipv4Addr, node1: Ipv4Addr, ca: &Path) {
    let secret = |name: &str| {
        let (ok, out, err) = cli(env, &["secret", "get", name]);
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    eventually(
        "dig for a node",
        || {
            let mut c = Command::new("dig");
            c.args([&format!("@{base}"), "bladerunner1.homer.ave", "+short"]);
            c
        },
        &node1.to_string(),
    );
    let kv_root = secret("kv-root");
    eventually(
        "etcdctl as root",
        || {
            let mut c = Command::new("etcdctl");
            c.env("ETCDCTL_API", "3")
                .arg(format!("--endpoints=https://{base}:2379"))
                .arg(format!("--cacert={}", ca.display()))
                .arg(format!("--user=root:{kv_root}"))
                .args(["get", "/torc", "--prefix", "--keys-only"]);
            c
        },
        "/torc/machines/bladerunner1",
    );
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{base}:2379"))
        .arg(format!("--cacert={}", ca.display()))
        .args(["get", "/torc", "--prefix", "--keys-only"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "etcd's auth is on");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{base}:2379"))
        .arg(format!("--user=root:{kv_root}"))
        .args([
            "--dial-timeout=2s",
            "get",
            "/torc",
            "--prefix",
            "--keys-only",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "without the rack CA, etcdctl refuses the certificate"
    );
    let (ok, services, err) = cli(env, &["services", "--json"]);
    assert!(ok, "{err}");
    let services: serde_json::Value = serde_json::from_str(&services).unwrap();
    let influxdb = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "influxdb")
        .expect("influxdb runs");
    let influx = influxdb["ip"].as_str().expect("influxdb runs").to_string();
    // `ip` is where the host reaches it: in the rack's loopback block, never a rack address
    // (which, on namespaces, is `rack_ip`).
    let o = base.octets();
    assert!(
        influx.starts_with(&format!("{}.{}.{}.", o[0], o[1], o[2])),
        "{influxdb}"
    );
    if node1.octets()[..2] == [198, 18] {
        assert!(
            influxdb["rack_ip"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("198.18.0.")),
            "{influxdb}"
        );
    } else {
        assert!(influxdb.get("rack_ip").is_none(), "{influxdb}");
    }
    let admin = secret("tsdb-admin");
    eventually(
        "the influx shell over HTTPS",
        || {
            let mut c = Command::new("influx");
            c.env("SSL_CERT_FILE", ca)
                .args(["-ssl", "-host", &influx, "-username", "admin", "-password"])
                .arg(&admin)
                .args(["-database", "torc", "-execute", "SHOW MEASUREMENTS"]);
            c
        },
        "machine",
    );
    let out = Command::new("influx")
        .args(["-ssl", "-host", &influx, "-execute", "SHOW DATABASES"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("x509"),
        "without the rack CA, influx refuses the certificate: {said}"
    );
    let seed = eventually(
        "the seed's 0.8 query with curl",
        || {
            let mut c = Command::new("curl");
            c.args(["-s", "--fail", "--cacert"])
                .arg(ca)
                .args(["-G", &format!("https://{influx}:8086/db/torc/series")])
                .args(["--data-urlencode", "u=admin", "--data-urlencode"])
                .arg(format!("p={admin}"))
                .args([
                    "--data-urlencode",
                    "q=select * from machine where hostname = 'bladerunner1' limit 1000",
                ]);
            c
        },
        "sequence_number",
    );
    assert!(seed.contains("cpu_usage_user"), "{seed}");
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(ca)
        .args(["-G", &format!("https://{influx}:8086/db/torc/series")])
        .args(["--data-urlencode", "q=list series"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Invalid database/username/password"),
        "0.8's refusal without credentials"
    );
}
