//! AF_PACKET port: a packet socket bound to one interface with memory-mapped TPACKET_V2 receive and transmit rings
//! (Linux `Documentation/networking/packet_mmap.rst`). The fallback kernel path where AF_XDP is not available.
//!
//! Receive copies each frame out of the ring into a buffer from the port's pool and hands the ring slot back to the
//! kernel; transmit copies into a free TX slot, marks it for sending and kicks the socket once per burst with a
//! non-blocking `sendto`. VLAN tags the kernel moved into the ring header are put back into the frame, so the pipeline
//! sees the frame as it was on the wire, and TCP/UDP checksums a local stack left to "hardware" (checksum offload,
//! flagged `TP_STATUS_CSUMNOTREADY`) are completed, as a NIC would. Several workers can share an interface with
//! `PACKET_FANOUT` (hash mode).
//!
//! Pool: buffers circulate between receive and transmit/free. A worker that transmits buffers other workers received
//! (hand-off) accumulates them; one that runs dry grows its pool by allocation, up to [`AfPacketConfig::max_pool`],
//! counted in [`AfPacketPort::pool_grown`] — a rare, bounded allocation rather than a stalled receive ring.
//!
//! All `unsafe` of this port is in this module; every block says why it is sound.
#![allow(unsafe_code)]

use super::{Burst, Port, PortStats};
use crate::packet::{MemBuf, PacketBuf, DATA_ROOM};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

/// Ring and pool sizes.
#[derive(Debug, Clone)]
pub struct AfPacketConfig {
    /// Frames in each ring (a power of two; 2048-byte frames, 4 MB per ring at 2048 frames).
    pub frames: u32,
    /// Join this fanout group (hash mode), to share the interface with other workers' sockets.
    pub fanout: Option<u16>,
    /// Bypass the kernel qdisc on transmit (`PACKET_QDISC_BYPASS`).
    pub qdisc_bypass: bool,
    /// Times the pool may grow by allocation when it runs dry (buffers held by other workers).
    pub max_pool: usize,
    /// The worker's shared buffer pool; `None`: the port makes its own.
    pub pool: Option<super::BufPool>,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        Self { frames: 2048, fanout: None, qdisc_bypass: true, max_pool: 8192, pool: None }
    }
}

/// Why a port could not be opened; each names the step, so the operator knows what the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// Interface name unusable.
    #[error("interface {0:?}: no such interface (if_nametoindex failed: {1})")]
    NoInterface(String, io::Error),
    /// `socket(AF_PACKET)` failed (needs CAP_NET_RAW).
    #[error("socket(AF_PACKET, SOCK_RAW): {0} (edgelb needs CAP_NET_RAW, e.g. run as root)")]
    Socket(io::Error),
    /// A `setsockopt` step failed.
    #[error("setsockopt {0}: {1}")]
    SetOption(&'static str, io::Error),
    /// Mapping the rings failed.
    #[error("mmap of the packet rings ({0} bytes): {1}")]
    Mmap(usize, io::Error),
    /// Binding to the interface failed.
    #[error("bind to interface {0:?}: {1}")]
    Bind(String, io::Error),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

const FRAME_SIZE: u32 = 2048;
const BLOCK_SIZE: u32 = 1 << 16;
/// Data offset in a TX frame: TPACKET_ALIGN(sizeof(tpacket2_hdr)).
const TX_DATA: usize =
    (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1);

/// A packet socket with mapped rings on one interface.
pub struct AfPacketPort {
    name: String,
    fd: OwnedFd,
    ring: *mut u8,
    ring_len: usize,
    frames: u32,
    rx_next: u32,
    tx_next: u32,
    pool: super::BufPool,
    max_pool: usize,
    pool_grown: u64,
    csum_completed: u64,
    stats: PortStats,
}

// SAFETY: the mapping is owned by this port alone (no other Rust value aliases it); the kernel's concurrent access
// goes through the tp_status handshake with fences. Moving the port to another thread moves that ownership.
unsafe impl Send for AfPacketPort {}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort").field("name", &self.name).field("stats", &self.stats).finish()
    }
}

/// tp_status is the first field of tpacket2_hdr: a pointer to it without dereferencing anything.
fn status_ptr(h: *mut libc::tpacket2_hdr) -> *mut u32 {
    h.cast()
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn setopt<T>(fd: &OwnedFd, level: i32, name: i32, what: &'static str, v: &T) -> Result<(), AfPacketError> {
    // SAFETY: `v` points to a live `T` of `size_of::<T>()` bytes for the duration of the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(AfPacketError::SetOption(what, last_err()));
    }
    Ok(())
}

fn if_index(ifname: &str) -> Result<u32, AfPacketError> {
    let cname = CString::new(ifname).map_err(|_| AfPacketError::Config(format!("interface {ifname:?}")))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(AfPacketError::NoInterface(ifname.to_string(), last_err()));
    }
    Ok(ifindex)
}

