//! kubelet device plugin advertising SR-IOV VF pools.
//!
//! Empty on purpose: the plugin is its own issue. Nothing here pretends to work yet.
#![forbid(unsafe_code)]
