//! DPDK port (feature `dpdk`): SR-IOV VFs bound to vfio-pci, or any DPDK vdev (`net_ring`, `net_af_xdp`,
//! `net_af_packet`, ...), as a [`Port`] of the same pipeline and workers as the kernel ports.
//!
//! The safe layer over `edgelb-dpdk-sys`; every `unsafe` block of the DPDK port is in this module and says why it is
//! sound, and every C return code becomes a [`DpdkError`] here, at the boundary.
//!
//! - [`Eal`]: the Environment Abstraction Layer, initialised once per process from an [`EalConfig`]. The main
//!   lcore is mapped onto every CPU the process may use (`--lcores=0@(...)`), so initialisation does not pin the
//!   calling thread; workers are pinned by the worker pool (`core_affinity`) like every other port's, and register
//!   with EAL on their thread ([`Port::on_worker_thread`]) so that they get an lcore id and with it the per-lcore
//!   mempool caches. One worker model for every driver, and no second thread-spawning scheme to keep apart.
//! - [`Mempool`]: a packet mbuf pool; a pool lives until the process exits (DPDK frees them only at EAL clean-up, and
//!   mbufs and device queues refer to them by pointer), so the handle is `Copy`.
//! - [`Mbuf`]: an owning single-segment mbuf. `Drop` frees it to its pool; transmitting hands it to the driver
//!   and forgets it.
//! - [`DpdkDevice`]: an ethdev configured with one RX and one TX queue per worker, RSS with a symmetric key when
//!   there is more than one queue, MTU, promiscuous mode; start, stop, restart, link, stats and xstats.
//!   [`DpdkDevice::queue`] gives the [`DpdkPort`] of one worker.
#![allow(unsafe_code)]

use super::{Burst, Port, PortStats, BURST};
use crate::packet::{PacketBuf, HEADROOM};
use edgelb_dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A DPDK call failed; each variant names the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpdkError {
    /// A DPDK function returned an error code.
    #[error("DPDK {step}: {msg} (error {code}){hint}")]
    Call {
        /// What was being done.
        step: &'static str,
        /// The positive errno-style code DPDK returned.
        code: i32,
        /// DPDK's text for it.
        msg: String,
        /// What to check.
        hint: &'static str,
    },
    /// EAL can be initialised once per process.
    #[error("DPDK EAL is already initialised with other arguments ({0:?})")]
    EalAgain(Vec<String>),
    /// No ethdev of that name.
    #[error("DPDK: no port {0:?} (a PCI address in the allow-list or a vdev name); EAL has {1:?}")]
    NoPort(String, Vec<String>),
    /// An argument out of range.
    #[error("DPDK: invalid {0}: {1}")]
    Invalid(&'static str, String),
    /// The device is in the wrong state for the request.
    #[error("DPDK port {0}: {1}")]
    State(String, &'static str),
}

fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string for any code.
    let p = unsafe { sys::rte_strerror(code) };
    if p.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null, NUL-terminated (see above), read before any other DPDK call on this thread.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A negative return `r` (−errno) or, when `r` is −1, `rte_errno`, as a typed error.
fn fail(step: &'static str, r: i32, hint: &'static str) -> DpdkError {
    let code = if r == -1 { rte_errno() } else { -r };
    DpdkError::Call { step, code, msg: strerror(code), hint }
}

fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno; no arguments.
    unsafe { sys::edgelb_errno() }
}

/// What EAL is started with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EalConfig {
    /// PCI addresses EAL may probe (`-a`); empty means `--no-pci`.
    pub pci_allow: Vec<String>,
    /// Virtual devices (`--vdev`), e.g. `net_ring0`, `net_af_xdp0,iface=veth0`.
    pub vdevs: Vec<String>,
    /// Run without huge pages (`--no-huge`), with `memory_mb` of ordinary memory.
    pub no_huge: bool,
    /// Memory to reserve (`-m`), in MiB.
    pub memory_mb: Option<u32>,
    /// A hugetlbfs mount to use (`--huge-dir`); with huge pages EAL runs `--in-memory`, so no files stay behind.
    pub huge_dir: Option<String>,
    /// EAL log level (`--log-level`), e.g. `error` or `pmd.net.af_xdp:error`.
    pub log_levels: Vec<String>,
    /// Further EAL arguments, passed as they are.
    pub extra: Vec<String>,
}

