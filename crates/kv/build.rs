//! Compiles torc kv's on-disk record format (`proto/torc/kv/storage.proto`)
//! with `protox`, a pure-Rust proto compiler (no system `protoc`). The etcd
//! v3 messages it embeds are torc-kv-client's (`torc_kv_client::proto`), whose
//! declarations it imports from that crate's `proto/` directory.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/torc/kv/storage.proto";
    // The etcd protos the record format imports, kept by torc-kv-client.
    let etcd = "../kv-client/proto";
    println!("cargo:rerun-if-changed={file}");
    println!("cargo:rerun-if-changed={etcd}");
    let descriptors = protox::Compiler::new(["proto", etcd])?
        .include_source_info(true)
        .include_imports(false)
        .open_file(file)?
        .file_descriptor_set();
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        // The same buffers as the etcd messages the records hold.
        .bytes(".")
        .extern_path(".mvccpb", "::torc_kv_client::proto::mvccpb")
        .extern_path(".authpb", "::torc_kv_client::proto::authpb")
        .compile_fds(descriptors)?;
    Ok(())
}
