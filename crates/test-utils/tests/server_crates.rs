//! No workspace crate that only talks to a server depends on a server crate, directly or
//! through another crate. Run with `cargo test -p torc-test-utils --test server_crates`; a
//! failure names each crate that reaches a server and the chain of dependencies that does
//! (e.g. `torc-controller -> torc-kv`).
//!
//! The server crates are [`SERVERS`]: the stores and the DNS server the roles run (each with its
//! storage, log, auth and serving loops). Their clients talk to them through the wire crates
//! (`torc-kv-client` for the etcd v3 API, `torc-api` for the DNS snapshot, HTTP for tsdb), so
//! that the controller, statesync, the collector and the rest build without them. Only
//! [`RUNS_SERVERS`] (the binary, whose roles serve them) may depend on one. Dev-dependencies are
//! free (a crate's tests may run a real server) and so are build-dependencies; a server crate
//! may not depend on another server either.
//!
//! The graph is `cargo metadata --no-deps`' (the workspace's own manifests, read offline): the
//! normal dependencies of every workspace crate, on any target.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

/// The server crates: what a client reaches only over the network.
const SERVERS: &[&str] = &["torc-kv", "torc-dns", "torc-tsdb"];

/// Crates that run servers, and so may depend on them: the `torc` binary (`torc kv`,
/// `torc dns`, `torc tsdb`).
const RUNS_SERVERS: &[&str] = &["torc"];

/// Workspace crate → the workspace crates it depends on as a normal dependency.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The workspace's dependency graph from `cargo metadata --no-deps`.
fn workspace_graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&root)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let packages = metadata["packages"].as_array().expect("a packages array");
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .expect("a dependencies array")
                .iter()
                // `kind` is null for a normal dependency, "dev" or "build" otherwise.
                .filter(|dep| dep["kind"].is_null())
                .filter_map(|dep| dep["name"].as_str())
                .filter(|name| names.contains(name))
                .map(str::to_owned)
                .collect();
            (package["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// For each crate that may not depend on a server but does: the shortest chain of dependencies
/// from it to a server, as `a -> b -> server`.
fn server_dependencies(graph: &Graph, servers: &[&str], exempt: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for start in graph.keys().filter(|k| !exempt.contains(&k.as_str())) {
        // Breadth first, so the chain shown is a shortest one.
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start.as_str()]);
        while let Some(at) = queue.pop_front() {
            if at != start && servers.contains(&at) {
                let mut chain = vec![at];
                while let Some(&prev) = came_from.get(chain.last().unwrap()) {
                    chain.push(prev);
                }
                chain.reverse();
                found.push(chain.join(" -> "));
                break;
            }
            for next in graph.get(at).into_iter().flatten() {
                if next != start && !came_from.contains_key(next.as_str()) {
                    came_from.insert(next.as_str(), at);
                    queue.push_back(next);
                }
            }
        }
    }
    found
}

#[test]
fn only_the_binary_depends_on_a_server_crate() {
    let graph = workspace_graph();
    for name in SERVERS
        .iter()
        .chain(RUNS_SERVERS)
        .chain(&["torc-controller"])
    {
        assert!(
            graph.contains_key(*name),
            "{name} is not a workspace crate: update SERVERS / RUNS_SERVERS"
        );
    }
    let found = server_dependencies(&graph, SERVERS, RUNS_SERVERS);
    println!(
        "{} crates checked; servers {SERVERS:?}, used only by {RUNS_SERVERS:?}",
        graph.len()
    );
    assert!(
        found.is_empty(),
        "crates that depend on a server crate ({SERVERS:?}) but only talk to it (depend on \
         its client or wire crate instead, or add the crate to RUNS_SERVERS if it runs the \
         server):\n{}",
        found.join("\n")
    );
}

/// The checker itself: a server reached through another crate is found, with the chain; the
/// exempt crate, a server's own dependencies and crates that reach no server are not.
#[test]
fn the_checker_follows_chains() {
    let graph: Graph = [
        ("bin", &["ctl", "srv"][..]),
        ("ctl", &["wire"]),
        ("sync", &["helper"]),
        ("helper", &["wire", "srv"]),
        ("srv", &["wire"]),
        ("wire", &[]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(
        server_dependencies(&graph, &["srv"], &["bin"]),
        vec!["helper -> srv", "sync -> helper -> srv"]
    );
    assert_eq!(
        server_dependencies(&graph, &["srv"], &["bin", "helper", "sync"]),
        Vec::<String>::new()
    );
}