impl EalConfig {
    /// The configuration the tests and benchmarks here use: no PCI, no huge pages, 512 MiB.
    pub fn no_hardware(vdevs: &[&str]) -> Self {
        Self {
            vdevs: vdevs.iter().map(|s| s.to_string()).collect(),
            no_huge: true,
            memory_mb: Some(512),
            log_levels: vec!["error".into()],
            ..Self::default()
        }
    }

    /// The argument vector given to `rte_eal_init`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["edgelb".to_string(), format!("--lcores=0@({})", allowed_cpus())];
        if self.pci_allow.is_empty() {
            a.push("--no-pci".into());
        }
        for p in &self.pci_allow {
            a.push("-a".into());
            a.push(p.clone());
        }
        for v in &self.vdevs {
            a.push(format!("--vdev={v}"));
        }
        if self.no_huge {
            a.extend(["--no-huge".into(), "--no-shconf".into()]);
        } else {
            a.push("--in-memory".into());
            if let Some(d) = &self.huge_dir {
                a.push(format!("--huge-dir={d}"));
            }
        }
        if let Some(m) = self.memory_mb {
            a.extend(["-m".into(), m.to_string()]);
        }
        for l in &self.log_levels {
            a.push(format!("--log-level={l}"));
        }
        a.push("--no-telemetry".into());
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// The CPUs this thread may run on, as an EAL cpuset list (`0,1,5`).
fn allowed_cpus() -> String {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return "0".into();
    }
    let cpus: Vec<String> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `c` of a valid set, `c` below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .map(|c| c.to_string())
        .collect();
    if cpus.is_empty() {
        "0".into()
    } else {
        cpus.join(",")
    }
}

/// The initialised EAL of this process.
#[derive(Debug)]
pub struct Eal {
    args: Vec<String>,
}

static EAL: OnceLock<Result<Eal, DpdkError>> = OnceLock::new();
static POOL_SEQ: AtomicU64 = AtomicU64::new(0);

impl Eal {
    /// Initialise EAL once; later calls with the same configuration return the same EAL.
    ///
    /// # Errors
    /// [`DpdkError`] when `rte_eal_init` fails (e.g. memory cannot be reserved), or when EAL is already running with
    /// other arguments.
    pub fn init(cfg: &EalConfig) -> Result<&'static Eal, DpdkError> {
        let args = cfg.args();
        let r = EAL.get_or_init(|| {
            let c: Vec<CString> = match args.iter().map(|s| CString::new(s.as_str())).collect() {
                Ok(c) => c,
                Err(_) => return Err(DpdkError::Invalid("EAL argument", "contains a NUL byte".into())),
            };
            let mut ptrs: Vec<*mut libc::c_char> = c.iter().map(|s| s.as_ptr().cast_mut()).collect();
            ptrs.push(std::ptr::null_mut());
            // SAFETY: argv holds `argc` valid NUL-terminated strings and a terminating null; EAL may permute the
            // pointer array (it is ours and mutable) but does not write the strings. `c` outlives the call, and EAL
            // keeps no pointer into argv after returning (it copies what it keeps).
            let n = unsafe { sys::rte_eal_init((ptrs.len() - 1) as i32, ptrs.as_mut_ptr()) };
            if n < 0 {
                return Err(fail(
                    "EAL init",
                    -1,
                    " (huge pages: reserve and mount them, or run with no_huge; vdev names must be known PMDs)",
                ));
            }
            Ok(Eal { args: args.clone() })
        });
        match r {
            Ok(e) if e.args == args => Ok(e),
            Ok(e) => Err(DpdkError::EalAgain(e.args.clone())),
            Err(e) => Err(e.clone()),
        }
    }

    /// The arguments EAL was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Names of the ethdevs EAL probed.
    pub fn port_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for id in 0..sys::RTE_MAX_ETHPORTS as u16 {
            if let Some(n) = port_name(id) {
                v.push(n);
            }
        }
        v
    }

    /// Register the calling thread with EAL (an lcore id, so mempool caches work). Idempotent.
    ///
    /// # Errors
    /// [`DpdkError`] when every lcore id is taken.
    pub fn register_thread(&self) -> Result<(), DpdkError> {
        // SAFETY: reads this thread's lcore id.
        if unsafe { sys::edgelb_lcore_id() } != u32::MAX {
            return Ok(());
        }
        // SAFETY: EAL is initialised (`self` exists); registers the calling thread.
        let r = unsafe { sys::rte_thread_register() };
        if r < 0 {
            return Err(fail("register thread", -1, " (too many threads for RTE_MAX_LCORE)"));
        }
        Ok(())
    }
}

