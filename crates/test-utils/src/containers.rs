//! Container test support: [`Registry`] (a real `docker-registry` on a free loopback port in
//! a temp dir, killed on drop), [`TestImage`] (the busybox image built with umoci and skopeo
//! from Debian's busybox-static, as an OCI and a docker archive, cached under the target dir;
//! [`push_padded_image`] pushes it with a layer of random data added, for pull benchmarks)
//! and [`Containerd`] (a private containerd for one test, swept on drop).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use torc_containerd::daemon::{Daemon, DaemonOptions, Layout};
use torc_containerd::{Client, Namespace};

use crate::{die_with_test, free_port, random_bytes, which};

/// The name the test image has in its archives, and (normalised) in containerd.
pub const TEST_IMAGE: &str = "torc/busybox:1";
/// [`TEST_IMAGE`] normalised, as an import names it.
pub const TEST_IMAGE_NAME: &str = "docker.io/torc/busybox:1";
const BUSYBOX: &str = "/bin/busybox";

/// The peer programs container tests run; a missing one fails the test saying how to install
/// it.
pub fn require_container_peers() {
    for (program, package) in [
        ("containerd", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("docker-registry", "docker-registry"),
    ] {
        assert!(
            which(program).is_some(),
            "{program} is not installed: run ./scripts/test (it installs it) or `apt-get install {package}`"
        );
    }
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is not installed: run ./scripts/test (it installs it) or `apt-get install busybox-static`"
    );
}

/// Whether this process may run a private containerd (root; CI runs as root). If not, says
/// `skipped: needs root and containerd` on one line: a test that needs containers then returns
/// at once and passes. As root, a missing peer program fails the test
/// ([`require_container_peers`]).
pub fn containers_or_skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root and containerd");
        return false;
    }
    require_container_peers();
    true
}

/// The busybox applets linked in the test image (`nc` and `httpd` serve health checks).
const APPLETS: [&str; 10] = [
    "sh", "echo", "cat", "sleep", "dd", "true", "false", "ls", "nc", "httpd",
];

/// The busybox test image: a layer with the static busybox and its applet links, built once
/// per busybox binary and kept under `target_tmp` so tests (each its own process under
/// nextest) share it.
pub struct TestImage {
    /// An OCI archive naming the image [`TEST_IMAGE`] (`org.opencontainers.image.ref.name`).
    pub oci_archive: PathBuf,
    /// A docker archive (uncompressed layers) with RepoTag [`TEST_IMAGE`].
    pub docker_archive: PathBuf,
}

impl TestImage {
    /// Builds (or finds) the archives under `target_tmp` (a test's `CARGO_TARGET_TMPDIR`).
    pub fn get(target_tmp: &Path) -> anyhow::Result<TestImage> {
        let meta = std::fs::metadata(BUSYBOX)?;
        // The applet set is part of the key: a new applet makes a new image.
        let key = format!(
            "{}-{}-{}",
            APPLETS.len(),
            meta.len(),
            meta.modified()?
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
        );
        let oci_archive = target_tmp.join(format!("torc-busybox-oci-{key}.tar"));
        let docker_archive = target_tmp.join(format!("torc-busybox-docker-{key}.tar"));
        if oci_archive.is_file() && docker_archive.is_file() {
            return Ok(TestImage {
                oci_archive,
                docker_archive,
            });
        }
        assert!(
            is_static(Path::new(BUSYBOX))?,
            "{BUSYBOX} is not statically linked: install busybox-static (not busybox)"
        );
        std::fs::create_dir_all(target_tmp)?;
        let work = tempfile::Builder::new()
            .prefix("busybox-image-")
            .tempdir_in(target_tmp)?;
        let layout = work.path().join("img");
        let bundle = work.path().join("bundle");
        let image = format!("{}:busybox", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout))?;
        run(Command::new("umoci").args(["new", "--image", &image]))?;
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle))?;
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::copy(BUSYBOX, bin.join("busybox"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle))?;
        let oci = work.path().join("busybox-oci.tar");
        let docker = work.path().join("busybox-docker.tar");
        skopeo_copy(
            &format!("oci:{image}"),
            &format!("oci-archive:{}:{TEST_IMAGE}", oci.display()),
        )?;
        skopeo_copy(
            &format!("oci:{image}"),
            &format!("docker-archive:{}:{TEST_IMAGE}", docker.display()),
        )?;
        // Tests racing to build them each rename whole archives; the last one wins.
        std::fs::rename(&docker, &docker_archive)?;
        std::fs::rename(&oci, &oci_archive)?;
        Ok(TestImage {
            oci_archive,
            docker_archive,
        })
    }

    /// Pushes the image to `registry` as `repository:tag` (skopeo, plain HTTP).
    pub fn push(&self, registry: &Registry, name: &str) -> anyhow::Result<()> {
        push_to(
            &format!("oci-archive:{}", self.oci_archive.display()),
            registry,
            name,
        )
    }
}

