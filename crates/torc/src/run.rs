//! `torc run`: a task from the command line, a process or (with `--image`) a container, checked
//! here so that a mistake is named before anything is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use torc_types::{
    Constraints, NodeName, NodeType, Resources, ServiceName, TaskNetwork, TaskSpec, TaskState,
};

use crate::cli::{Target, print_json, print_task_line, runtime};
use crate::process::{NotKeyValue, key_value};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    target: Target,
    /// The task's name (default: the command's file name).
    #[arg(long)]
    name: Option<ServiceName>,
    /// CPUs the task needs.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory the task needs, MiB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Disk the task needs, MiB.
    #[arg(long, default_value_t = 0.0)]
    disk: f64,
    /// How many ports to assign (`PORT`, `PORT0`, ...).
    #[arg(long, default_value_t = 0)]
    ports: u16,
    /// Run on this node.
    #[arg(long)]
    node: Option<NodeName>,
    /// Run on a node of this type (master, slave).
    #[arg(long)]
    node_type: Option<NodeType>,
    /// Run on a node with this function (controller, compute, ...).
    #[arg(long)]
    node_function: Option<String>,
    /// Environment variables, `KEY=VALUE`.
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Wait until the task runs (or ends) and print its final placement.
    #[arg(long)]
    wait: bool,
    /// Run as the agent's own user (root on a node) instead of the node's task user.
    #[arg(long)]
    privileged: bool,
    /// `node` or `host` (share the node's address, ports from its range), `rack` (an address
    /// of its own from the node's task block, routed by the switch) or, with --image, `none`
    /// (loopback only).
    #[arg(long, default_value = "node", value_parser = parse_run_network)]
    network: RunNetwork,
    /// Run this image (`busybox`, `docker.io/torc/busybox:1`, `127.0.0.1:5000/x@sha256:…`)
    /// on a node whose agent runs containers; the command after `--` then replaces the
    /// image's entrypoint and is optional.
    #[arg(long)]
    image: Option<torc_types::ImageRef>,
    /// A bind mount for the image, `HOST:CONTAINER[:ro]` (HOST absolute or `$DATA_DIR[/sub]`);
    /// repeated.
    #[arg(long = "volume", short = 'v', value_parser = parse_volume)]
    volumes: Vec<torc_types::Volume>,
    /// A `docker run` option for the image, e.g. `--param '--ipc=host'`; repeated.
    #[arg(long = "param", allow_hyphen_values = true)]
    params: Vec<String>,
    /// The command and its arguments, after `--` (optional with --image).
    #[arg(required_unless_present = "image", last = true)]
    command: Vec<String>,
}

/// `torc run --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunNetwork {
    Node,
    Rack,
    /// Loopback only (an image's `--net=none`).
    None,
}

fn parse_run_network(s: &str) -> Result<RunNetwork, String> {
    match s {
        "node" | "host" => Ok(RunNetwork::Node),
        "rack" | "torc" => Ok(RunNetwork::Rack),
        "none" => Ok(RunNetwork::None),
        _ => Err(format!(
            "unknown network {s:?}, expected `node` (or `host`), `rack` or `none` (with --image)"
        )),
    }
}

fn parse_volume(s: &str) -> Result<torc_types::Volume, torc_types::VolumeError> {
    torc_types::Volume::parse_docker(s)
}

fn parse_env(s: &str) -> Result<(String, String), NotKeyValue> {
    key_value("KEY", s)
}

/// A service name from a command's file name: lowercased, other characters as '-'.
fn name_from_command(cmd: &str) -> anyhow::Result<ServiceName> {
    let base = cmd.rsplit('/').next().unwrap_or(cmd);
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').chars().take(40).collect();
    if name.is_empty() {
        name = "task".into();
    }
    ServiceName::new(name).context("cannot derive a task name from the command; pass --name")
}

/// The task `torc run` asks for, checked here so that a mistake is named before anything is
/// sent.
fn run_spec(args: &mut RunArgs) -> anyhow::Result<TaskSpec> {
    let mut command = std::mem::take(&mut args.command).into_iter();
    let program = command.next();
    if args.image.is_none() {
        let container_only = [
            (!args.volumes.is_empty(), "--volume"),
            (!args.params.is_empty(), "--param"),
            (args.network == RunNetwork::None, "--network none"),
        ];
        if let Some((_, flag)) = container_only.iter().find(|(given, _)| *given) {
            anyhow::bail!(
                "{flag} is for a container: give --image too (a process task shares the node's network or has a rack address)"
            );
        }
    }
    let name = match (args.name.take(), &program, &args.image) {
        (Some(n), _, _) => n,
        (None, Some(program), _) => name_from_command(program)?,
        (None, None, Some(image)) => name_from_command(image.repository())?,
        (None, None, None) => anyhow::bail!("no command given after --"),
    };
    let mut spec = TaskSpec::new(name, program.unwrap_or_default());
    spec.args = command.collect();
    spec.env = std::mem::take(&mut args.env)
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    spec.resources = Resources::new(args.cpus, args.mem, args.disk);
    spec.ports = args.ports;
    spec.privileged = args.privileged;
    spec.network = match args.network {
        RunNetwork::Rack => TaskNetwork::Rack,
        RunNetwork::Node | RunNetwork::None => TaskNetwork::Node,
    };
    spec.constraints = Constraints {
        node_name: args.node.take(),
        node_type: args.node_type.take(),
        node_function: args.node_function.take(),
    };
    if let Some(image) = args.image.take() {
        let mut container = torc_types::ContainerSpec::new(image);
        container.volumes = std::mem::take(&mut args.volumes);
        container.options.no_network = args.network == RunNetwork::None;
        spec.container = Some(container);
        if !args.params.is_empty() {
            let text = args.params.join(" ");
            torc_types::Parameters::parse(&text)
                .and_then(|p| p.apply_to(&mut spec))
                .with_context(|| format!("--param {text:?}"))?;
        }
    }
    spec.validate()?;
    Ok(spec)
}

