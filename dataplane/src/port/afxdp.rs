//! AF_XDP port: an XDP socket on one queue of an interface (Linux `Documentation/networking/af_xdp.rst`), in copy
//! mode, so it works on veth and any driver with XDP.
//!
//! An XDP program of six instructions (written out below, no compiler needed) redirects every frame to the socket in
//! an `XSKMAP` slot keyed by the receive queue, falling back to `XDP_PASS`. It is attached with a BPF link, so closing
//! the port detaches it. The UMEM is one anonymous mapping of [`FRAMES`] frames of [`FRAME_SIZE`] bytes: the first
//! half feed the fill ring (receive), the second half are transmit buffers reclaimed from the completion ring.
//! Frames are copied between the UMEM and the port's pool of buffers, as in the AF_PACKET port.
//!
//! Limits now: one queue (queue 0) per port, so one worker per interface; copy mode only. All `unsafe` of the port
//! is in this module; every block says why it is sound.
#![allow(unsafe_code)]

use super::{Burst, Port, PortStats};
use crate::packet::{MemBuf, PacketBuf};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Frames in the UMEM (half for receive, half for transmit).
pub const FRAMES: u32 = 4096;
/// Bytes per UMEM frame.
pub const FRAME_SIZE: u32 = 2048;
const RING: u32 = FRAMES / 2;
/// Buffers the pool may add by allocation when it runs dry.
const MAX_POOL_GROWTH: u64 = 8192;

/// Why a port could not be opened; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// Interface name unusable.
    #[error("interface {0:?}: no such interface ({1})")]
    NoInterface(String, io::Error),
    /// A step failed.
    #[error("AF_XDP on {iface:?}: {step}: {source}{hint}")]
    Step {
        /// Interface.
        iface: String,
        /// What was being done.
        step: &'static str,
        /// The kernel's answer.
        source: io::Error,
        /// What to check.
        hint: &'static str,
    },
}

// bpf(2) commands, map and program types (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

/// bpf(2) with a 128-byte attribute block; returns the new fd or an error.
fn bpf(cmd: i64, attr: &mut [u8; 128]) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, writable 128-byte block (the kernel reads and may write at most its given size);
    // the pointers stored inside it point to memory that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return of these commands is a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn put32(a: &mut [u8; 128], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8; 128], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// One BPF instruction: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | (dst & 0x0f);
    i[2..4].copy_from_slice(&off.to_ne_bytes());
    i[4..8].copy_from_slice(&imm.to_ne_bytes());
    i
}

