//! Compiles the etcd v3 protocol and Keel's Raft payloads with protox (pure Rust),
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kv.proto",
        "proto/auth.proto",
        "proto/rpc.proto",
        "proto/raft.proto",
        "proto/v3lock.proto",
        "proto/v3election.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // The descriptors themselves, for the JSON gateway (`api/gateway.rs`).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("etcd_descriptors.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        // bytes fields as `bytes::Bytes`: a key or value is shared, not copied, when one
        // event fans out to many watchers.
        .bytes(".")
        .generate_default_stubs(true)
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
