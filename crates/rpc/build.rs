//! Compiles `proto/` with protox (no protoc needed) and generates the tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("rkube/v1/api.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .bytes(".rkube.v1")
        .compile_fds(fds)?;
    Ok(())
}