/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`
fn program(map_fd: i32) -> Vec<u8> {
    [
        insn(0x61, 2, 1, 16, 0),                    // r2 = *(u32 *)(r1 + 16): xdp_md.rx_queue_index
        insn(0x18, 1, 1, 0, map_fd),                // r1 = map (BPF_PSEUDO_MAP_FD), first half of ld_imm64
        insn(0x00, 0, 0, 0, 0),                     //   second half
        insn(0xb7, 3, 0, 0, XDP_PASS),              // r3 = XDP_PASS (the action when the slot is empty)
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP), // call bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),                     // exit
    ]
    .concat()
}

/// A mapped XDP ring of `u64` addresses or `xdp_desc` descriptors.
struct Ring {
    map: *mut u8,
    map_len: usize,
    producer: *mut u32,
    consumer: *mut u32,
    desc: *mut u8,
    mask: u32,
}

impl Ring {
    /// No mapping yet (a port under construction; Drop skips it).
    const EMPTY: Ring = Ring {
        map: std::ptr::null_mut(),
        map_len: 0,
        producer: std::ptr::null_mut(),
        consumer: std::ptr::null_mut(),
        desc: std::ptr::null_mut(),
        mask: 0,
    };

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: `producer` points to an aligned u32 inside the ring mapping, shared with the kernel, which lives
        // as long as `self`; AtomicU32 has the same layout as u32.
        unsafe { AtomicU32::from_ptr(self.producer) }
    }
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for `prod`.
        unsafe { AtomicU32::from_ptr(self.consumer) }
    }
}

/// Names the interface in each step's error.
#[derive(Clone, Copy)]
struct Steps<'a>(&'a str);

impl Steps<'_> {
    /// The error of `step` from the OS error, with a `hint` of the usual cause.
    fn err(self, step: &'static str, hint: &'static str) -> impl Fn(io::Error) -> AfXdpError {
        let iface = self.0.to_string();
        move |source: io::Error| AfXdpError::Step { iface: iface.clone(), step, source, hint }
    }
}

fn if_index(ifname: &str) -> Result<u32, AfXdpError> {
    let cname = CString::new(ifname).map_err(|_| {
        AfXdpError::NoInterface(ifname.into(), io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
    })?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(AfXdpError::NoInterface(ifname.into(), io::Error::last_os_error()));
    }
    Ok(ifindex)
}

/// Create the one-entry XSKMAP and load the program that redirects every frame of queue 0 into it: (map, program).
fn load_redirect(steps: Steps<'_>) -> Result<(OwnedFd, OwnedFd), AfXdpError> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_MAP_TYPE_XSKMAP);
    put32(&mut a, 4, 4);
    put32(&mut a, 8, 4);
    put32(&mut a, 12, 64);
    let map = bpf(BPF_MAP_CREATE, &mut a).map_err(steps.err("create XSKMAP", " (needs CAP_BPF / root)"))?;
    let prog_bytes = program(map.as_raw_fd());
    let license = CString::new("GPL").unwrap_or_default();
    let mut log = vec![0u8; 4096];
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_PROG_TYPE_XDP);
    put32(&mut a, 4, (prog_bytes.len() / 8) as u32);
    put64(&mut a, 8, prog_bytes.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1);
    put32(&mut a, 28, log.len() as u32);
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    let prog =
        bpf(BPF_PROG_LOAD, &mut a).map_err(steps.err("load the XDP program", " (verifier log in debug builds)"))?;
    Ok((map, prog))
}

fn xdp_socket(steps: Steps<'_>) -> Result<OwnedFd, AfXdpError> {
    // SAFETY: plain socket(2); checked below.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(steps.err("socket(AF_XDP)", " (kernel without CONFIG_XDP_SOCKETS?)")(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The UMEM: an anonymous private mapping of `len` bytes, populated now.
fn map_umem(len: usize, steps: Steps<'_>) -> Result<*mut u8, AfXdpError> {
    // SAFETY: a new anonymous private mapping; checked below.
    let umem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if umem == libc::MAP_FAILED {
        return Err(steps.err("map the UMEM", "")(io::Error::last_os_error()));
    }
    Ok(umem.cast::<u8>())
}

fn setopt(fd: &OwnedFd, opt: i32, v: &[u8], what: &'static str, steps: Steps<'_>) -> Result<(), AfXdpError> {
    // SAFETY: `v` is valid for `v.len()` bytes during the call; the kernel copies it.
    let r =
        unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, v.as_ptr().cast(), v.len() as libc::socklen_t) };
    if r != 0 {
        return Err(steps.err(what, "")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Register the UMEM, size the four rings and map them: [RX, TX, fill, completion].
fn setup_rings(fd: &OwnedFd, umem: *mut u8, umem_len: usize, steps: Steps<'_>) -> Result<[Ring; 4], AfXdpError> {
    let reg = libc::xdp_umem_reg {
        addr: umem as u64,
        len: umem_len as u64,
        chunk_size: FRAME_SIZE,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    // SAFETY: xdp_umem_reg is plain data; viewing it as bytes for setsockopt is sound.
    let reg_bytes = unsafe {
        std::slice::from_raw_parts((&reg as *const libc::xdp_umem_reg).cast::<u8>(), std::mem::size_of_val(&reg))
    };
    setopt(fd, libc::XDP_UMEM_REG, reg_bytes, "register the UMEM", steps)?;
    let size = RING.to_ne_bytes();
    setopt(fd, libc::XDP_UMEM_FILL_RING, &size, "size the fill ring", steps)?;
    setopt(fd, libc::XDP_UMEM_COMPLETION_RING, &size, "size the completion ring", steps)?;
    setopt(fd, libc::XDP_RX_RING, &size, "size the RX ring", steps)?;
    setopt(fd, libc::XDP_TX_RING, &size, "size the TX ring", steps)?;
    // SAFETY: xdp_mmap_offsets is plain data; all-zero is valid before the kernel fills it.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: `off` and `len` are valid for writes of their sizes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(steps.err("read the ring offsets", "")(io::Error::last_os_error()));
    }
    let desc = std::mem::size_of::<libc::xdp_desc>();
    Ok([
        map_ring(fd, &off.rx, desc, libc::XDP_PGOFF_RX_RING as u64, steps.err("map the RX ring", ""))?,
        map_ring(fd, &off.tx, desc, libc::XDP_PGOFF_TX_RING as u64, steps.err("map the TX ring", ""))?,
        map_ring(fd, &off.fr, 8, libc::XDP_UMEM_PGOFF_FILL_RING, steps.err("map the fill ring", ""))?,
        map_ring(fd, &off.cr, 8, libc::XDP_UMEM_PGOFF_COMPLETION_RING, steps.err("map the completion ring", ""))?,
    ])
}

/// Map one of the socket's rings (`entry` bytes per descriptor) at its page offset.
fn map_ring(
    fd: &OwnedFd,
    o: &libc::xdp_ring_offset,
    entry: usize,
    pgoff: u64,
    err: impl Fn(io::Error) -> AfXdpError,
) -> Result<Ring, AfXdpError> {
    let len = o.desc as usize + RING as usize * entry;
    // SAFETY: maps the kernel's ring for this socket at its documented page offset; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            pgoff as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(err(io::Error::last_os_error()));
    }
    let p = p.cast::<u8>();
    Ok(Ring {
        map: p,
        map_len: len,
        producer: p.wrapping_add(o.producer as usize).cast(),
        consumer: p.wrapping_add(o.consumer as usize).cast(),
        desc: p.wrapping_add(o.desc as usize),
        mask: RING - 1,
    })
}

/// An AF_XDP socket with its UMEM and rings, on queue 0 of one interface.
pub struct AfXdpPort {
    name: String,
    fd: OwnedFd,
    umem: *mut u8,
    umem_len: usize,
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    free_tx: Vec<u64>,
    pool: super::BufPool,
    pool_grown: u64,
    stats: PortStats,
    csum_completed: u64,
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
}

// SAFETY: the UMEM and ring mappings are owned by this port alone; the kernel's concurrent access goes through the
// producer/consumer atomics. Moving the port moves that ownership.
unsafe impl Send for AfXdpPort {}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort").field("name", &self.name).field("stats", &self.stats).finish()
    }
}

impl AfXdpPort {
    /// Open queue 0 of `ifname` (in the caller's network namespace) with a buffer pool of its own.
    ///
    /// # Errors
    /// [`AfXdpError`] naming the step that failed.
    pub fn open(ifname: &str) -> Result<Self, AfXdpError> {
        Self::open_with_pool(ifname, super::buf_pool(RING as usize + 2 * super::BURST))
    }

    /// Open queue 0 of `ifname` sharing the worker's buffer pool, and attach the redirect program.
    ///
    /// # Errors
    /// [`AfXdpError`] naming the step that failed.
    pub fn open_with_pool(ifname: &str, pool: super::BufPool) -> Result<Self, AfXdpError> {
        let steps = Steps(ifname);
        let ifindex = if_index(ifname)?;
        let (map, prog) = load_redirect(steps)?;
        let fd = xdp_socket(steps)?;
        let umem_len = (FRAMES * FRAME_SIZE) as usize;
        let umem = map_umem(umem_len, steps)?;
        // From here on, the UMEM must be unmapped on every error path: build the port early, with empty rings, and let
        // its Drop clean up.
        let rings = setup_rings(&fd, umem, umem_len, steps);
        let mut port = Self {
            name: ifname.to_string(),
            fd,
            umem,
            umem_len,
            rx: Ring::EMPTY,
            tx: Ring::EMPTY,
            fill: Ring::EMPTY,
            comp: Ring::EMPTY,
            free_tx: (RING..FRAMES).map(|i| u64::from(i) * u64::from(FRAME_SIZE)).collect(),
            pool,
            pool_grown: 0,
            stats: PortStats::default(),
            csum_completed: 0,
            // Placeholders until the link exists; replaced below.
            _link: prog.try_clone().map_err(steps.err("duplicate a descriptor", ""))?,
            _prog: prog,
            _map: map,
        };
        [port.rx, port.tx, port.fill, port.comp] = rings?;
        // Hand every receive frame to the kernel.
        for i in 0..RING {
            port.fill_slot(i).write_volatile_u64(u64::from(i) * u64::from(FRAME_SIZE));
        }
        port.fill.prod().store(RING, Ordering::Release);
        port.bind_and_attach(ifindex, steps)?;
        Ok(port)
    }

    /// Bind the socket to queue 0 (copy mode), enter it in the XSKMAP and attach the program to the interface.
    fn bind_and_attach(&mut self, ifindex: u32, steps: Steps<'_>) -> Result<(), AfXdpError> {
        // SAFETY: sockaddr_xdp is plain data; all-zero is valid before the fields are set.
        let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = libc::XDP_COPY;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = 0;
        // SAFETY: `sa` is a valid sockaddr_xdp and its size is passed.
        let r = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(steps.err("bind to queue 0", " (copy mode)")(io::Error::last_os_error()));
        }
        let key: u32 = 0;
        let value: u32 = self.fd.as_raw_fd() as u32;
        let mut a = [0u8; 128];
        put32(&mut a, 0, self._map.as_raw_fd() as u32);
        put64(&mut a, 8, &key as *const u32 as u64);
        put64(&mut a, 16, &value as *const u32 as u64);
        // MAP_UPDATE_ELEM returns 0, not a descriptor: call it directly.
        // SAFETY: `a` is a valid 128-byte attribute block whose pointers point to live locals.
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, a.as_mut_ptr(), a.len() as u32) };
        if r != 0 {
            return Err(steps.err("put the socket in the XSKMAP", "")(io::Error::last_os_error()));
        }
        let mut a = [0u8; 128];
        put32(&mut a, 0, self._prog.as_raw_fd() as u32);
        put32(&mut a, 4, ifindex);
        put32(&mut a, 8, BPF_XDP);
        self._link = bpf(BPF_LINK_CREATE, &mut a)
            .map_err(steps.err("attach the XDP program", " (another XDP program already attached?)"))?;
        Ok(())
    }

    /// Frames whose offload-partial TCP/UDP checksum the port completed.
    pub fn checksums_completed(&self) -> u64 {
        self.csum_completed
    }

    fn fill_slot(&self, i: u32) -> U64Slot {
        U64Slot(self.fill.desc.wrapping_add(((i & self.fill.mask) as usize) * 8).cast())
    }

    fn comp_slot(&self, i: u32) -> U64Slot {
        U64Slot(self.comp.desc.wrapping_add(((i & self.comp.mask) as usize) * 8).cast())
    }

    fn desc(ring: &Ring, i: u32) -> *mut libc::xdp_desc {
        ring.desc.wrapping_add(((i & ring.mask) as usize) * std::mem::size_of::<libc::xdp_desc>()).cast()
    }

    /// Return completed transmit frames to the free list.
    fn reclaim(&mut self) {
        let prod = self.comp.prod().load(Ordering::Acquire);
        let mut cons = self.comp.cons().load(Ordering::Relaxed);
        while cons != prod {
            let addr = self.comp_slot(cons).read_volatile_u64();
            self.free_tx.push(addr);
            cons = cons.wrapping_add(1);
        }
        self.comp.cons().store(cons, Ordering::Release);
    }
}

/// A slot of the fill or completion ring.
struct U64Slot(*mut u64);

impl U64Slot {
    fn write_volatile_u64(&self, v: u64) {
        // SAFETY: the slot lies inside a ring mapping owned by the port (index masked to the ring size), aligned to 8.
        unsafe { self.0.write_volatile(v) }
    }
    fn read_volatile_u64(&self) -> u64 {
        // SAFETY: as in `write_volatile_u64`.
        unsafe { self.0.read_volatile() }
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        for r in [&self.rx, &self.tx, &self.fill, &self.comp] {
            if !r.map.is_null() {
                // SAFETY: unmapping exactly a ring mapping made in `open`.
                unsafe { libc::munmap(r.map.cast(), r.map_len) };
            }
        }
        // SAFETY: unmapping exactly the UMEM mapped in `open`; the socket (closed after this) no longer uses it once
        // its rings are gone.
        unsafe { libc::munmap(self.umem.cast(), self.umem_len) };
    }
}

impl Port for AfXdpPort {
    type Buf = MemBuf;

    fn rx_burst(&mut self, out: &mut Burst<MemBuf>) -> usize {
        let prod = self.rx.prod().load(Ordering::Acquire);
        let mut cons = self.rx.cons().load(Ordering::Relaxed);
        let mut fill_prod = self.fill.prod().load(Ordering::Relaxed);
        let mut n = 0;
        while cons != prod && !out.is_full() {
            let d = Self::desc(&self.rx, cons);
            // SAFETY: `d` is a descriptor slot inside the RX ring mapping, published by the kernel (acquire above).
            let desc = unsafe { d.read() };
            let (addr, len) = (desc.addr, desc.len as usize);
            let len = len.min(FRAME_SIZE as usize);
            let base = addr & !(u64::from(FRAME_SIZE) - 1);
            if (addr as usize) + len <= self.umem_len {
                let start = self.umem.wrapping_add(addr as usize);
                // SAFETY: `addr + len` lies inside the UMEM (checked), a frame the kernel handed us on the RX ring.
                let data = unsafe { std::slice::from_raw_parts(start, len) };
                let buf = self.pool.pop().or_else(|| {
                    // Buffers held by other workers (hand-off): grow, bounded.
                    (self.pool_grown < MAX_POOL_GROWTH).then(|| {
                        self.pool_grown += 1;
                        MemBuf::new()
                    })
                });
                match buf {
                    Some(mut b) => {
                        b.fill(data);
                        // Frames from a local stack may carry an offload-partial checksum and no flag saying so.
                        if super::offload::is_partial(b.data()) {
                            super::offload::complete_l4_checksum(b.data_mut());
                            self.csum_completed += 1;
                        }
                        self.stats.rx_packets += 1;
                        self.stats.rx_bytes += len as u64;
                        out.push(b);
                        n += 1;
                    }
                    None => self.stats.rx_dropped += 1,
                }
            }
            // Give the frame straight back to the kernel.
            self.fill_slot(fill_prod).write_volatile_u64(base);
            fill_prod = fill_prod.wrapping_add(1);
            cons = cons.wrapping_add(1);
        }
        self.rx.cons().store(cons, Ordering::Release);
        self.fill.prod().store(fill_prod, Ordering::Release);
        n
    }

    fn tx_burst(&mut self, pkts: &mut Burst<MemBuf>) -> usize {
        self.reclaim();
        let mut prod = self.tx.prod().load(Ordering::Relaxed);
        let cons = self.tx.cons().load(Ordering::Acquire);
        let mut sent = 0;
        for b in pkts.iter() {
            if prod.wrapping_sub(cons) >= RING {
                break;
            }
            let Some(addr) = self.free_tx.pop() else { break };
            let d = b.data();
            let len = d.len().min(FRAME_SIZE as usize);
            // SAFETY: `addr` is a transmit frame we own (from the free list), inside the UMEM; `len <= FRAME_SIZE`.
            unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), self.umem.wrapping_add(addr as usize), len) };
            let desc = Self::desc(&self.tx, prod);
            // SAFETY: the TX slot at `prod` is ours until the producer index moves past it (release below).
            unsafe { desc.write(libc::xdp_desc { addr, len: len as u32, options: 0 }) };
            prod = prod.wrapping_add(1);
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
            sent += 1;
        }
        if sent > 0 {
            self.tx.prod().store(prod, Ordering::Release);
            if !super::kick_tx(self.fd.as_raw_fd()) {
                self.stats.tx_dropped += 1;
            }
        }
        for b in pkts.drain(..sent) {
            let _ = self.pool.push(b);
        }
        sent
    }

    fn free(&mut self, buf: MemBuf) {
        let _ = self.pool.push(buf);
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn name(&self) -> &str {
        &self.name
    }
}
