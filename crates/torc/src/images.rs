//! `torc image pull|import|ls|rm` (design `docs/design/containers.md` §5): images on the
//! rack's nodes, through the controller's `/api/v1/nodes/{name}/images…` routes. Without
//! `--node`, a command acts on every active node whose agent runs containers, concurrently,
//! one line per node, and names each node it leaves out with its agent's reason. The command
//! fails when any node it acted on failed, or when no node could act.

use std::future::Future;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use torc_api::images::{NodeImage, NodeImages, PullLine};
use torc_client::Client;
use torc_types::{ImageRef, NodeName};

use crate::cli::{Target, containers_cell, print_json, print_table, runtime};

#[derive(Args)]
pub struct ImageArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Pull an image from its registry onto nodes, with progress.
    Pull {
        /// The image (`busybox`, `docker.io/torc/busybox:1`, `127.0.0.1:5000/x:1`).
        reference: ImageRef,
        /// Only these nodes (repeated); default: every node that runs containers.
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
    },
    /// Import an image archive (OCI or docker, as `skopeo copy` or `docker save` write it)
    /// onto nodes; the file is sent once per node.
    Import {
        /// The archive.
        file: PathBuf,
        /// The name to give an image the archive names only by a tag, or not at all.
        #[arg(long)]
        name: Option<ImageRef>,
        /// Only these nodes (repeated); default: every node that runs containers.
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
    },
    /// List the images nodes hold.
    Ls {
        /// Only these nodes (repeated); default: every node that runs containers.
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
    },
    /// Remove an image from nodes.
    Rm {
        reference: ImageRef,
        /// Only these nodes (repeated); default: every node that runs containers.
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
        /// Remove it even while tasks use it (their containers keep their files).
        #[arg(long)]
        force: bool,
    },
}

pub fn image(args: ImageArgs) -> anyhow::Result<()> {
    let client = args.target.client()?;
    let json = args.target.json();
    let rt = runtime()?;
    rt.block_on(async move {
        match args.command {
            ImageCommand::Pull { reference, nodes } => {
                let nodes = targets(&client, nodes).await?;
                let reference = reference.to_string();
                each_node(&client, nodes, move |client, node| {
                    pull(client, node, reference.clone())
                })
                .await
            }
            ImageCommand::Import { file, name, nodes } => {
                let nodes = targets(&client, nodes).await?;
                let name = name.map(|n| n.to_string());
                each_node(&client, nodes, move |client, node| {
                    import(client, node, file.clone(), name.clone())
                })
                .await
            }
            ImageCommand::Rm {
                reference,
                nodes,
                force,
            } => {
                let nodes = targets(&client, nodes).await?;
                let reference = reference.to_string();
                each_node(&client, nodes, move |client, node| {
                    remove(client, node, reference.clone(), force)
                })
                .await
            }
            ImageCommand::Ls { nodes } => list(&client, targets(&client, nodes).await?, json).await,
        }
    })
}

/// The nodes a command acts on, and the lines naming the nodes it leaves out.
struct Targets {
    nodes: Vec<NodeName>,
    left_out: Vec<String>,
}

/// `--node`s as given (the controller answers for each), or every active node whose agent
/// runs containers.
async fn targets(client: &Client, given: Vec<NodeName>) -> anyhow::Result<Targets> {
    if !given.is_empty() {
        return Ok(Targets {
            nodes: given,
            left_out: Vec::new(),
        });
    }
    let (mut nodes, mut left_out) = (Vec::new(), Vec::new());
    for node in client.nodes().await? {
        if !node.active {
            continue;
        }
        if node.runtime.containers {
            nodes.push(node.name);
        } else {
            left_out.push(format!(
                "{}: containers: {}",
                node.name,
                containers_cell(&node.runtime)
            ));
        }
    }
    Ok(Targets { nodes, left_out })
}

/// Runs `act` on every node at once; each prints its own lines. Fails when any node failed
/// or when there was no node to act on.
async fn each_node<F, Fut>(client: &Client, targets: Targets, act: F) -> anyhow::Result<()>
where
    F: Fn(Client, NodeName) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    for line in &targets.left_out {
        println!("{line}");
    }
    if targets.nodes.is_empty() {
        bail!("no active node runs containers");
    }
    let mut running = tokio::task::JoinSet::new();
    for node in targets.nodes {
        let name = node.clone();
        let work = act(client.clone(), node);
        running.spawn(async move { (name, work.await) });
    }
    let (mut failed, mut total) = (0, 0);
    while let Some(done) = running.join_next().await {
        total += 1;
        let (node, result) = done?;
        if let Err(e) = result {
            failed += 1;
            eprintln!("{node}: {e:#}");
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} node(s) failed");
    }
    Ok(())
}

