//! `torc up`: a whole rack on one machine. The controller and every node's agent run as child
//! processes, each node on its own loopback address (controller `127.0.3.20`, compute nodes
//! `.21`, `.22`, ...) so that every node can use the standard ports. It stays in the foreground
//! and, on Ctrl-C or SIGTERM, stops everything it started.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use torc_config::RackConfig;
use torc_types::NodeName;

use crate::init_tracing;

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
    /// Keep the rack's state here, so that it survives a restart. By default a fresh
    /// directory under the system's temp dir is used and wiped at start.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The controller's address; compute nodes take the next ones (sample config only).
    #[arg(long, default_value = "127.0.3.20")]
    ip_base: Ipv4Addr,
    /// API port of the controller.
    #[arg(long, default_value_t = 3000)]
    api_port: u16,
}

/// Where `torc up` keeps its state when not told otherwise.
pub fn default_data_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("torc-up-{uid}"))
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

/// A fresh random token (128 bits).
fn new_token() -> String {
    format!(
        "{:016x}{:016x}",
        torc_types::random_u64(),
        torc_types::random_u64()
    )
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
    // SAFETY: prctl is async-signal-safe. If `torc up` dies, its children are told to stop.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
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
            let d = default_data_dir();
            if d.exists() {
                std::fs::remove_dir_all(&d).with_context(|| {
                    format!("cannot wipe the old local rack in {}", d.display())
                })?;
            }
            d
        }
    };
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

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
        .find(|n| n.node_type.as_str() == "master")
        .context("the rack config has no `type: master` node to run the controller on")?;
    let controller_url = format!("http://{}:{}", master.ip, args.api_port);

    let token_path = data_dir.join("token");
    if !token_path.exists() {
        std::fs::write(&token_path, new_token() + "\n")?;
        std::fs::set_permissions(
            &token_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
    }
    let token = crate::read_token(&token_path)?;

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
            "--token-file".into(),
            s(&token_path),
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
            "--token-file".into(),
            s(&token_path),
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

    let client = torc_client::Client::new(controller_url.clone(), Some(token));
    let expected: Vec<NodeName> = config.nodes.iter().map(|n| n.name.clone()).collect();
    let result = tokio::select! {
        r = wait_for_nodes(&client, &expected, &mut children, &logs) => r,
        _ = crate::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        stop(children).await;
        return Err(e);
    }
    println!();
    println!("Rack is up.");
    println!("  UI:    {controller_url}/");
    println!("  API:   {controller_url}/api/v1/nodes");
    println!("  token: {}", token_path.display());
    println!("  logs:  {}", logs.display());
    if args.data_dir.is_some()
        || args.api_port != 3000
        || args.ip_base != Ipv4Addr::new(127, 0, 3, 20)
    {
        println!(
            "  for the CLI: export TORC_CONTROLLER={controller_url} TORC_TOKEN_FILE={}",
            token_path.display()
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
            _ = crate::shutdown_signal() => break,
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
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
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
