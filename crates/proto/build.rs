//! Compiles `proto/` with protox (no protoc to install) and keeps the encoded descriptor set,
//! custom options included, for reflection and for the data-category lookups.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root.join("tutela"), &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;

    // Encode through protox's own pool so that custom field options (the data category) survive:
    // prost_types drops extensions it does not know.
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&relative)?;
    let encoded = compiler.encode_file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tutela_descriptor.bin"), &encoded)?;

    // The google.rpc error details every tutela error carries (a copy of googleapis'
    // google/rpc/error_details.proto under its canonical name, with its imports), served by
    // reflection so that clients decode them; tonic-types has the generated code.
    let mut details = protox::Compiler::new([&root])?;
    details.include_imports(true);
    details.open_file("google/rpc/error_details.proto")?;
    std::fs::write(
        out.join("error_details_descriptor.bin"),
        details.encode_file_descriptor_set(),
    )?;

    let fds = <prost_types::FileDescriptorSet as prost::Message>::decode(encoded.as_slice())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
