//! edgelb gRPC API: `proto/edgelb/v1/*.proto` and the generated `tonic`/`prost` code.
//!
//! Empty on purpose: the API is defined by the control-plane issue. Nothing here pretends to work yet.
#![forbid(unsafe_code)]
