//! Compile the kubelet device-plugin API with protox (no system protoc) and generate client and server code.

use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = match protox::compile(["deviceplugin/v1beta1/api.proto"], ["proto"]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: proto/deviceplugin/v1beta1/api.proto: {e}");
            std::process::exit(1);
        }
    };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("deviceplugin_descriptor.bin"), fds.encode_to_vec()).expect("write descriptor set");
    if let Err(e) = tonic_build::configure().build_client(true).build_server(true).compile_fds(fds) {
        eprintln!("error: generating the device-plugin code: {e}");
        std::process::exit(1);
    }
}
