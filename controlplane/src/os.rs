//! Small operating-system calls that need `unsafe` (besides `bgp::md5`), each block with its reason: an interface
//! index, and datagrams received with their TTL (for BFD's single-hop check).
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

/// Ask the kernel for the TTL (IPv4, `IP_RECVTTL`) or hop limit (IPv6, `IPV6_RECVHOPLIMIT`) of every datagram
/// received on `sock`, for [`recv_with_ttl`].
///
/// # Errors
/// The kernel's refusal.
pub fn ask_for_ttl(sock: &impl std::os::fd::AsRawFd, v6: bool) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    let (level, name) =
        if v6 { (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT) } else { (libc::IPPROTO_IP, libc::IP_RECVTTL) };
    // SAFETY: the option value is a c_int that lives across the call and its size is passed; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Receive one datagram on a non-blocking socket with its sender and, if [`ask_for_ttl`] was set, its TTL or hop
/// limit (`None`: the kernel gave none).
///
/// # Errors
/// The kernel's (`WouldBlock` when nothing is waiting), or a sender that is not an IP address.
pub fn recv_with_ttl(
    sock: &impl std::os::fd::AsRawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr, Option<u8>)> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage (integers and byte arrays).
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = std::ptr::from_mut(&mut addr).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points at a live buffer of the length given beside it, all outliving the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR only reads its control pointer and length.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies within `control`, aligned for cmsghdr.
        let h = unsafe { c.read() };
        let wanted = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
            || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT);
        if wanted && h.cmsg_len as usize >= std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<libc::c_int>() {
            // SAFETY: `c` is a valid header within the control buffer; CMSG_DATA only computes an address.
            let data = unsafe { libc::CMSG_DATA(c) };
            // SAFETY: the header says its data holds at least a c_int; the read does not assume alignment.
            let v = unsafe { data.cast::<libc::c_int>().read_unaligned() };
            ttl = u8::try_from(v).ok();
        }
        // SAFETY: `c` is a header within `msg`'s control buffer; CMSG_NXTHDR returns the next or null.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    let from = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller and no more aligned.
            let a = unsafe { std::ptr::from_ref(&addr).cast::<libc::sockaddr_in>().read() };
            std::net::SocketAddr::new(
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { std::ptr::from_ref(&addr).cast::<libc::sockaddr_in6>().read() };
            std::net::SocketAddr::new(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into(), u16::from_be(a.sin6_port))
        }
        f => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("address family {f}"))),
    };
    Ok((n as usize, from, ttl))
}