fn port_name(id: u16) -> Option<String> {
    // SAFETY: a plain query of port validity.
    if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: `buf` is writable and at least RTE_ETH_NAME_MAX_LEN (64) bytes, as the function requires.
    let r = unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: the function wrote a NUL-terminated name into `buf`.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// A packet mbuf pool. Pools live until the process exits.
#[derive(Debug, Clone, Copy)]
pub struct Mempool {
    mp: NonNull<sys::rte_mempool>,
    size: u32,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer (default ring ops); the handle is a pointer to a pool that
// is never freed.
unsafe impl Send for Mempool {}
// SAFETY: as above; every operation through a shared handle is thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `n` mbufs with a per-lcore cache of `cache`, each with [`HEADROOM`] + 2048 bytes of room, on
    /// `socket` (`None`: any).
    ///
    /// # Errors
    /// [`DpdkError`] when memory is short (with `--no-huge`, raise `-m` or lower `n`).
    pub fn create(_eal: &Eal, n: u32, cache: u32, socket: Option<i32>) -> Result<Self, DpdkError> {
        if n == 0 {
            return Err(DpdkError::Invalid("mempool size", "0 mbufs".into()));
        }
        let name = CString::new(format!("edgelb_mp{}", POOL_SEQ.fetch_add(1, Ordering::Relaxed)))
            .map_err(|_| DpdkError::Invalid("mempool name", "NUL".into()))?;
        let room = (HEADROOM + crate::packet::DATA_ROOM) as u16;
        // SAFETY: EAL is initialised; `name` is a valid NUL-terminated string copied by DPDK.
        let mp = unsafe {
            sys::rte_pktmbuf_pool_create(
                name.as_ptr(),
                n,
                cache.min(512),
                0,
                room,
                socket.unwrap_or(sys::SOCKET_ID_ANY),
            )
        };
        let mp = NonNull::new(mp).ok_or_else(|| {
            fail("create mbuf pool", -1, " (not enough DPDK memory: raise -m / reserve huge pages, or fewer mbufs)")
        })?;
        Ok(Self { mp, size: n })
    }

    /// Mbufs in the pool (including per-lcore caches).
    pub fn avail(&self) -> u32 {
        // SAFETY: a valid pool pointer.
        unsafe { sys::rte_mempool_avail_count(self.mp.as_ptr()) }
    }

    /// Mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// An empty mbuf, or `None` when the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: a valid pool; the returned mbuf (when not null) is ours, reset, single-segment.
        let m = unsafe { sys::edgelb_pktmbuf_alloc(self.mp.as_ptr()) };
        NonNull::new(m).map(Mbuf)
    }

    /// An mbuf holding a copy of `bytes` (at most the data room), or `None` when the pool is exhausted.
    pub fn alloc_from(&self, bytes: &[u8]) -> Option<Mbuf> {
        let mut m = self.alloc()?;
        let n = bytes.len().min(m.tailroom());
        if !m.set_len(n) {
            return None;
        }
        m.data_mut().copy_from_slice(&bytes[..n]);
        Some(m)
    }

    fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.mp.as_ptr()
    }
}

/// An owning, single-segment mbuf.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one `Mbuf` value; freeing it from any thread is allowed (mempool ops are
// thread-safe).
unsafe impl Send for Mbuf {}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf").field("len", &self.data().len()).finish()
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is not used after this.
        unsafe { sys::edgelb_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl Mbuf {
    #[inline]
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: the pointer is a valid mbuf owned by `self` for as long as `self` lives.
        unsafe { self.0.as_ref() }
    }
    #[inline]
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as `m`, and `&mut self` makes the access exclusive.
        unsafe { self.0.as_mut() }
    }
    /// Give up ownership (the driver now owns the mbuf).
    #[inline]
    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
    /// Segments in the chain (the pipeline handles single-segment mbufs only).
    pub fn segments(&self) -> u16 {
        self.m().nb_segs
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: `buf_addr + data_off` .. `+ data_len` lies inside the mbuf's buffer (DPDK's invariant, kept by every
        // method here), which lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as `data`; `&mut self` makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        if m.nb_segs != 1 || n > usize::from(m.data_off) {
            return false;
        }
        m.data_off -= n as u16;
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        if m.nb_segs != 1 || n > usize::from(m.data_len) {
            return false;
        }
        m.data_off += n as u16;
        m.data_len -= n as u16;
        m.pkt_len -= n as u32;
        true
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        let m = self.m_mut();
        if m.nb_segs != 1 || usize::from(m.data_off) + len > usize::from(m.buf_len) {
            return false;
        }
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        true
    }
    #[inline]
    fn tailroom(&self) -> usize {
        let m = self.m();
        usize::from(m.buf_len) - usize::from(m.data_off) - usize::from(m.data_len)
    }
}

