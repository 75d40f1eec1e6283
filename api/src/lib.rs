//! edgelb gRPC API: `proto/edgelb/v1/edgelb.proto` and the generated `tonic`/`prost` code.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("edgelb.v1");
}

/// The encoded `FileDescriptorSet` of the API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/edgelb_descriptor.bin"));
