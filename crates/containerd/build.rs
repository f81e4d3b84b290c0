//! Compiles torc's own declarations of the containerd 1.6 API (`proto/`: the
//! services torc calls, their messages, the task events and the runc shim's
//! options) with `protox`, a pure-Rust proto compiler, so building needs
//! nothing but the Rust toolchain (no system `protoc`), as `torc-kv-client`
//! does for etcd's. Clients only: torc never serves these services.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/google/rpc/status.proto",
        "proto/containerd/types/mount.proto",
        "proto/containerd/types/descriptor.proto",
        "proto/containerd/types/platform.proto",
        "proto/containerd/types/task/task.proto",
        "proto/containerd/runc/options/oci.proto",
        "proto/containerd/events/task.proto",
        "proto/containerd/services/version/v1/version.proto",
        "proto/containerd/services/introspection/v1/introspection.proto",
        "proto/containerd/services/namespaces/v1/namespace.proto",
        "proto/containerd/services/events/v1/events.proto",
        "proto/containerd/services/containers/v1/containers.proto",
        "proto/containerd/services/tasks/v1/tasks.proto",
        "proto/containerd/services/snapshots/v1/snapshots.proto",
        "proto/containerd/services/images/v1/images.proto",
        "proto/containerd/services/content/v1/content.proto",
        "proto/containerd/services/diff/v1/diff.proto",
        "proto/containerd/services/leases/v1/leases.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