/// A packet socket for `proto` (network order) with TPACKET_V2 RX and TX rings of `cfg.frames` frames each.
fn ring_socket(proto: u16, cfg: &AfPacketConfig) -> Result<OwnedFd, AfPacketError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
    if raw < 0 {
        return Err(AfPacketError::Socket(last_err()));
    }
    // SAFETY: `raw` is a fresh descriptor we own; OwnedFd closes it exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let version = libc::tpacket_versions::TPACKET_V2 as i32;
    setopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, "PACKET_VERSION=TPACKET_V2", &version)?;
    let frames_per_block = BLOCK_SIZE / FRAME_SIZE;
    let req = libc::tpacket_req {
        tp_block_size: BLOCK_SIZE,
        tp_block_nr: cfg.frames / frames_per_block,
        tp_frame_size: FRAME_SIZE,
        tp_frame_nr: cfg.frames,
    };
    setopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, "PACKET_RX_RING", &req)?;
    setopt(&fd, libc::SOL_PACKET, libc::PACKET_TX_RING, "PACKET_TX_RING", &req)?;
    if cfg.qdisc_bypass {
        let one: i32 = 1;
        setopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS", &one)?;
    }
    Ok(fd)
}

/// Map the socket's RX and TX rings (`len` bytes), locked in memory when RLIMIT_MEMLOCK allows.
fn map_rings(fd: &OwnedFd, len: usize) -> Result<*mut libc::c_void, AfPacketError> {
    for flags in [libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE, libc::MAP_SHARED] {
        // SAFETY: a new shared mapping of the socket's rings, at an address the kernel chooses; checked below.
        let ring = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd.as_raw_fd(), 0)
        };
        if ring != libc::MAP_FAILED {
            return Ok(ring);
        }
    }
    Err(AfPacketError::Mmap(len, last_err()))
}

impl AfPacketPort {
    /// Open interface `ifname` (in the caller's network namespace).
    ///
    /// # Errors
    /// [`AfPacketError`] naming the step that failed.
    pub fn open(ifname: &str, cfg: AfPacketConfig) -> Result<Self, AfPacketError> {
        if !cfg.frames.is_power_of_two() || cfg.frames < 64 || cfg.frames > 1 << 16 {
            return Err(AfPacketError::Config(format!("frames {} must be a power of two in 64..=65536", cfg.frames)));
        }
        let ifindex = if_index(ifname)?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = ring_socket(proto, &cfg)?;
        let ring_len = 2 * (cfg.frames as usize) * FRAME_SIZE as usize;
        let ring = map_rings(&fd, ring_len)?;
        let mut port = Self {
            name: ifname.to_string(),
            fd,
            ring: ring.cast(),
            ring_len,
            frames: cfg.frames,
            rx_next: 0,
            tx_next: 0,
            pool: cfg.pool.clone().unwrap_or_else(|| super::buf_pool(cfg.frames as usize + 2 * super::BURST)),
            max_pool: cfg.max_pool,
            pool_grown: 0,
            csum_completed: 0,
            stats: PortStats::default(),
        };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value before the fields are set.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
        let r = unsafe {
            libc::bind(
                port.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(AfPacketError::Bind(ifname.to_string(), last_err()));
        }
        if let Some(group) = cfg.fanout {
            let arg: u32 = u32::from(group) | (libc::PACKET_FANOUT_HASH << 16);
            setopt(&port.fd, libc::SOL_PACKET, libc::PACKET_FANOUT, "PACKET_FANOUT", &arg)?;
        }
        port.stats = PortStats::default();
        Ok(port)
    }

    /// Frames whose TCP/UDP checksum the port completed (sent by a local stack with checksum offload).
    pub fn checksums_completed(&self) -> u64 {
        self.csum_completed
    }

    /// Times the pool had to grow by allocation (buffers kept by other workers).
    pub fn pool_grown(&self) -> u64 {
        self.pool_grown
    }

    /// Header of frame `i` of the RX (`tx == false`) or TX ring.
    fn frame(&self, tx: bool, i: u32) -> *mut libc::tpacket2_hdr {
        let off = (if tx { self.frames as usize } else { 0 } + i as usize) * FRAME_SIZE as usize;
        debug_assert!(off + FRAME_SIZE as usize <= self.ring_len);
        // SAFETY: `off + FRAME_SIZE <= ring_len`, so the pointer stays inside the mapping; frames are 2048-aligned,
        // which satisfies tpacket2_hdr's alignment.
        unsafe { self.ring.add(off).cast() }
    }

    fn take_buf(&mut self) -> Option<MemBuf> {
        if let Some(b) = self.pool.pop() {
            return Some(b);
        }
        if self.pool_grown < self.max_pool as u64 {
            self.pool_grown += 1;
            return Some(MemBuf::new());
        }
        None
    }
}

impl Drop for AfPacketPort {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `open`; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
    }
}

