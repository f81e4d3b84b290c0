//! `torc up`: a whole rack on one machine. The controller and every node's agent run as child
//! processes, each node on its own loopback address (controller `127.0.3.20`, compute nodes
//! `.21`, `.22`, ...) so that every node can use the standard ports. It stays in the foreground
//! and, on Ctrl-C or SIGTERM, stops everything it started.
//!
//! The rack is secure as a real one: `torc up` creates a rack CA and two tokens (admin, join)
//! in its state directory, which is private to the user (0700, under `$XDG_STATE_HOME` or
//! `~/.local/state`, never a predictable path in a world-writable directory). The controller
//! serves TLS with a certificate from that CA; agents join with the join token and get their
//! own credential and certificate.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use torc_config::RackConfig;
use torc_types::{NodeName, NodeType};

use crate::process::{init_tracing, shutdown_signal};

/// The sample rack: the seed's wedge and bladerunners.
pub const SAMPLE_CONFIG: &str = include_str!("../../../config/rack.yaml");

#[derive(Args)]
pub struct UpArgs {
    /// Number of compute nodes (bladerunner1..N) when no --config is given.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// A rack config to run instead of the sample one.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Keep the rack's state here, so that it survives a restart. By default the user's own
    /// state directory for it (`~/.local/state/torc/up`) is wiped at start and used.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The controller's address; compute nodes take the next ones (sample config only).
    #[arg(long, default_value = "127.0.3.20")]
    ip_base: Ipv4Addr,
    /// API port of the controller.
    #[arg(long, default_value_t = 3000)]
    api_port: u16,
}

/// The admin token's file in a local rack's state directory (in `credentials/`, 0700).
pub const ADMIN_TOKEN: &str = "credentials/admin.token";
/// The join token's file.
pub const JOIN_TOKEN: &str = "credentials/join.token";
/// The rack CA's directory.
pub const CA_DIR: &str = "pki";

/// Where `torc up` keeps its state when not told otherwise: for root `/var/lib/torc/up`
/// (tasks run as `nobody` and must reach their sandboxes, which a home directory of 0700 would
/// hide), for anyone else the user's own state directory (`$XDG_STATE_HOME/torc/up`, else
/// `~/.local/state/torc/up`).
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/torc/up"));
    }
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_STATE_HOME nor HOME is set; give --data-dir")?;
            PathBuf::from(home).join(".local").join("state")
        }
    };
    Ok(base.join("torc").join("up"))
}