/// How a device is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// RX and TX queues: one per worker.
    pub queues: u16,
    /// RX descriptors per queue.
    pub rx_desc: u16,
    /// TX descriptors per queue.
    pub tx_desc: u16,
    /// MTU to set (`None`: leave the device's).
    pub mtu: Option<u16>,
    /// Receive every frame (a VF needs `trust on` at the PF for this to take effect).
    pub promiscuous: bool,
    /// Finish checksums that a local kernel stack left partial (`CHECKSUM_PARTIAL`): needed for kernel-backed vdevs
    /// (`net_af_xdp`, `net_af_packet`) facing veth, never for a VF.
    pub complete_partial_checksums: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mtu: None,
            promiscuous: true,
            complete_partial_checksums: false,
        }
    }
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    /// Up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// Device counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the device dropped because no RX descriptor was free (the workers fell behind).
    pub rx_missed: u64,
    /// Erroneous received packets.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// RX mbuf allocation failures (the pool ran dry).
    pub rx_nombuf: u64,
}

/// The symmetric RSS key (0x6d5a repeated): a flow and its reverse hash to the same queue.
const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};
/// RSS over IPv4/IPv6 and their TCP/UDP ports (`RTE_ETH_RSS_*` bits 2–5 and 8–11).
const RSS_HF: u64 = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11);

#[derive(Debug)]
struct Shared {
    port: u16,
    name: String,
    complete_csum: bool,
}

/// A configured ethdev.
#[derive(Debug)]
pub struct DpdkDevice {
    shared: Arc<Shared>,
    queues: u16,
    pool: Mempool,
    mac: [u8; 6],
    started: bool,
    eal: &'static Eal,
}

/// Configure `port` for `queues` RX and TX queues, with symmetric RSS over them when there is more than one.
fn configure(port: u16, name: &str, info: &sys::rte_eth_dev_info, queues: u16) -> Result<(), DpdkError> {
    let mut conf = sys::rte_eth_conf::default();
    let mut key = SYMMETRIC_RSS_KEY;
    if queues > 1 {
        let hf = RSS_HF & info.flow_type_rss_offloads;
        if hf == 0 {
            return Err(DpdkError::Invalid(
                "queues",
                format!("{name} cannot spread flows over queues (no RSS); run one worker on it"),
            ));
        }
        conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = hf;
        let klen = usize::from(info.hash_key_size);
        if klen > 0 && klen <= key.len() {
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = info.hash_key_size;
        }
    }
    // SAFETY: valid port, stopped (never started or stopped by a previous owner); `conf` and the key it points
    // to live across the call (DPDK copies the key).
    let r = unsafe { sys::rte_eth_dev_configure(port, queues, queues, &conf) };
    if r != 0 {
        return Err(fail("configure", r, " (is the device stopped and not used by another process?)"));
    }
    Ok(())
}

/// Set up each RX queue (receiving into `pool`) and TX queue, on the device's NUMA socket.
fn setup_queues(port: u16, pool: &Mempool, cfg: &DeviceConfig) -> Result<(), DpdkError> {
    // SAFETY: the socket of a valid port.
    let socket = unsafe { sys::rte_eth_dev_socket_id(port) };
    let socket = if socket < 0 { 0 } else { socket as u32 };
    for q in 0..cfg.queues {
        // SAFETY: configured port, queue below the configured count, default queue config (null), a valid pool.
        let r = unsafe { sys::rte_eth_rx_queue_setup(port, q, cfg.rx_desc, socket, std::ptr::null(), pool.as_ptr()) };
        if r != 0 {
            return Err(fail("RX queue setup", r, " (fewer rx_desc, or a bigger pool)"));
        }
        // SAFETY: as above for the TX queue.
        let r = unsafe { sys::rte_eth_tx_queue_setup(port, q, cfg.tx_desc, socket, std::ptr::null()) };
        if r != 0 {
            return Err(fail("TX queue setup", r, ""));
        }
    }
    Ok(())
}

