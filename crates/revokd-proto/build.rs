//! Generates the gRPC code from `proto/` with a vendored `protoc`, so no system protobuf
//! compiler is needed on a fresh machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        root.join("revokd/v1/revokd.proto"),
        root.join("revokd/v1/raft.proto"),
    ];
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out.join("revokd_descriptor.bin"))
        .compile_protos(&protos, std::slice::from_ref(&root))?;
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(())
}
