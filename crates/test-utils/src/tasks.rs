//! Tasks for process-level tests: a small Python program as a task pinned to a node, and what
//! a task printed.

use std::time::Duration;

use torc_api::{LogQuery, LogStream, TaskView};
use torc_client::Client;
use torc_types::{Resources, TaskId, TaskSpec, TaskState};

use crate::wait_for;

/// The system's Python, which a node's task user (`nobody`) can run (not a user's pyenv shim).
pub const PYTHON: &str = "/usr/bin/python3";

/// A TCP server for [`python_task`] (or a service's `args: [-c, ...]`): listens on its task's
/// address and first port (`HOST`, `PORT`), prints `listening`, and answers each connection,
/// once it has read it to the end, with `got N bytes from PEER on NODE`. It has no `$`, which
/// a rack config would take for a variable.
pub const COUNTING_SERVER: &str = r#"
import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((os.environ["HOST"], int(os.environ["PORT"])))
s.listen(8)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
    c.sendall(f"got {n} bytes from {peer[0]} on {os.environ['TORC_NODE']}\n".encode())
    c.close()
"#;

/// `python3 -c script args...` as task `name` on node `node`, small, killed 1 s after SIGTERM.
pub fn python_task(name: &str, node: &str, script: &str, args: &[String]) -> TaskSpec {
    let mut spec = TaskSpec::new(name.parse().expect("a task name"), PYTHON);
    spec.args = ["-c".to_string(), script.to_string()]
        .into_iter()
        .chain(args.iter().cloned())
        .collect();
    spec.resources = Resources::new(0.1, 32.0, 0.0);
    spec.constraints.node_name = Some(node.parse().expect("a node name"));
    spec.kill_grace_ms = 1_000;
    spec
}

/// Checks the tail of the output of a task that printed the numbers up to `last`, one a
/// line (`seq`): every line after the first (which a tail may cut) is the one before plus 1,
/// so none is missing or repeated, and the last one is `last`.
pub fn assert_counted_tail(tail: &str, last: u64) {
    let numbers: Vec<u64> = tail
        .lines()
        .skip(1)
        .map(|l| {
            l.parse()
                .unwrap_or_else(|_| panic!("{l:?} is not a number"))
        })
        .collect();
    assert_eq!(
        numbers.last(),
        Some(&last),
        "the tail ends with the last line"
    );
    if let Some(w) = numbers.windows(2).find(|w| w[1] != w[0] + 1) {
        panic!(
            "line {} follows line {}: lines missing or repeated",
            w[1], w[0]
        );
    }
}

/// The last 4 KiB a task wrote to its stdout (empty when it cannot be read yet).
pub async fn stdout_of(client: &Client, id: &TaskId) -> String {
    let query = LogQuery {
        stream: LogStream::Stdout,
        tail: Some(4096),
        offset: None,
    };
    client
        .logs(id, &query)
        .await
        .map(|c| c.data)
        .unwrap_or_default()
}

/// The rack config's system services for a plain state store and statesync on the controller
/// node: `torc kv` without TLS or auth on `$IP:2379`, and statesync writing to it every
/// `interval_ms` (and right after each change of the switch it watches). A `healthcheck:`
/// block; a test adds its own groups after it.
pub fn plain_state_store(interval_ms: u64) -> String {
    let statesync = format!(
        r#"    - name: statesync
      command: torc
      args: [statesync, --endpoints, "http://$IP:2379", --interval-ms, "{interval_ms}"]
      credentials: {{api_access: viewer}}
      memory: 32
      cpu: 0.1
      node_function: controller
      dependent_service: etcd
"#
    );
    system_services(&[
        r#"    - name: etcd
      command: torc
      args: [kv, --listen, "$IP:2379", --data-dir, "$DATA_DIR"]
      memory: 64
      cpu: 0.2
      node_function: controller
      health:
        tcp: "$IP:2379"
        interval_in_seconds: 1
"#,
        &statesync,
    ])
}

/// The rack's `dns` system service (`torc dns` on the controller node), as the sample rack
/// runs it: one item of a `system_services` list (see [`system_services`]).
pub const DNS_SYSTEM_SERVICE: &str = r#"    - name: dns
      command: torc
      args: [dns, --listen, "$IP:53"]
      privileged: true
      credentials: {api_access: viewer}
      memory: 32
      cpu: 0.2
      node_function: controller
"#;

/// A rack config's `healthcheck:` block with these `system_services` items (each indented as
/// [`DNS_SYSTEM_SERVICE`] is); a test adds its other sections after it.
pub fn system_services(items: &[&str]) -> String {
    let mut yaml = String::from("\nhealthcheck:\n  system_services:\n");
    for item in items {
        yaml.push_str(item);
    }
    yaml
}

/// Waits until task `id` runs, asking `client` every 25 ms, for at most `timeout`; its view then.
pub async fn wait_running(
    client: &Client,
    id: &TaskId,
    timeout: Duration,
) -> anyhow::Result<TaskView> {
    wait_for(&format!("task {id} to run"), timeout, || async {
        client
            .task(id)
            .await
            .ok()
            .filter(|t| t.state == TaskState::Running)
    })
    .await
}