impl DpdkDevice {
    /// Configure the ethdev called `name` (a PCI address from the allow-list, or a vdev name such as `net_ring0`)
    /// with `cfg.queues` RX/TX queue pairs fed from `pool`, and start it.
    ///
    /// # Errors
    /// [`DpdkError`] naming the step.
    pub fn open(eal: &'static Eal, name: &str, pool: Mempool, cfg: &DeviceConfig) -> Result<Self, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Invalid("port name", "NUL".into()))?;
        let mut port = 0u16;
        // SAFETY: `cname` is NUL-terminated; `port` is a valid out-pointer.
        if unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) } != 0 {
            return Err(DpdkError::NoPort(name.into(), eal.port_names()));
        }
        Self::open_id(eal, port, pool, cfg)
    }

    /// The NUMA socket of the ethdev called `name` (`None`: unknown name or no affinity), to create its mbuf pool on.
    pub fn socket_of(_eal: &Eal, name: &str) -> Option<i32> {
        let cname = CString::new(name).ok()?;
        let mut port = 0u16;
        // SAFETY: `cname` is NUL-terminated; `port` is a valid out-pointer.
        if unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) } != 0 {
            return None;
        }
        // SAFETY: a valid port id.
        let s = unsafe { sys::rte_eth_dev_socket_id(port) };
        (s >= 0).then_some(s)
    }

    /// As [`DpdkDevice::open`], by port id.
    ///
    /// # Errors
    /// [`DpdkError`] naming the step.
    pub fn open_id(eal: &'static Eal, port: u16, pool: Mempool, cfg: &DeviceConfig) -> Result<Self, DpdkError> {
        let name = port_name(port).ok_or_else(|| DpdkError::NoPort(format!("#{port}"), eal.port_names()))?;
        if cfg.queues == 0 {
            return Err(DpdkError::Invalid("queues", "0".into()));
        }
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id; `info` is a valid out-pointer.
        let r = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
        if r != 0 {
            return Err(fail("device info", r, ""));
        }
        if cfg.queues > info.max_rx_queues || cfg.queues > info.max_tx_queues {
            return Err(DpdkError::Invalid(
                "queues",
                format!(
                    "{} workers but {name} has {} RX / {} TX queues",
                    cfg.queues, info.max_rx_queues, info.max_tx_queues
                ),
            ));
        }
        configure(port, &name, &info, cfg.queues)?;
        setup_queues(port, &pool, cfg)?;
        if let Some(mtu) = cfg.mtu {
            // SAFETY: a configured port.
            let r = unsafe { sys::rte_eth_dev_set_mtu(port, mtu) };
            if r != 0 {
                return Err(fail("set MTU", r, " (the PF's MTU bounds a VF's)"));
            }
        }
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: valid port and out-pointer.
        let r = unsafe { sys::rte_eth_macaddr_get(port, &mut mac) };
        if r != 0 {
            return Err(fail("read MAC address", r, ""));
        }
        let mut dev = Self {
            shared: Arc::new(Shared { port, name, complete_csum: cfg.complete_partial_checksums }),
            queues: cfg.queues,
            pool,
            mac: mac.addr_bytes,
            started: false,
            eal,
        };
        dev.start()?;
        if cfg.promiscuous {
            // SAFETY: a started port. Some PMDs (a VF without trust) refuse; that is reported, not fatal.
            let r = unsafe { sys::rte_eth_promiscuous_enable(port) };
            if r != 0 && r != -libc::ENOTSUP {
                return Err(fail("promiscuous mode", r, " (a VF needs `ip link set PF vf N trust on`)"));
            }
        }
        Ok(dev)
    }

    /// Start the device (after [`DpdkDevice::stop`]).
    ///
    /// # Errors
    /// [`DpdkError`] from `rte_eth_dev_start`.
    pub fn start(&mut self) -> Result<(), DpdkError> {
        if self.started {
            return Ok(());
        }
        // SAFETY: a configured port with its queues set up.
        let r = unsafe { sys::rte_eth_dev_start(self.shared.port) };
        if r != 0 {
            return Err(fail("start", r, ""));
        }
        self.started = true;
        Ok(())
    }

    /// Stop the device. Refused while a worker still holds one of its queues.
    ///
    /// # Errors
    /// [`DpdkError::State`] while queues are in use, or the driver's error.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.started {
            return Ok(());
        }
        if Arc::strong_count(&self.shared) > 1 {
            return Err(DpdkError::State(self.shared.name.clone(), "queues are still held by workers"));
        }
        // Let the driver give back mbufs whose transmission completed but which it has not reaped yet: the generic
        // clean-up call, and an empty burst for drivers that reap completions only when asked to send (net_af_xdp
        // does, so the last burst before a stop would otherwise stay out of the pool).
        for q in 0..self.queues {
            // SAFETY: a started port and a configured TX queue that no handle uses (checked above); drivers without
            // the operation return -ENOTSUP.
            unsafe { sys::rte_eth_tx_done_cleanup(self.shared.port, q, 0) };
            let mut none = [std::ptr::null_mut::<sys::rte_mbuf>(); 1];
            // SAFETY: as above; a burst of zero packets reads no pointer from `none`.
            unsafe { sys::edgelb_tx_burst(self.shared.port, q, none.as_mut_ptr(), 0) };
        }
        // SAFETY: a started port that no queue handle uses any more (checked above).
        let r = unsafe { sys::rte_eth_dev_stop(self.shared.port) };
        if r != 0 {
            return Err(fail("stop", r, ""));
        }
        self.started = false;
        Ok(())
    }

    /// The port of worker `q`: its RX and TX queue. `None` when `q` is out of range or a handle for it exists.
    pub fn queue(&self, q: u16) -> Option<DpdkPort> {
        (q < self.queues).then(|| DpdkPort {
            shared: self.shared.clone(),
            queue: q,
            name: format!("{}/q{q}", self.shared.name),
            stats: PortStats::default(),
            rx_multiseg: 0,
            csum_completed: 0,
            eal: self.eal,
        })
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The ethdev name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The ethdev port id.
    pub fn port_id(&self) -> u16 {
        self.shared.port
    }

    /// The pool its queues receive into.
    pub fn pool(&self) -> Mempool {
        self.pool
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Link {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid port and out-pointer.
        let r = unsafe { sys::rte_eth_link_get_nowait(self.shared.port, &mut l) };
        if r != 0 {
            return Link::default();
        }
        Link { up: l.link_status() != 0, speed_mbps: l.link_speed, full_duplex: l.link_duplex() != 0 }
    }

    /// Device counters.
    pub fn stats(&self) -> DeviceStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port and out-pointer.
        if unsafe { sys::rte_eth_stats_get(self.shared.port, &mut s) } != 0 {
            return DeviceStats::default();
        }
        DeviceStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Extended counters (driver-specific names), for metrics.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        let port = self.shared.port;
        // SAFETY: a null buffer with size 0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(port, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let n = n as usize;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n];
        let mut vals = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: both buffers hold `n` elements, as passed.
        let got_names = unsafe { sys::rte_eth_xstats_get_names(port, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got = unsafe { sys::rte_eth_xstats_get(port, vals.as_mut_ptr(), n as u32) };
        if got_names <= 0 || got <= 0 {
            return Vec::new();
        }
        let m = (got as usize).min(got_names as usize).min(n);
        vals[..m]
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK writes NUL-terminated names into the fixed arrays.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) }.to_string_lossy().into_owned();
                Some((s, v.value))
            })
            .collect()
    }
}