async fn pull(client: Client, node: NodeName, reference: String) -> anyhow::Result<()> {
    let mut lines = client.pull_image(&node, &reference).await?;
    while let Some(line) = lines.next().await {
        match line? {
            PullLine::Progress {
                fetched,
                total,
                message,
            } => {
                if total > 0 {
                    println!("{node}: {message} ({} of {})", mb(fetched), mb(total));
                } else {
                    println!("{node}: {message}");
                }
            }
            PullLine::Pulled { image, millis, .. } => {
                println!(
                    "{node}: pulled {} ({}) in {}",
                    image.name,
                    about(&image),
                    seconds(millis)
                );
                return Ok(());
            }
            PullLine::Failed { error } => bail!("{error}"),
        }
    }
    bail!("the pull's answer ended without a result")
}

async fn import(
    client: Client,
    node: NodeName,
    file: PathBuf,
    name: Option<String>,
) -> anyhow::Result<()> {
    let imported = client.import_image(&node, &file, name.as_deref()).await?;
    if imported.images.is_empty() {
        bail!("{} named no image", file.display());
    }
    for image in &imported.images {
        println!(
            "{node}: imported {} ({}) in {}",
            image.name,
            about(image),
            seconds(imported.millis)
        );
    }
    Ok(())
}

async fn remove(
    client: Client,
    node: NodeName,
    reference: String,
    force: bool,
) -> anyhow::Result<()> {
    let removed = client.remove_image(&node, &reference, force).await?;
    println!(
        "{node}: removed {} (freed {} blob(s), {}, {} snapshot(s))",
        removed.name,
        removed.blobs,
        mb(removed.bytes),
        removed.snapshots
    );
    Ok(())
}

async fn list(client: &Client, targets: Targets, json: bool) -> anyhow::Result<()> {
    let mut running = tokio::task::JoinSet::new();
    for node in targets.nodes.clone() {
        let client = client.clone();
        running.spawn(async move { (node.clone(), client.node_images(&node).await) });
    }
    let (mut listed, mut failures): (Vec<NodeImages>, Vec<String>) = (Vec::new(), Vec::new());
    while let Some(done) = running.join_next().await {
        match done? {
            (_, Ok(images)) => listed.push(images),
            (node, Err(e)) => failures.push(format!("{node}: {e}")),
        }
    }
    listed.sort_by(|a, b| a.node.cmp(&b.node));
    if json {
        print_json(&listed)?;
    } else {
        let rows = listed
            .iter()
            .flat_map(|n| {
                n.images.iter().map(|i| {
                    vec![
                        n.node.to_string(),
                        i.name.clone(),
                        short_digest(&i.digest),
                        mb(i.size),
                        (i.used_by.iter())
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
            })
            .collect();
        print_table(&["NODE", "IMAGE", "DIGEST", "SIZE", "USED BY"], rows);
    }
    for line in targets.left_out.iter().chain(&failures) {
        eprintln!("{line}");
    }
    if targets.nodes.is_empty() {
        bail!("no active node runs containers");
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} node(s) failed",
            failures.len(),
            targets.nodes.len()
        );
    }
    Ok(())
}

/// `sha256:c629…, 1.1 MB`.
fn about(image: &NodeImage) -> String {
    format!("{}, {}", short_digest(&image.digest), mb(image.size))
}

/// `sha256:c629…`: the algorithm and 4 hex digits.
fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 4 => {
            format!("{algorithm}:{}…", hex.get(..4).unwrap_or(hex))
        }
        _ => digest.to_string(),
    }
}

/// Bytes as decimal megabytes with one decimal, as registries and `docker images` show them.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn seconds(millis: u64) -> String {
    format!("{:.1} s", millis as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_digests_and_times_read_as_the_design_shows_them() {
        let image = NodeImage {
            name: "docker.io/torc/busybox:1".into(),
            digest: "sha256:c6293f0a9e".into(),
            size: 1_083_000,
            created_at: None,
            used_by: Vec::new(),
        };
        assert_eq!(about(&image), "sha256:c629…, 1.1 MB");
        assert_eq!(short_digest("sha256:ab"), "sha256:ab");
        assert_eq!(short_digest("odd"), "odd");
        assert_eq!(seconds(420), "0.4 s");
        assert_eq!(mb(0), "0.0 MB");
    }
}