/// The test image with a second layer holding `bytes` random bytes (`/padding`, which no
/// compression shrinks), pushed to `registry` as `repository:tag` (built with umoci and
/// skopeo in a temp dir under `target_tmp`, removed afterwards). For pull benchmarks.
pub fn push_padded_image(
    image: &TestImage,
    target_tmp: &Path,
    registry: &Registry,
    name: &str,
    bytes: usize,
) -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("padded-image-")
        .tempdir_in(target_tmp)?;
    let layout = work.path().join("img");
    let bundle = work.path().join("bundle");
    let padded = format!("{}:padded", layout.display());
    skopeo_copy(
        &format!("oci-archive:{}", image.oci_archive.display()),
        &format!("oci:{padded}"),
    )?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &padded])
        .arg(&bundle))?;
    let mut data = vec![0u8; bytes];
    for chunk in data.chunks_mut(1 << 16) {
        random_bytes(chunk);
    }
    std::fs::write(bundle.join("rootfs/padding"), data)?;
    run(Command::new("umoci")
        .args(["repack", "--image", &padded])
        .arg(&bundle))?;
    push_to(&format!("oci:{padded}"), registry, name)
}

/// `skopeo copy` of the image at `source` (a skopeo transport and path) to `registry` as
/// `repository:tag`, plain HTTP, with the registry's login if it has one.
fn push_to(source: &str, registry: &Registry, name: &str) -> anyhow::Result<()> {
    let mut command = Command::new("skopeo");
    command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some((user, password)) = &registry.credentials {
        command.arg(format!("--dest-creds={user}:{password}"));
    }
    command
        .arg(source)
        .arg(format!("docker://{}/{name}", registry.host));
    run(&mut command)
}

fn skopeo_copy(from: &str, to: &str) -> anyhow::Result<()> {
    run(Command::new("skopeo").args(["copy", "--quiet", from, to]))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    if !output.status.success() {
        bail!("{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// An ELF file without a program interpreter (`PT_INTERP`) is statically linked.
fn is_static(path: &Path) -> anyhow::Result<bool> {
    let elf = std::fs::read(path)?;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        bail!("{}: not a 64-bit ELF file", path.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    for i in 0..count {
        let at = phoff + i * size;
        let kind = elf.get(at..at + 4).context("a truncated program header")?;
        if u32::from_le_bytes(kind.try_into()?) == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A real `docker-registry` (distribution 2.x) serving plain HTTP on `127.0.0.1:<free port>`,
/// storing in a temp dir; killed on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The user and password it requires, if any.
    pub credentials: Option<(String, String)>,
    child: Option<Child>,
}

impl Registry {
    /// A registry anyone may pull from and push to.
    pub async fn start() -> anyhow::Result<Registry> {
        Registry::start_with(None).await
    }

    /// A registry that requires `user` and `password` (htpasswd, bcrypt) for everything.
    pub async fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Registry> {
        Registry::start_with(Some((user.to_string(), password.to_string()))).await
    }

    async fn start_with(credentials: Option<(String, String)>) -> anyhow::Result<Registry> {
        let program = which("docker-registry").context(
            "docker-registry is not installed: run ./scripts/test or `apt-get install docker-registry`",
        )?;
        let dir = tempfile::Builder::new().prefix("registry-").tempdir()?;
        let port = free_port(Ipv4Addr::LOCALHOST);
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            // The lowest bcrypt cost: a test's registry guards nothing.
            let hash = bcrypt::hash(password, 4)?;
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n"))?;
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: torc-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&config, text)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let mut cmd = Command::new(program);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_test(&mut cmd);
        let mut registry = Registry {
            child: Some(cmd.spawn()?),
            dir,
            host,
            credentials,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = registry.child.as_mut().unwrap().try_wait()? {
                bail!("docker-registry exited ({status}):\n{}", registry.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not listen on {} within 30 s:\n{}",
                    registry.host,
                    registry.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the registry (its port then refuses connections); the dir stays until drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private containerd for one test, in a temp dir, with a client in a random namespace.
/// Fields drop in order: the daemon (swept if still running) before the dir.
pub struct Containerd {
    pub client: Client,
    pub namespace: Namespace,
    pub daemon: Option<Daemon>,
    pub layout: Layout,
    pub dir: tempfile::TempDir,
}

impl Containerd {
    pub async fn start() -> anyhow::Result<Containerd> {
        require_container_peers();
        let dir = tempfile::Builder::new().prefix("ctd-").tempdir()?;
        let layout = Layout::under(dir.path());
        let daemon = Daemon::start(layout.clone(), DaemonOptions::default()).await?;
        let mut hex = [0u8; 4];
        random_bytes(&mut hex);
        let namespace = Namespace::new(format!(
            "t-{}",
            hex.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))?;
        let client = daemon.client(namespace.clone()).await?;
        Ok(Containerd {
            client,
            namespace,
            daemon: Some(daemon),
            layout,
            dir,
        })
    }
}