pub fn run(mut args: RunArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let spec = run_spec(&mut args)?;
    let rt = runtime()?;
    let mut task = rt.block_on(client.launch(&spec))?;
    if args.wait {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while matches!(task.state, TaskState::Pending | TaskState::Staging)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
            task = rt.block_on(client.task(&task.id))?;
        }
    }
    if args.target.json() {
        return print_json(&task);
    }
    print_task_line(&task);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        run: RunArgs,
    }

    fn spec(argv: &[&str]) -> anyhow::Result<TaskSpec> {
        let mut args = Run::try_parse_from(std::iter::once("run").chain(argv.iter().copied()))?.run;
        run_spec(&mut args)
    }

    fn error(argv: &[&str]) -> String {
        format!("{:#}", spec(argv).unwrap_err())
    }

    #[test]
    fn an_image_needs_no_command_and_carries_its_volumes_params_and_network() {
        let s = spec(&["--image", "busybox"]).unwrap();
        let container = s.container.as_ref().unwrap();
        assert_eq!(container.image.as_str(), "docker.io/library/busybox:latest");
        assert_eq!((s.name.as_str(), s.command.as_str()), ("busybox", ""));
        assert!(s.args.is_empty());

        let s = spec(&[
            "--image",
            "torc/busybox:1",
            "--volume",
            "/srv/in:/in:ro",
            "-v",
            "$DATA_DIR:/data",
            "--param",
            "--ipc=host",
            "--param",
            "--user 1000:1000 --workdir=/tmp",
            "--network",
            "none",
            "--",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap();
        let c = s.container.as_ref().unwrap();
        assert_eq!(c.image.as_str(), "docker.io/torc/busybox:1");
        let volumes: Vec<(&str, &str, bool)> = (c.volumes.iter())
            .map(|v| (v.host_path(), v.container_path(), v.read_only()))
            .collect();
        assert_eq!(
            volumes,
            [("/srv/in", "/in", true), ("$DATA_DIR", "/data", false)]
        );
        assert!(c.options.host_ipc && c.options.no_network);
        assert_eq!(c.options.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.options.workdir.as_deref(), Some("/tmp"));
        assert_eq!((s.name.as_str(), s.command.as_str()), ("sh", "sh"));
        assert_eq!(s.args, ["-c", "echo hi"]);
        assert_eq!(s.network, TaskNetwork::Node);

        let s = spec(&["--image", "busybox", "--network", "rack"]).unwrap();
        assert_eq!(s.network, TaskNetwork::Rack);
        let s = spec(&["--network", "host", "--", "sleep", "1"]).unwrap();
        assert!(s.container.is_none() && s.network == TaskNetwork::Node);
    }

    #[test]
    fn mistakes_are_named_before_anything_is_sent() {
        assert!(
            error(&["--volume", "/a:/b"]).contains("required arguments were not provided"),
            "neither a command nor an image"
        );
        for (argv, want) in [
            (
                &["--volume", "/a:/b", "--", "sleep", "1"][..],
                "--volume is for a container: give --image too",
            ),
            (
                &["--param", "--ipc=host", "--", "sleep", "1"],
                "--param is for a container: give --image too",
            ),
            (
                &["--network", "none", "--", "sleep", "1"],
                "--network none is for a container: give --image too",
            ),
            (
                &["--image", "busybox", "--param", "-p 80:80"],
                "ports are not published",
            ),
            (
                &["--image", "busybox", "--param", "--foo"],
                "unknown docker run option --foo",
            ),
            (
                &["--image", "busybox", "--param", "--memory=1g"],
                "set memory: and cpu:",
            ),
            (
                &[
                    "--image",
                    "busybox",
                    "--network",
                    "rack",
                    "--param",
                    "--net=none",
                ],
                "--param \"--net=none\"",
            ),
            (&["--image", "Not An Image"], "Not An Image"),
            (&["--image", "busybox", "--volume", "/a"], "/a"),
            (&["--image", "busybox", "--volume", "/a:/b:rx"], "rx"),
            (
                &["--network", "bridge", "--", "x"],
                "unknown network \"bridge\"",
            ),
        ] {
            let e = error(argv);
            assert!(e.contains(want), "{argv:?}: {e}");
        }
    }
}
