//! The management API: the [`store::Store`] holding the one validated model (the config file and the API both change
//! it), the gRPC service over it ([`server`]), and the conversions between the two ([`convert`]).

pub mod convert;
pub mod server;
pub mod store;

#[cfg(test)]
mod tests;