/// The sample config with `compute` compute nodes and addresses from `base` up.
pub fn sample_config(compute: usize, base: Ipv4Addr) -> String {
    let mut nodes = String::from("nodes:\n");
    let ip = |i: usize| Ipv4Addr::from(u32::from(base) + i as u32);
    nodes.push_str(&format!(
        "  - name: wedge\n    ip: {}\n    type: master\n    function: controller\n",
        ip(0)
    ));
    for i in 1..=compute {
        nodes.push_str(&format!(
            "  - name: bladerunner{i}\n    ip: {}\n    type: slave\n    function: compute\n",
            ip(i)
        ));
    }
    // Replace the sample's `nodes:` block (up to the next top-level line) with ours.
    let mut out = String::new();
    let mut in_nodes = false;
    for line in SAMPLE_CONFIG.lines() {
        if line.starts_with("nodes:") {
            in_nodes = true;
            out.push_str(&nodes);
            continue;
        }
        if in_nodes {
            let top_level = !line.is_empty() && !line.starts_with(' ') && !line.starts_with('#');
            let comment_before_next = line.starts_with('#');
            if top_level || comment_before_next {
                in_nodes = false;
                out.push('\n');
            } else {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

struct Child {
    label: String,
    child: tokio::process::Child,
}

/// Starts `torc <args>` as a child that gets SIGTERM if we die, logging to `log`.
fn spawn(label: &str, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // If `torc up` dies, its children are told to stop.
    // SAFETY: pre_exec runs between fork and exec; prctl is an async-signal-safe system call
    // that allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd)
        .spawn()
        .with_context(|| format!("cannot start the {label}"))?;
    Ok(Child {
        label: label.to_string(),
        child,
    })
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    init_tracing("warn");
    // A current-thread runtime: children are spawned from this thread, which lives as long as
    // the rack (their PDEATHSIG is tied to it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(up(args))
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            let d = default_data_dir()?;
            if d.exists() {
                std::fs::remove_dir_all(&d).with_context(|| {
                    format!("cannot wipe the old local rack in {}", d.display())
                })?;
            }
            d
        }
    };
    // 0711: tasks of the node's task user reach their own sandboxes under `agents/`; they
    // list nothing, and the secrets sit in 0700 directories (`credentials/`, `pki/`,
    // `controller/`) or in 0600 files.
    torc_tls::files::own_private_dir(&data_dir)?;
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
    let logs = data_dir.join("logs");
    torc_tls::files::private_dir(&logs)?;

    let config_path = match &args.config {
        Some(p) => p.clone(),
        None => {
            let p = data_dir.join("rack.yaml");
            std::fs::write(&p, sample_config(args.nodes, args.ip_base))?;
            p
        }
    };
    let config = RackConfig::load(&config_path)?;
    let master = config
        .nodes
        .iter()
        .find(|n| n.node_type == NodeType::Master)
        .context("the rack config has no `type: master` node to run the controller on")?;
    let controller_url = format!("https://{}:{}", master.ip, args.api_port);

    // The rack CA and the tokens, made once per state directory.
    let ca_dir = data_dir.join(CA_DIR);
    if !ca_dir.join("ca.pem").exists() {
        torc_tls::pki::Ca::create(&ca_dir, &config.name)?;
    }
    let ca_pem = ca_dir.join("ca.pem");
    let token_path = data_dir.join(ADMIN_TOKEN);
    let join_path = data_dir.join(JOIN_TOKEN);
    for path in [&token_path, &join_path] {
        if !path.exists() {
            torc_tls::files::write_secret(path, &(torc_controller::fresh_token() + "\n"))?;
        }
    }
    let token = torc_tls::files::read_secret(&token_path)?;

    let s = |p: &Path| p.display().to_string();
    println!(
        "torc up: rack {:?} with {} nodes, state in {}",
        config.name,
        config.nodes.len(),
        data_dir.display()
    );
    let mut children = vec![spawn(
        "controller",
        &[
            "controller".into(),
            "--config".into(),
            s(&config_path),
            "--data-dir".into(),
            s(&data_dir.join("controller")),
            "--listen".into(),
            format!("{}:{}", master.ip, args.api_port),
            "--admin-token-file".into(),
            s(&token_path),
            "--join-token-file".into(),
            s(&join_path),
            "--ca-dir".into(),
            s(&ca_dir),
        ],
        &logs.join("controller.log"),
    )?];
    for node in &config.nodes {
        let mut a = vec![
            "agent".into(),
            "--controller".into(),
            controller_url.clone(),
            "--name".into(),
            node.name.to_string(),
            "--ip".into(),
            node.ip.to_string(),
            "--data-dir".into(),
            s(&data_dir.join("agents").join(node.name.as_str())),
            "--join-token-file".into(),
            s(&join_path),
            "--ca".into(),
            s(&ca_pem),
            "--kill-tasks-on-exit".into(),
        ];
        if let Some(f) = &node.function {
            a.extend(["--function".into(), f.clone()]);
        }
        children.push(spawn(
            &format!("agent of {}", node.name),
            &a,
            &logs.join(format!("agent-{}.log", node.name)),
        )?);
    }

    let client =
        torc_client::Client::from_files(controller_url.clone(), Some(token), Some(&ca_pem))?;
    let expected: Vec<NodeName> = config.nodes.iter().map(|n| n.name.clone()).collect();
    let result = tokio::select! {
        r = wait_for_nodes(&client, &expected, &mut children, &logs) => r,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        stop(children).await;
        return Err(e);
    }
    println!();
    println!("Rack is up.");
    println!(
        "  UI:          {controller_url}/  (log in with the admin token; the browser must trust the rack CA)"
    );
    println!("  API:         {controller_url}/api/v1/nodes");
    println!("  admin token: {}", token_path.display());
    println!("  rack CA:     {}", ca_pem.display());
    println!("  logs:        {}", logs.display());
    println!(
        "  curl:  curl --cacert {} -H \"Authorization: Bearer $(cat {})\" {controller_url}/api/v1/nodes",
        ca_pem.display(),
        token_path.display()
    );
    if args.data_dir.is_some()
        || args.api_port != 3000
        || args.ip_base != Ipv4Addr::new(127, 0, 3, 20)
    {
        println!(
            "  for the CLI: export TORC_CONTROLLER={controller_url} TORC_TOKEN_FILE={} TORC_CA={}",
            token_path.display(),
            ca_pem.display()
        );
    }
    println!("Try `torc nodes`, `torc run -- sleep 60`, `torc tasks`. Ctrl-C stops the rack.");

    // Stay up until told to stop; report children that die on their own.
    let mut watched = children;
    loop {
        let died = async {
            loop {
                for (i, c) in watched.iter_mut().enumerate() {
                    if let Ok(Some(status)) = c.child.try_wait() {
                        return (i, status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            (i, status) = died => {
                let c = watched.remove(i);
                eprintln!("torc up: the {} exited ({status}); see {}", c.label, logs.display());
                if c.label == "controller" {
                    stop(watched).await;
                    bail!("the controller stopped; the rack is down");
                }
            }
            _ = shutdown_signal() => break,
        }
    }
    println!("\nStopping the rack...");
    stop(watched).await;
    println!("Stopped.");
    Ok(())
}

async fn wait_for_nodes(
    client: &torc_client::Client,
    expected: &[NodeName],
    children: &mut [Child],
    logs: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = std::collections::BTreeSet::new();
    loop {
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                bail!(
                    "the {} exited during start-up ({status}); see its log in {}",
                    c.label,
                    logs.display()
                );
            }
        }
        if let Ok(nodes) = client.nodes().await {
            for n in nodes.iter().filter(|n| n.active) {
                if shown.insert(n.name.clone()) {
                    println!(
                        "  node {:<14} {:<12} {:<10} registered ({}/{})",
                        n.name.as_str(),
                        n.ip.to_string(),
                        n.node_function,
                        shown.len(),
                        expected.len()
                    );
                }
            }
            if expected.iter().all(|e| shown.contains(e)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let missing: Vec<&str> = expected
                .iter()
                .filter(|e| !shown.contains(*e))
                .map(|e| e.as_str())
                .collect();
            bail!(
                "nodes did not register within 60 s: {}; see the logs in {}",
                missing.join(", "),
                logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops agents first (they stop their tasks), then the controller; kills what lingers.
async fn stop(children: Vec<Child>) {
    let (controller, agents): (Vec<Child>, Vec<Child>) =
        children.into_iter().partition(|c| c.label == "controller");
    for group in [agents, controller] {
        for c in &group {
            if let Some(pid) = c.child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for mut c in group {
            match tokio::time::timeout(Duration::from_secs(15), c.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("torc up: the {} did not stop in 15 s; killing it", c.label);
                    let _ = c.child.kill().await;
                }
            }
        }
    }
}
