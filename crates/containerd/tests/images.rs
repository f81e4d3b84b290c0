//! torc-containerd's images against a real containerd 1.6 and a real `docker-registry`:
//! imports of the busybox test image as an OCI archive and as a docker archive, a pull from a
//! loopback registry with progress, each run with `echo` through the client path the agent
//! uses; and the refusals (an unknown image, an unreachable registry, corrupt archives), each
//! with its message and nothing left behind: no image, blob, ingest, snapshot or lease.
//! Without root each prints `skipped: needs root` and passes.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::time::Instant;

use common::{Fixture, root};
use torc_containerd::images::{
    self, Credentials, ImportError, PullError, PullOptions, PullProgress, UnpackError,
};
use torc_containerd::{ContainerId, OVERLAYFS};
use torc_test_utils::{Registry, TEST_IMAGE, TEST_IMAGE_NAME, TestImage};
use torc_types::ImageRef;

fn test_image() -> anyhow::Result<TestImage> {
    TestImage::get(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// Runs `echo <word>` in the image and checks its output; removes the container.
async fn echo(f: &Fixture, image: &str, chain_id: &str, word: &str) -> anyhow::Result<()> {
    let id = ContainerId::new(format!("{word}.0a1b2c"))?;
    f.run_image(image, chain_id, &id, &["echo", word], None)
        .await?;
    assert_eq!(f.client.wait_task(&id).await?.status, 0);
    let out = f.dir.path().join(format!("{id}.stdout"));
    assert_eq!(std::fs::read_to_string(out)?, format!("{word}\n"));
    f.client.remove(&id).await?;
    f.assert_gone(&id).await?;
    Ok(())
}

/// Removes image `name`, checks that nothing is left, and ends the fixture.
async fn remove_and_finish(f: Fixture, name: &str) -> anyhow::Result<()> {
    images::remove(&f.client, name).await?.expect("removed");
    assert_empty(&f).await?;
    f.finish().await?;
    Ok(())
}

/// Nothing of an image is left in the namespace.
async fn assert_empty(f: &Fixture) -> anyhow::Result<()> {
    let c = &f.client;
    assert_eq!(images::list(c).await?, vec![], "images left");
    assert_eq!(images::blobs(c).await?, vec![], "blobs left");
    assert_eq!(
        images::ingests(c).await?,
        Vec::<String>::new(),
        "ingests left"
    );
    assert_eq!(
        images::snapshots(c).await?,
        Vec::<String>::new(),
        "snapshots left"
    );
    assert_eq!(
        images::leases(c).await?,
        Vec::<String>::new(),
        "leases left"
    );
    Ok(())
}

#[tokio::test]
async fn imports_oci_and_docker_archives_and_runs_them() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let image = test_image()?;
    let f = Fixture::empty().await?;
    let started = Instant::now();
    let file = std::fs::File::open(&image.oci_archive)?;
    let imported = images::import(&f.client, file, OVERLAYFS).await?;
    println!(
        "OCI archive imported in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(imported.len(), 1, "{imported:?}");
    assert_eq!(imported[0].name, TEST_IMAGE_NAME);
    let chain = imported[0].chain_id.clone();
    assert!(chain.starts_with("sha256:"), "{chain}");
    echo(&f, TEST_IMAGE_NAME, &chain, "from-oci").await?;
    // Unpacking again finds the chain; importing again changes nothing.
    assert_eq!(
        images::unpack(&f.client, TEST_IMAGE_NAME, OVERLAYFS).await?,
        chain
    );
    let again = images::import(
        &f.client,
        std::fs::File::open(&image.oci_archive)?,
        OVERLAYFS,
    )
    .await?;
    assert_eq!(again, imported);
    let listed = images::list(&f.client).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, TEST_IMAGE_NAME);
    assert!(listed[0].size > 500_000, "{listed:?}");
    assert_eq!(images::leases(&f.client).await?, Vec::<String>::new());

    let freed = images::remove(&f.client, TEST_IMAGE_NAME)
        .await?
        .expect("removed");
    assert_eq!((freed.blobs, freed.snapshots), (3, 1), "{freed:?}");
    assert_eq!(images::remove(&f.client, TEST_IMAGE_NAME).await?, None);
    assert_empty(&f).await?;

    let imported = images::import(
        &f.client,
        std::fs::File::open(&image.docker_archive)?,
        OVERLAYFS,
    )
    .await?;
    assert_eq!(imported.len(), 1, "{imported:?}");
    assert_eq!(imported[0].name, TEST_IMAGE_NAME);
    assert_eq!(imported[0].target.media_type, images::DOCKER_MANIFEST);
    // The same layer, uncompressed: the same chain.
    assert_eq!(imported[0].chain_id, chain);
    echo(&f, TEST_IMAGE_NAME, &imported[0].chain_id, "from-docker").await?;
    remove_and_finish(f, TEST_IMAGE_NAME).await
}

#[tokio::test]
async fn pulls_from_a_loopback_registry_with_progress() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let image = test_image()?;
    let registry = Registry::start().await?;
    image.push(&registry, TEST_IMAGE)?;
    let f = Fixture::empty().await?;
    let reference = ImageRef::parse(&format!("{}/{TEST_IMAGE}", registry.host))?;
    let mut seen = Vec::new();
    let started = Instant::now();
    let pulled = images::pull(&f.client, &reference, &PullOptions::default(), &mut |p| {
        seen.push(p)
    })
    .await?;
    println!(
        "pulled {} ({} bytes) in {} ms",
        pulled.name,
        pulled.size,
        started.elapsed().as_millis()
    );
    assert_eq!(pulled.name, reference.as_str());
    assert_eq!(pulled.fetched, pulled.size);
    assert!(matches!(&seen[0], PullProgress::Resolved { total, .. } if *total == pulled.size));
    let last_bytes = seen
        .iter()
        .filter_map(|p| match p {
            PullProgress::Bytes { done, total } => Some((*done, *total)),
            _ => None,
        })
        .next_back();
    assert_eq!(last_bytes, Some((pulled.size, pulled.size)), "{seen:?}");
    assert_eq!(seen.last(), Some(&PullProgress::Unpacking));
    echo(&f, reference.as_str(), &pulled.chain_id, "pulled").await?;

    // Again: nothing fetched, the same image.
    let again = images::pull(&f.client, &reference, &PullOptions::default(), &mut |_| {}).await?;
    assert_eq!((again.fetched, &again.chain_id), (0, &pulled.chain_id));
    assert_eq!(images::leases(&f.client).await?, Vec::<String>::new());
    remove_and_finish(f, reference.as_str()).await
}

