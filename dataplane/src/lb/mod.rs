//! Load-balancing state: stable hashes, Maglev tables, flow keys and the per-worker flow tables.

pub mod conntrack;
pub mod flow;
pub mod hash;
pub mod maglev;
