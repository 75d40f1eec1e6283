//! TCP MD5 signatures (RFC 2385) on a BGP socket: Linux `TCP_MD5SIG`, set before connecting. The only `unsafe` of
//! the control plane; the kernel copies the structure and keeps nothing of ours.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// `TCP_MD5SIG` (include/uapi/linux/tcp.h).
const TCP_MD5SIG: libc::c_int = 14;
/// `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_KEY: usize = 80;

/// `struct tcp_md5sig`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY],
}

/// Sign (and require signatures on) segments exchanged with `peer` on `sock`.
///
/// # Errors
/// A key longer than 80 bytes, or the kernel's refusal.
pub fn set(sock: &socket2::Socket, peer: SocketAddr, key: &[u8]) -> std::io::Result<()> {
    set_on(&socket2::SockRef::from(sock), peer, key)
}

/// As [`set`], on any socket (a listener, for its future connections from `peer`).
///
/// # Errors
/// A key longer than 80 bytes, or the kernel's refusal.
pub fn set_on(sock: &socket2::SockRef<'_>, peer: SocketAddr, key: &[u8]) -> std::io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "MD5 key must be 1 to 80 bytes"));
    }
    // SAFETY: all-zero bytes are a valid value of this plain C structure (integers and byte arrays).
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let sa = socket2::SockAddr::from(SocketAddr::new(peer.ip(), 0));
    let n = (sa.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `sa.as_ptr()` points to `sa.len()` valid bytes of a socket address and `sig.addr` has room for
    // `n <= size_of::<sockaddr_storage>()` bytes; the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(sa.as_ptr().cast::<u8>(), std::ptr::addr_of_mut!(sig.addr).cast::<u8>(), n)
    };
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: a valid socket descriptor, a pointer to a fully initialised `tcp_md5sig` and its exact size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_MD5SIG,
            std::ptr::addr_of!(sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