#[tokio::test]
async fn refusals_name_the_problem_and_leave_nothing() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let image = test_image()?;
    let mut registry = Registry::start().await?;
    let f = Fixture::empty().await?;

    // An image the registry does not have.
    let unknown = ImageRef::parse(&format!("{}/torc/nope:1", registry.host))?;
    let error = images::pull(&f.client, &unknown, &PullOptions::default(), &mut |_| {})
        .await
        .unwrap_err();
    println!("{error}");
    assert!(matches!(error, PullError::NotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "image {unknown}: not found in the registry {} (manifest unknown)",
            registry.host
        )
    );
    assert_empty(&f).await?;

    // A registry that is gone.
    let host = registry.host.clone();
    registry.stop();
    let gone = ImageRef::parse(&format!("{host}/{TEST_IMAGE}"))?;
    let error = images::pull(&f.client, &gone, &PullOptions::default(), &mut |_| {})
        .await
        .unwrap_err();
    println!("{error}");
    assert!(matches!(error, PullError::Unreachable { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("image {gone}: cannot reach the registry {host}: "))
            && text.to_lowercase().contains("connection refused"),
        "{text}"
    );
    assert_empty(&f).await?;

    // A registry that wants credentials: none, then wrong ones, are refused; right ones pull.
    let guarded = Registry::start_with_auth("torc", "s3cret").await?;
    image.push(&guarded, TEST_IMAGE)?;
    let reference = ImageRef::parse(&format!("{}/{TEST_IMAGE}", guarded.host))?;
    let with = |user: &str, password: &str| PullOptions {
        credentials: Some(Credentials {
            user: user.into(),
            password: password.into(),
        }),
        ..PullOptions::default()
    };
    for options in [PullOptions::default(), with("torc", "wrong")] {
        let error = images::pull(&f.client, &reference, &options, &mut |_| {})
            .await
            .unwrap_err();
        println!("{error}");
        assert!(matches!(error, PullError::Refused { .. }), "{error:?}");
        assert!(
            error.to_string().starts_with(&format!(
                "image {reference}: the registry {} refused (",
                guarded.host
            )),
            "{error}"
        );
        assert_empty(&f).await?;
    }
    let pulled = images::pull(&f.client, &reference, &with("torc", "s3cret"), &mut |_| {}).await?;
    images::remove(&f.client, &pulled.name)
        .await?
        .expect("removed");
    assert_empty(&f).await?;

    // Not an archive at all.
    let error = images::import(&f.client, &[7u8; 4096][..], OVERLAYFS)
        .await
        .unwrap_err();
    println!("{error}");
    assert!(matches!(error, ImportError::NotArchive(_)), "{error:?}");
    assert!(
        error.to_string().starts_with("not an image archive: "),
        "{error}"
    );
    assert_empty(&f).await?;

    // Truncated in the middle of the layer.
    let whole = std::fs::read(&image.oci_archive)?;
    let (layer, start, size) = largest_entry(&whole)?;
    let cut = whole[..(start + size / 2) as usize].to_vec();
    let error = images::import(&f.client, std::io::Cursor::new(cut), OVERLAYFS)
        .await
        .unwrap_err();
    println!("{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "entry {layer}: unexpected end of archive after {} of {size} bytes",
            size / 2
        )
    );
    assert_empty(&f).await?;

    // A byte of the layer changed: its digest is not its name.
    let mut flipped = whole.clone();
    flipped[(start + size / 2) as usize] ^= 0xff;
    let error = images::import(&f.client, std::io::Cursor::new(flipped), OVERLAYFS)
        .await
        .unwrap_err();
    println!("{error}");
    assert!(matches!(error, ImportError::BadDigest { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("entry {layer}: bad digest: its name says sha256:")),
        "{error}"
    );
    assert_empty(&f).await?;

    // An archive without the layer its manifest names.
    let without = rewrite_without(&whole, &layer)?;
    let error = images::import(&f.client, std::io::Cursor::new(without), OVERLAYFS)
        .await
        .unwrap_err();
    println!("{error}");
    let digest = format!("sha256:{}", layer.trim_start_matches("blobs/sha256/"));
    assert!(
        matches!(&error, ImportError::MissingBlob { blob, .. } if *blob == digest),
        "{error:?}"
    );
    assert_empty(&f).await?;

    // Unpacking an image that does not exist.
    let error = images::unpack(&f.client, "docker.io/torc/none:1", OVERLAYFS)
        .await
        .unwrap_err();
    println!("{error}");
    assert!(matches!(error, UnpackError::NoImage(_)), "{error:?}");
    assert_empty(&f).await?;
    f.finish().await?;
    Ok(())
}

