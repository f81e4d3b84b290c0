//! Tasks for process-level tests: a small Python program as a task pinned to a node, and what
//! a task printed.

use torc_api::{LogQuery, LogStream};
use torc_client::Client;
use torc_types::{Resources, TaskId, TaskSpec};

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