impl Drop for DpdkDevice {
    /// Stop and close the device: closing releases its queues and the mbufs they hold (a driver such as `net_af_xdp`
    /// keeps its fill ring stocked with mbufs while merely stopped). Queue handles keep `shared` alive; while a worker
    /// still holds one, the device is left running rather than pulled from under it.
    fn drop(&mut self) {
        if Arc::strong_count(&self.shared) == 1 && self.stop().is_ok() {
            // SAFETY: a stopped port that no queue handle uses; the port id is not used after this.
            unsafe { sys::rte_eth_dev_close(self.shared.port) };
        }
    }
}

/// One worker's RX and TX queue of a [`DpdkDevice`].
pub struct DpdkPort {
    shared: Arc<Shared>,
    queue: u16,
    name: String,
    stats: PortStats,
    rx_multiseg: u64,
    csum_completed: u64,
    eal: &'static Eal,
}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort").field("name", &self.name).field("stats", &self.stats).finish()
    }
}

impl DpdkPort {
    /// Received multi-segment packets, dropped (the pipeline needs contiguous frames; set the MTU within the mbuf
    /// data room).
    pub fn rx_multiseg(&self) -> u64 {
        self.rx_multiseg
    }
    /// Frames whose partial checksum this port finished.
    pub fn csum_completed(&self) -> u64 {
        self.csum_completed
    }
}