/// An archive that names its image only by a tag (or not at all) is refused saying how to
/// name it, and imports under the name given; a name for an archive of several images is
/// refused.
#[tokio::test]
async fn archives_without_a_full_name_import_under_the_name_given() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let image = test_image()?;
    let f = Fixture::empty().await?;
    // The OCI archive's index names the image only "1".
    let archive = std::fs::read(&image.oci_archive)?;
    let mut index: serde_json::Value = {
        let mut tar = tar::Archive::new(&archive[..]);
        let mut found = None;
        for entry in tar.entries()? {
            let mut entry = entry?;
            if entry.path()?.to_string_lossy().trim_start_matches("./") == "index.json" {
                let mut text = Vec::new();
                entry.read_to_end(&mut text)?;
                found = Some(serde_json::from_slice(&text)?);
            }
        }
        found.expect("index.json")
    };
    index["manifests"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "1"});
    let tag_only = rewrite(&archive, "index.json", Some(&serde_json::to_vec(&index)?))?;
    let error = images::import(&f.client, std::io::Cursor::new(tag_only.clone()), OVERLAYFS)
        .await
        .unwrap_err();
    println!("{error}");
    assert!(matches!(error, ImportError::NoName(_)), "{error:?}");
    assert!(error.to_string().contains("--name"), "{error}");
    assert_empty(&f).await?;

    let name = ImageRef::parse("torc/renamed:2")?;
    let imported = images::import_as(
        &f.client,
        std::io::Cursor::new(tag_only),
        OVERLAYFS,
        Some(&name),
    )
    .await?;
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, "docker.io/torc/renamed:2");
    echo(
        &f,
        "docker.io/torc/renamed:2",
        &imported[0].chain_id,
        "renamed",
    )
    .await?;
    remove_and_finish(f, "docker.io/torc/renamed:2").await
}

/// The path, data offset and size of an archive's largest entry (the layer).
fn largest_entry(archive: &[u8]) -> anyhow::Result<(String, u64, u64)> {
    let mut best = (String::new(), 0, 0);
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries()? {
        let entry = entry?;
        if entry.size() > best.2 {
            best = (
                entry
                    .path()?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string(),
                entry.raw_file_position(),
                entry.size(),
            );
        }
    }
    Ok(best)
}

/// The archive again, without entry `path`.
fn rewrite_without(archive: &[u8], path: &str) -> anyhow::Result<Vec<u8>> {
    rewrite(archive, path, None)
}

/// The archive again, with entry `path` left out (`None`) or replaced by `with`.
fn rewrite(archive: &[u8], path: &str, with: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if name == path {
            match with {
                None => continue,
                Some(bytes) => data = bytes.to_vec(),
            }
            header.set_size(data.len() as u64);
        }
        out.append_data(&mut header, &name, &data[..])?;
    }
    Ok(out.into_inner()?)
}
