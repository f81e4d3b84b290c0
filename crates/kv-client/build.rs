//! Compiles torc's own declarations of the etcd v3 protos (messages, typed
//! clients and the service traits torc kv implements) with `protox`, a
//! pure-Rust proto compiler, so building needs nothing but the Rust toolchain
//! (no system `protoc`). torc kv's on-disk records are compiled by torc kv's
//! own `build.rs`, against these.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/authpb/auth.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Keys and values are shared between the key index, the event log and
        // responses; `Bytes` makes those copies reference counts.
        .bytes(".")
        // prost's codec with smaller buffers (see src/codec.rs).
        .codec_path("crate::codec::KvCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