impl Port for DpdkPort {
    type Buf = Mbuf;

    #[inline]
    fn rx_burst(&mut self, out: &mut Burst<Mbuf>) -> usize {
        let room = out.remaining_capacity();
        if room == 0 {
            return 0;
        }
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); BURST];
        // SAFETY: `raw` has room for `room` <= BURST pointers; this queue is used by this handle's thread only.
        let n =
            usize::from(unsafe { sys::edgelb_rx_burst(self.shared.port, self.queue, raw.as_mut_ptr(), room as u16) });
        let mut kept = 0;
        for &p in &raw[..n] {
            let Some(p) = NonNull::new(p) else { continue };
            let mut m = Mbuf(p);
            if m.segments() != 1 {
                self.rx_multiseg += 1;
                continue; // dropped: `m` frees the whole chain
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += m.data().len() as u64;
            if self.shared.complete_csum && super::offload::is_partial(m.data()) {
                super::offload::complete_l4_checksum(m.data_mut());
                self.csum_completed += 1;
            }
            out.push(m);
            kept += 1;
        }
        kept
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut Burst<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); BURST];
        for (r, m) in raw.iter_mut().zip(pkts.iter()) {
            *r = m.0.as_ptr();
        }
        let len = pkts.len();
        // SAFETY: `raw[..len]` are valid mbufs owned by `pkts`; the driver takes ownership of the first `sent`,
        // which we then forget below. This queue is used by this handle's thread only.
        let sent =
            usize::from(unsafe { sys::edgelb_tx_burst(self.shared.port, self.queue, raw.as_mut_ptr(), len as u16) });
        for m in pkts.drain(..sent.min(len)) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += m.data().len() as u64;
            let _ = m.into_raw();
        }
        sent
    }

    /// This queue's counters; queue 0 also reports the device's receive losses (descriptors missed, no mbuf, errors
    /// and dropped multi-segment frames), which DPDK counts per device, not per queue.
    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        s.rx_dropped = self.rx_multiseg;
        if self.queue == 0 {
            let mut d = sys::rte_eth_stats::default();
            // SAFETY: valid port and out-pointer; reading counters is safe while the queues run.
            if unsafe { sys::rte_eth_stats_get(self.shared.port, &mut d) } == 0 {
                s.rx_dropped += d.imissed + d.rx_nombuf + d.ierrors;
            }
        }
        s
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn on_worker_thread(&mut self) {
        if let Err(e) = self.eal.register_thread() {
            // Still correct without an lcore id: the mempool is used without its per-lcore cache (slower).
            static WARNED: Mutex<bool> = Mutex::new(false);
            if let Ok(mut w) = WARNED.lock() {
                if !*w {
                    *w = true;
                    eprintln!("edgelb: {e}; this worker runs without a mempool cache");
                }
            }
        }
    }
}

/// A ring pair for tests and benchmarks: an ethdev made with `rte_eth_from_rings` whose RX ring the caller fills and
/// whose TX ring the caller drains.
#[derive(Debug)]
pub struct RingPair {
    /// The ethdev name (`net_ring_<name>`).
    pub name: String,
    rx: NonNull<sys::rte_ring>,
    tx: NonNull<sys::rte_ring>,
}

// SAFETY: DPDK rings created without single-producer/consumer flags are MP/MC safe.
unsafe impl Send for RingPair {}
// SAFETY: as above.
unsafe impl Sync for RingPair {}