impl Port for AfPacketPort {
    type Buf = MemBuf;

    fn rx_burst(&mut self, out: &mut Burst<MemBuf>) -> usize {
        let mut n = 0;
        while !out.is_full() {
            let h = self.frame(false, self.rx_next);
            // SAFETY: `status_ptr(h)` points into a frame header inside our mapping; the kernel writes tp_status
            // concurrently, so it is read volatile, and the acquire fence orders the frame reads after it.
            let status = unsafe { std::ptr::read_volatile(status_ptr(h)) };
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            fence(Ordering::Acquire);
            // SAFETY: the frame belongs to user space until tp_status is handed back; the header is plain data.
            let hdr = unsafe { std::ptr::read(h) };
            let mac = usize::from(hdr.tp_mac);
            let len = (hdr.tp_snaplen as usize).min(FRAME_SIZE as usize - mac.min(FRAME_SIZE as usize));
            let start = h.cast::<u8>().wrapping_add(mac);
            // SAFETY: `mac + len <= FRAME_SIZE` (clamped above), so `start..start+len` lies inside this frame of the
            // mapping, which user space owns until tp_status is handed back below.
            let data = unsafe { std::slice::from_raw_parts(start, len) };
            match self.take_buf() {
                Some(mut b) => {
                    let vlan = status & libc::TP_STATUS_VLAN_VALID != 0 && len >= 12;
                    if vlan && len + 4 <= DATA_ROOM {
                        // Put back the tag the kernel stripped: MACs, TPID, TCI, then the rest.
                        let tpid = if hdr.tp_vlan_tpid == 0 { 0x8100 } else { hdr.tp_vlan_tpid };
                        b.fill(&data[..12]);
                        b.set_len(len + 4);
                        let d = b.data_mut();
                        d[12..14].copy_from_slice(&tpid.to_be_bytes());
                        d[14..16].copy_from_slice(&hdr.tp_vlan_tci.to_be_bytes());
                        d[16..].copy_from_slice(&data[12..]);
                    } else {
                        b.fill(data);
                    }
                    if status & libc::TP_STATUS_CSUMNOTREADY != 0 && super::offload::complete_l4_checksum(b.data_mut())
                    {
                        self.csum_completed += 1;
                    }
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += b.data_len() as u64;
                    out.push(b);
                    n += 1;
                }
                None => self.stats.rx_dropped += 1,
            }
            fence(Ordering::Release);
            // SAFETY: handing the frame back: a volatile write of tp_status after our reads (release fence above).
            unsafe { std::ptr::write_volatile(status_ptr(h), libc::TP_STATUS_KERNEL) };
            self.rx_next = (self.rx_next + 1) & (self.frames - 1);
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut Burst<MemBuf>) -> usize {
        let mut sent = 0;
        for b in pkts.iter() {
            let h = self.frame(true, self.tx_next);
            // SAFETY: as in rx_burst: tp_status is shared with the kernel, read volatile.
            let status = unsafe { std::ptr::read_volatile(status_ptr(h)) };
            if status != libc::TP_STATUS_AVAILABLE && status & libc::TP_STATUS_WRONG_FORMAT == 0 {
                break; // ring full: the kernel has not sent this slot yet
            }
            let d = b.data();
            let len = d.len().min(FRAME_SIZE as usize - TX_DATA);
            fence(Ordering::Acquire);
            // SAFETY: the slot is ours (status AVAILABLE); `TX_DATA + len <= FRAME_SIZE`, inside this frame, and the
            // source is a distinct buffer.
            unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), h.cast::<u8>().wrapping_add(TX_DATA), len) };
            // SAFETY: tp_len is the u32 after tp_status in the slot's header, which is ours until handed over.
            unsafe { std::ptr::write_volatile(h.cast::<u32>().wrapping_add(1), len as u32) };
            fence(Ordering::Release);
            // SAFETY: volatile store handing the slot to the kernel, after the data writes (release fence).
            unsafe { std::ptr::write_volatile(status_ptr(h), libc::TP_STATUS_SEND_REQUEST) };
            self.tx_next = (self.tx_next + 1) & (self.frames - 1);
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
            sent += 1;
        }
        if sent > 0 && !super::kick_tx(self.fd.as_raw_fd()) {
            self.stats.tx_dropped += 1;
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
        let mut s = self.stats;
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of their sizes. PACKET_STATISTICS resets the kernel's counters,
        // so the figure is the drops since the previous call; the caller accumulates (published every 100 ms).
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            s.rx_dropped += u64::from(st.tp_drops);
        }
        s
    }

    fn name(&self) -> &str {
        &self.name
    }
}
