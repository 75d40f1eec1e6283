//! Compile the protos with protox (pure Rust, no system protoc) and generate the tonic/prost code; also write the
//! encoded file descriptor set for server reflection.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = match protox::compile(["edgelb/v1/edgelb.proto"], ["proto"]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: proto/edgelb/v1/edgelb.proto: {e}");
            std::process::exit(1);
        }
    };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("edgelb_descriptor.bin"), fds.encode_to_vec()).expect("write descriptor set");
    if let Err(e) = tonic_build::configure().build_client(true).build_server(true).compile_fds(fds) {
        eprintln!("error: generating the gRPC code: {e}");
        std::process::exit(1);
    }
}