impl RingPair {
    /// Create rings of `depth` (a power of two) and a `net_ring` ethdev over them named `name`.
    ///
    /// # Errors
    /// [`DpdkError`] from ring or ethdev creation.
    pub fn create(_eal: &Eal, name: &str, depth: u32) -> Result<Self, DpdkError> {
        let mk = |suffix: &str| -> Result<NonNull<sys::rte_ring>, DpdkError> {
            let n =
                CString::new(format!("{name}_{suffix}")).map_err(|_| DpdkError::Invalid("ring name", "NUL".into()))?;
            // SAFETY: EAL is initialised; `n` is NUL-terminated and copied by DPDK; flags 0 = MP/MC.
            let r = unsafe { sys::rte_ring_create(n.as_ptr(), depth, sys::SOCKET_ID_ANY, 0) };
            NonNull::new(r).ok_or_else(|| fail("create ring", -1, " (depth must be a power of two; names unique)"))
        };
        let (rx, tx) = (mk("rx")?, mk("tx")?);
        let cname = CString::new(name).map_err(|_| DpdkError::Invalid("port name", "NUL".into()))?;
        let rxs = [rx.as_ptr()];
        let txs = [tx.as_ptr()];
        // SAFETY: one valid ring each way; `cname` is NUL-terminated; DPDK keeps the ring pointers, which live for the
        // process (rings are never freed here).
        let id = unsafe { sys::rte_eth_from_rings(cname.as_ptr(), rxs.as_ptr(), 1, txs.as_ptr(), 1, 0) };
        if id < 0 {
            return Err(fail("create ring ethdev", -1, ""));
        }
        // The ring PMD prefixes the name (`net_ring_<name>`); keep the ethdev's own.
        let name = port_name(id as u16).unwrap_or_else(|| format!("net_ring_{name}"));
        Ok(Self { name, rx, tx })
    }

    /// Queue mbufs for the port to receive; returns how many were queued (the rest are given back).
    pub fn inject(&self, mbufs: &mut Vec<Mbuf>) -> usize {
        let ptrs: Vec<*mut libc::c_void> = mbufs.iter().map(|m| m.0.as_ptr().cast()).collect();
        // SAFETY: `ptrs` holds valid mbufs owned by `mbufs`; the ring takes the first `n`, which we forget.
        let n = unsafe { sys::edgelb_ring_enqueue_burst(self.rx.as_ptr(), ptrs.as_ptr(), ptrs.len() as u32) } as usize;
        for m in mbufs.drain(..n) {
            let _ = m.into_raw();
        }
        n
    }

    /// Take up to `max` transmitted mbufs.
    pub fn collect(&self, max: usize) -> Vec<Mbuf> {
        let mut ptrs = vec![std::ptr::null_mut::<libc::c_void>(); max];
        // SAFETY: `ptrs` has room for `max` pointers; the dequeued mbufs become ours.
        let n = unsafe { sys::edgelb_ring_dequeue_burst(self.tx.as_ptr(), ptrs.as_mut_ptr(), max as u32) } as usize;
        ptrs[..n].iter().filter_map(|&p| NonNull::new(p.cast()).map(Mbuf)).collect()
    }

    /// Mbufs waiting in the RX ring (not yet received by the port).
    pub fn rx_pending(&self) -> u32 {
        // SAFETY: a valid ring.
        unsafe { sys::edgelb_ring_count(self.rx.as_ptr()) }
    }

    /// Drop every mbuf left in the RX ring.
    pub fn drain_rx(&self) -> usize {
        let mut total = 0;
        loop {
            let mut ptrs = [std::ptr::null_mut::<libc::c_void>(); 64];
            // SAFETY: room for 64 pointers; the dequeued mbufs become ours and are freed by `Mbuf`'s drop.
            let n = unsafe { sys::edgelb_ring_dequeue_burst(self.rx.as_ptr(), ptrs.as_mut_ptr(), 64) } as usize;
            if n == 0 {
                return total;
            }
            total += n;
            for &p in &ptrs[..n] {
                drop(NonNull::new(p.cast()).map(Mbuf));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_args_without_hardware() {
        let a = EalConfig::no_hardware(&["net_ring0"]).args();
        for want in ["--no-pci", "--no-huge", "--no-shconf", "--vdev=net_ring0", "-m", "512"] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        assert!(a[1].starts_with("--lcores=0@("), "{a:?}");
        let hw = EalConfig {
            pci_allow: vec!["0000:3b:02.1".into()],
            huge_dir: Some("/mnt/huge".into()),
            ..Default::default()
        };
        let a = hw.args();
        assert!(a.windows(2).any(|w| w[0] == "-a" && w[1] == "0000:3b:02.1"), "{a:?}");
        assert!(a.contains(&"--in-memory".to_string()) && !a.contains(&"--no-pci".to_string()), "{a:?}");
    }

    #[test]
    fn symmetric_key_is_symmetric() {
        assert!(SYMMETRIC_RSS_KEY.chunks(2).all(|c| c == [0x6d, 0x5a]));
    }
}
