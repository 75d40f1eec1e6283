//! Small operating-system lookups that need `unsafe` (besides `bgp::md5`), each block with its reason.
#![allow(unsafe_code)]

use std::ffi::CString;

/// The interface index of `name` in the calling thread's network namespace (unlike `/sys/class/net`, which shows
/// the namespace sysfs was mounted in).
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the function only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
