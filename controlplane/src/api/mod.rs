//! The management API: the gRPC service ([`server`]) over the control plane's [`crate::store::Store`] (the one validated
//! model, which the config file, health checks, BGP and Kubernetes use too), and the conversions between the API's
//! messages and the model ([`convert`]).

pub mod convert;
pub mod server;

#[cfg(test)]
mod tests;
