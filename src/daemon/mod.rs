//! The appliance daemon (`edgelbd`, also `edgelb daemon`). Reads a TOML config (`configs/edgelb.toml`), opens the ports, pins one worker per
//! configured core, and forwards until SIGTERM or SIGINT. SIGHUP re-reads the config and swaps the snapshot: stable
//! service and backend ids keep tracked flows on their backends; a config that fails validation is logged and the
//! running one kept. The slow path (ARP/NDP/ICMP for the appliance's own addresses, ARP for VIPs, neighbour
//! resolution, gratuitous ARP) runs on the daemon's thread; learnt neighbours join the snapshot. The gRPC API
//! (`[api]`, default 127.0.0.1:50051; `edgelbctl` is its client) changes the same model as the file, through the
//! same store; a SIGHUP makes the file authoritative again.
//!
//! ```text
//! edgelbd --config FILE [--log-format text|json] [--check] [--drain-timeout SECS]
//! ```
//! SIGTERM/SIGINT drain: new flows are refused (counted `draining`), tracked flows keep going, and the daemon exits
//! once the workers track no established TCP flow and no UDP or other flow (closing and half-open ones end on their
//! own), or after the drain timeout (30 s); a second signal stops at once. A silent connection is waited for.
//! `--check` validates the file and exits. Exit codes: 0 clean stop, 2 usage or config error, 1 runtime failure,
//! 70 a worker died (a panic anywhere in a worker, or its thread ending): the daemon logs which and exits at once, in
//! debug and release builds alike, so a supervisor restarts it rather than leaving a black hole.
//!
//! Test-only: `EDGELB_FAULT_KILL_WORKER=N` in the environment makes worker N panic about 300 ms after start.

mod drain;
mod learnt;
mod ownership;
mod replicate;

use drain::{Drain, DrainState};
use edgelb_controlplane::config::{self, Driver, Loaded};
use edgelb_controlplane::control::{ControlPlane, ControlSettings};
use edgelb_controlplane::store::Store;
use edgelb_dataplane::model::Model;
use edgelb_dataplane::packet::{MemBuf, PacketBuf};
use edgelb_dataplane::pipeline::DropReason;
use edgelb_dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
use edgelb_dataplane::port::afxdp::AfXdpPort;
use edgelb_dataplane::port::any::AnyPort;
use edgelb_dataplane::port::{buf_pool, Port, BURST};
use edgelb_dataplane::slowpath::SlowPath;
use edgelb_dataplane::worker::{WorkerSetup, WorkerView, Workers};
use learnt::Learnt;
use ownership::Ownership;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// `edgelbd`'s command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "edgelbd",
    version,
    about = "The edgelb appliance: the dataplane's pinned workers on the configured ports, the slow path, the \
             management API, metrics, health checks, BGP and Kubernetes sync",
    after_help = "Exit codes: 0 stopped (SIGTERM/SIGINT drain, or --check passed), 1 a port, the API or the dataplane \
                  could not start, 2 the command line or the config file is wrong, 70 a worker died.\nSIGHUP \
                  re-reads the file (services and neighbours)."
)]
struct Args {
    /// The config file (TOML; configs/edgelb.toml documents every key).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Check the config file and exit.
    #[arg(long)]
    check: bool,
    /// Seconds a SIGTERM drain waits for tracked flows before stopping.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64))]
    drain_timeout: u64,
    /// Keep the API's changes (services, peers) in this file, written atomically at each change and laid over the
    /// config file at start and at every SIGHUP.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Args {
    fn json(&self) -> bool {
        self.log_format == LogFormat::Json
    }

    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }
}

/// Fill in MACs the file left out (and nothing else set) from the kernel interfaces themselves.
fn resolve_macs(l: &mut Loaded) -> Result<(), String> {
    for (i, p) in l.ports.iter().enumerate() {
        if p.mac.is_some() || l.model.interfaces[i].mac != [0; 6] {
            continue;
        }
        let path = format!("/sys/class/net/{}/address", p.name);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("port[{i}] {:?}: {path}: {e}", p.name))?;
        let v: Vec<u8> = text.trim().split(':').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect();
        let mac: [u8; 6] = v.try_into().map_err(|_| format!("port[{i}] {:?}: unreadable MAC {text:?}", p.name))?;
        l.model.interfaces[i].mac = mac;
    }
    Ok(())
}

/// Exit code when a worker dies.
pub const EXIT_WORKER_DIED: u8 = 70;

/// A panic in a worker thread (`edgelb-wN`) is logged with the worker and ends the process with
/// [`EXIT_WORKER_DIED`] at once: the same in a debug build (where it would otherwise unwind and leave the thread
/// dead) and in a release build (`panic = "abort"`, where it would otherwise abort with no word of which worker).
/// Other threads' panics are logged and then take their usual course.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("unnamed").to_string();
        if let Some(w) = name.strip_prefix("edgelb-w") {
            error!(worker = w, thread = %name, "worker died: {info}; edgelbd exits so a supervisor restarts it");
            eprintln!("edgelbd: worker {w} ({name}) died: {info}");
            std::process::exit(i32::from(EXIT_WORKER_DIED));
        }
        error!(thread = %name, "panic: {info}");
        default(info);
    }));
}

/// Run the daemon with `args` (without the program name): what `edgelbd` and `edgelb daemon` do.
pub fn run(args: Vec<String>) -> ExitCode {
    let mut argv = vec!["edgelbd".to_string()];
    argv.extend(args);
    let args = match <Args as clap::Parser>::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors print to stderr with code 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let sub = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.json() {
        sub.json().init();
    } else {
        sub.init();
    }
    install_panic_hook();
    match start(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                // Config errors go to stderr as they are (line and field), before any log line matters.
                DaemonError::Config(m) => eprintln!("edgelbd: {m}"),
                DaemonError::Start(m) => error!("{m}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Why edgelbd stops with an error; [`DaemonError::exit_code`] is the exit code it gives (a worker that dies exits
/// with [`EXIT_WORKER_DIED`] at once instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonError {
    /// The command line, the config file or what it names (an interface's MAC, a DPDK-only setting) is wrong.
    Config(String),
    /// A port, the DPDK environment, the control plane or the signal handlers could not start.
    Start(String),
}

impl DaemonError {
    /// 2 for a wrong config, 1 for a start that failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => 2,
            DaemonError::Start(_) => 1,
        }
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Config(m) | DaemonError::Start(m) => f.write_str(m),
        }
    }
}

/// Load the config, open the ports and serve until stopped.
fn start(args: &Args) -> Result<(), DaemonError> {
    let mut loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(e) => return Err(DaemonError::Config(format!("{}: {e}", args.config.display()))),
    };
    if args.check {
        println!(
            "{}: ok ({} services, {} ports)",
            args.config.display(),
            loaded.model.services.len(),
            loaded.ports.len()
        );
        return Ok(());
    }
    let cores: Vec<Option<usize>> =
        if loaded.cores.is_empty() { vec![None] } else { loaded.cores.iter().map(|&c| Some(c)).collect() };
    if loaded.ports.iter().any(|p| p.driver == Driver::Dpdk) {
        return run_dpdk(args, loaded, &cores);
    }
    resolve_macs(&mut loaded).map_err(DaemonError::Config)?;
    let nworkers = cores.len();
    let mut setups = Vec::new();
    for (w, core) in cores.iter().enumerate() {
        let mut ports = Vec::new();
        // One buffer pool for all ports of this worker: frames usually leave by another port than they came in by.
        let pool = buf_pool(loaded.ports.iter().map(|p| p.frames as usize + 2 * BURST).sum());
        for (pi, p) in loaded.ports.iter().enumerate() {
            let opened = match p.driver {
                Driver::Afpacket => {
                    let fanout = (nworkers > 1).then_some(0x4c00 + pi as u16);
                    let cfg =
                        AfPacketConfig { frames: p.frames, fanout, pool: Some(pool.clone()), ..Default::default() };
                    AfPacketPort::open(&p.name, cfg).map(AnyPort::AfPacket).map_err(|e| e.to_string())
                }
                Driver::Afxdp => {
                    AfXdpPort::open_with_pool(&p.name, pool.clone()).map(AnyPort::AfXdp).map_err(|e| e.to_string())
                }
                Driver::Dpdk => Err("dpdk ports are opened apart".to_string()),
            };
            match opened {
                Ok(port) => ports.push(port),
                Err(e) => {
                    return Err(DaemonError::Start(format!("port {}: worker {w}: cannot open port: {e}", p.name)))
                }
            }
        }
        setups.push(WorkerSetup {
            worker: w as u16,
            core: *core,
            ports,
            sizes: loaded.tables,
            polling: loaded.polling,
            new_flow_limit: loaded.new_flow_limit,
        });
    }
    serve(args, loaded, setups, |f: &[u8]| Some(MemBuf::from_slice(f)))
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(args: &Args, _loaded: Loaded, _cores: &[Option<usize>]) -> Result<(), DaemonError> {
    Err(DaemonError::Config(format!(
        "{}: a port has driver = \"dpdk\", but this edgelbd was built without DPDK \
         (cargo build --release --features dpdk, with libdpdk-dev installed)",
        args.config.display()
    )))
}

/// Open EAL and the DPDK ports (one RX/TX queue pair per worker on each), take their MACs, and serve.
#[cfg(feature = "dpdk")]
fn run_dpdk(args: &Args, mut loaded: Loaded, cores: &[Option<usize>]) -> Result<(), DaemonError> {
    use edgelb_dataplane::port::dpdk::Eal;
    prepare_vfs(&mut loaded)?;
    let eal_cfg = eal_config(&loaded);
    let eal =
        Eal::init(&eal_cfg).map_err(|e| DaemonError::Start(format!("{e} (EAL arguments {:?})", eal_cfg.args())))?;
    let (pools, devices) = open_devices(eal, &mut loaded, cores.len() as u32)?;
    // What the drivers took for their receive rings at start; at exit the pools must be back to at least this.
    let avail = |pools: &Pools| pools.iter().map(|(_, p)| u64::from(p.avail())).sum::<u64>();
    let size: u64 = pools.iter().map(|(_, p)| u64::from(p.size())).sum();
    let ready = avail(&pools);
    info!(mbufs_free = ready, mbufs = size, "dpdk pool ready");
    let Some(&(_, pool)) = pools.first() else {
        return Err(DaemonError::Config("no DPDK port".into()));
    };
    let mut setups = Vec::new();
    for (w, core) in cores.iter().enumerate() {
        let ports = devices.iter().filter_map(|d| d.queue(w as u16)).collect();
        setups.push(WorkerSetup {
            worker: w as u16,
            core: *core,
            ports,
            sizes: loaded.tables,
            polling: loaded.polling,
            new_flow_limit: loaded.new_flow_limit,
        });
    }
    let code = serve(args, loaded, setups, move |f: &[u8]| pool.alloc_from(f));
    for d in &devices {
        let s = d.stats();
        info!(
            ethdev = d.name(),
            rx = s.rx_packets,
            tx = s.tx_packets,
            rx_missed = s.rx_missed,
            rx_nombuf = s.rx_nombuf,
            rx_errors = s.rx_errors,
            tx_errors = s.tx_errors,
            "dpdk port stopped"
        );
    }
    drop(devices);
    let free = avail(&pools);
    if free < ready {
        warn!(mbufs_free = free, at_start = ready, "dpdk pool: {} mbufs not returned", ready - free);
    }
    info!(mbufs_free = free, at_start = ready, mbufs = size, "dpdk pool at exit");
    code
}

/// VFs named by PF and index: settings over netlink, vfio-pci, and their PCI addresses into the allow-list.
#[cfg(feature = "dpdk")]
fn prepare_vfs(loaded: &mut Loaded) -> Result<(), DaemonError> {
    for p in &mut loaded.ports {
        if let Some((pf, settings)) = &p.vf {
            match edgelb_controlplane::sriov::prepare(std::path::Path::new("/sys"), pf, settings) {
                Ok(pci) => {
                    info!(port = %p.name, pf = %pf, vf = settings.vf, pci = %pci, "VF prepared for DPDK");
                    p.pci = Some(pci);
                }
                Err(e) => return Err(DaemonError::Start(format!("port {}: {e}", p.name))),
            }
        }
    }
    Ok(())
}

/// EAL's arguments from the ports (PCI allow-list, vdevs) and the `[dpdk]` table.
#[cfg(feature = "dpdk")]
fn eal_config(loaded: &Loaded) -> edgelb_dataplane::port::dpdk::EalConfig {
    let d = &loaded.dpdk;
    edgelb_dataplane::port::dpdk::EalConfig {
        pci_allow: loaded.ports.iter().filter_map(|p| p.pci.clone()).collect(),
        vdevs: loaded.ports.iter().filter_map(|p| p.vdev.clone()).collect(),
        no_huge: d.no_huge,
        memory_mb: d.memory_mb,
        huge_dir: d.huge_dir.clone(),
        log_levels: if d.log_levels.is_empty() { vec!["error".into()] } else { d.log_levels.clone() },
        extra: d.eal_args.clone(),
    }
}

/// The mbuf pools, one per NUMA socket (`None`: the socket is unknown).
#[cfg(feature = "dpdk")]
type Pools = Vec<(Option<i32>, edgelb_dataplane::port::dpdk::Mempool)>;

/// Mbuf pools per NUMA socket and the started devices, in port order. A port without `mac =` takes the device's MAC.
#[cfg(feature = "dpdk")]
fn open_devices(
    eal: &'static edgelb_dataplane::port::dpdk::Eal,
    loaded: &mut Loaded,
    workers: u32,
) -> Result<(Pools, Vec<edgelb_dataplane::port::dpdk::DpdkDevice>), DaemonError> {
    use edgelb_dataplane::port::dpdk::{DeviceConfig, DpdkDevice, Mempool};
    // One pool per NUMA socket, on the devices' own sockets: a VF's mbufs stay in its node's memory.
    let mut pools: Pools = Vec::new();
    let mut devices = Vec::new();
    for (i, p) in loaded.ports.iter().enumerate() {
        let name = p.dpdk_name().unwrap_or(&p.name);
        let socket = DpdkDevice::socket_of(eal, name);
        let pool = match pools.iter().find(|(s, _)| *s == socket) {
            Some((_, pool)) => *pool,
            None => match Mempool::create(eal, loaded.dpdk.mbufs.saturating_mul(workers), 256, socket) {
                Ok(pool) => {
                    info!(socket = ?socket, mbufs = pool.size(), "dpdk mbuf pool");
                    pools.push((socket, pool));
                    pool
                }
                Err(e) => return Err(DaemonError::Start(format!("port {}: {e}", p.name))),
            },
        };
        let kernel_backed =
            p.vdev.as_deref().is_some_and(|v| v.starts_with("net_af_xdp") || v.starts_with("net_af_packet"));
        let cfg = DeviceConfig {
            queues: workers as u16,
            rx_desc: p.frames.min(4096) as u16,
            tx_desc: p.frames.min(4096) as u16,
            mtu: Some(p.mtu),
            promiscuous: true,
            complete_partial_checksums: kernel_backed,
        };
        let dev = DpdkDevice::open(eal, name, pool, &cfg)
            .map_err(|e| DaemonError::Start(format!("port {}: cannot open DPDK port: {e}", p.name)))?;
        if p.mac.is_none() {
            loaded.model.interfaces[i].mac = dev.mac();
        }
        let link = dev.link();
        let m = loaded.model.interfaces[i].mac;
        let mac = format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
        info!(port = i, name = %p.name, ethdev = dev.name(), %mac, link_up = link.up, speed_mbps = link.speed_mbps, "dpdk port started");
        devices.push(dev);
    }
    Ok((pools, devices))
}

/// Build the first snapshot, start the workers, and run the slow path, reloads and drain until stopped. `make_buf`
/// turns a slow-path frame into a buffer of the ports' kind (`None`: out of buffers, counted).
fn serve<P, F>(args: &Args, mut loaded: Loaded, setups: Vec<WorkerSetup<P>>, make_buf: F) -> Result<(), DaemonError>
where
    P: Port + 'static,
    P::Buf: 'static,
    F: Fn(&[u8]) -> Option<P::Buf>,
{
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Start(format!("cannot install signal handlers: {e}")))?;
    let nworkers = setups.len();
    let (store, workers, api, gshut_tx, mut replicator) = start_appliance(args, &loaded, setups)?;
    let handle = store.handle();
    info!(workers = nworkers, services = loaded.model.services.len(), api = ?loaded.api, "edgelbd forwarding");
    // The slow path: ARP/NDP/ICMP for the appliance itself and its VIPs, neighbour resolution. It runs here, on the
    // daemon's thread; its answers leave through worker 0's inject ring.
    let mut slow = SlowPath::with_timers(&handle.load(), loaded.neighbor_timers);
    slow.set_wanted(wanted(&loaded.model));
    let inject = workers.inject.clone();
    let mut inject_full = 0u64;
    let mut emit = |port: u16, frame: &[u8]| match make_buf(frame) {
        Some(b) => {
            if inject.push((port, b)).is_err() {
                inject_full += 1;
            }
        }
        None => inject_full += 1,
    };
    // VRRP first: a VIP of a virtual router is announced only once this appliance is its Master.
    let ports: Vec<(String, bool)> = loaded
        .ports
        .iter()
        .zip(&loaded.model.interfaces)
        .map(|(p, i)| (p.name.clone(), i.addrs.iter().any(|(a, _)| a.is_ipv4())))
        .collect();
    store.set_vrrp_context((ports, loaded.vrrp.clone()));
    let mut owner = Ownership::start(&mut slow, &store, loaded.vrrp.clone())?;
    slow.announce(&mut emit);
    let mut learnt = Learnt::new(Instant::now(), Duration::from_millis(20));
    let mut seen_version = store.version();
    let mut drain: Option<Drain> = None;
    let mut next_census = Instant::now();
    let mut fault = std::env::var("EDGELB_FAULT_KILL_WORKER")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .map(|w| (w, Instant::now() + Duration::from_millis(300)));
    let view = workers.view();
    // A neighbour probe `edgelbctl doctor` asked for: its id and until when its answers are reported.
    let mut probing: Option<(u64, Instant)> = None;

    'run: loop {
        let now = Instant::now();
        check_workers(&workers, &view, &mut fault, now);
        if drain.is_none() {
            if let Some(timeout) = store.take_drain_request() {
                drain = start_drain(&store, &gshut_tx, now, timeout.unwrap_or(args.drain_timeout()));
                if drain.is_none() {
                    break 'run;
                }
            }
        }
        if let Some(d) = drain.as_mut() {
            if now >= next_census {
                next_census = now + CENSUS_EVERY;
                let census = view.census(CENSUS_WAIT).ok();
                let over = drain_over(d, now, census);
                store.set_drain_progress(d.progress(now));
                if over {
                    break 'run;
                }
            }
        }
        pump_slow_path(&mut slow, &workers, now, &mut emit);
        follow_probes(&mut slow, &store, &mut probing, now, &mut emit);
        if let Some(r) = replicator.as_mut() {
            r.pump(&workers.replicas, &view, &store, now);
        }
        owner.follow(&mut slow, &store, drain.is_some(), now, &mut emit);
        learnt.add(slow.take_changes());
        if let Some(batch) = learnt.due(now) {
            match store.learn(batch) {
                Ok(generation) => info!(generation, neighbours = learnt.total(), "neighbours learnt"),
                Err(e) => error!("rebuild with learnt neighbours failed: {e}"),
            }
        }
        // The service set changed (API or file): the slow path answers for the new VIPs and resolves new backends.
        let version = store.version();
        if version != seen_version {
            seen_version = version;
            follow_services(&mut slow, &store, &mut emit);
        }
        if on_signals(signals.pending(), args, &mut loaded, &store, &gshut_tx, &mut drain, now) {
            break 'run;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // A Master's last advert says priority 0: the backup takes the VIPs over at once. Worker 0 sends it.
    slow.vrrp_stop(&mut emit);
    owner.follow(&mut slow, &store, true, Instant::now(), &mut emit);
    std::thread::sleep(Duration::from_millis(20));
    info!("stopping");
    if let Some(r) = &replicator {
        info!("flow replication: {}", r.summary());
    }
    api.stop();
    let (_ports, total) = workers.stop_with_totals();
    log_stopped(&total, &slow, inject_full);
    Ok(())
}

/// The store on the file's model, the workers on its first snapshot, and the control plane (API, metrics, health
/// checks, BGP, Kubernetes) on the store. The sender tells BGP to send GRACEFUL_SHUTDOWN when a drain starts.
#[allow(clippy::type_complexity)]
/// What [`start_appliance`] started: the store, the workers, the control plane, the drain's GRACEFUL_SHUTDOWN
/// sender, and flow replication when configured.
type Started<P> =
    (std::sync::Arc<Store>, Workers<P>, ControlPlane, tokio::sync::watch::Sender<bool>, Option<replicate::Replicator>);

fn start_appliance<P>(args: &Args, loaded: &Loaded, setups: Vec<WorkerSetup<P>>) -> Result<Started<P>, DaemonError>
where
    P: Port + 'static,
    P::Buf: 'static,
{
    // The one model: the file's now, the API's changes later; the store alone builds snapshots.
    let store =
        Store::new(loaded.model.clone()).map_err(|e| DaemonError::Config(format!("{}: {e}", args.config.display())))?;
    if let Some(path) = &args.state {
        attach_state(&store, path)?;
    }
    for (i, p) in loaded.ports.iter().enumerate() {
        let mac = loaded.model.interfaces[i].mac;
        info!(port = i, interface = %p.name, driver = ?p.driver, mac = %mac.map(|b| format!("{b:02x}")).join(":"), "port open");
    }
    let replica_depth = if loaded.replication.is_some() { replicate::QUEUE_DEPTH } else { 0 };
    let workers = Workers::spawn_replicating(setups, store.handle(), 4096, 1024, replica_depth);
    // Flow replication: the peers' flows are taken before the control plane announces a VIP, so a flow the router
    // hands this appliance at once is one it knows.
    let replicator = match &loaded.replication {
        Some(c) => {
            let mut r = replicate::Replicator::start(c).map_err(DaemonError::Start)?;
            r.sync_before_announcing(&workers.replicas, &workers.view(), &store, REPLICATION_SYNC_WAIT);
            Some(r)
        }
        None => None,
    };
    store.attach_workers(workers.view());
    store.set_port_names(
        loaded.ports.iter().map(|p| (p.name.clone(), format!("{:?}", p.driver).to_lowercase())).collect(),
    );
    let (gshut_tx, gshut_rx) = tokio::sync::watch::channel(false);
    match ControlPlane::start(store.clone(), control_settings(loaded, &store, gshut_rx)) {
        Ok(api) => Ok((store, workers, api, gshut_tx, replicator)),
        Err(e) => {
            let _ = workers.stop();
            Err(DaemonError::Start(e))
        }
    }
}

/// How long a starting appliance waits for its peers' flows before it announces its VIPs.
const REPLICATION_SYNC_WAIT: Duration = Duration::from_secs(2);

/// How often a draining daemon counts the workers' tracked flows.
const CENSUS_EVERY: Duration = Duration::from_millis(100);
/// How long a census waits for a worker's answer.
const CENSUS_WAIT: Duration = Duration::from_millis(500);

/// Whether a drain is over (no flow in use, or timed out with some left), logging which.
fn drain_over(d: &mut Drain, now: Instant, census: Option<edgelb_dataplane::pipeline::FlowCensus>) -> bool {
    match d.observe(now, census) {
        DrainState::Draining => false,
        DrainState::Drained => {
            let c = d.last().unwrap_or_default();
            info!(closing = c.closing, half_open = c.half_open, "drained: no established or UDP flow left");
            true
        }
        DrainState::TimedOut => {
            let c = d.last().unwrap_or_default();
            warn!(
                established = c.established,
                udp = c.udp,
                other = c.other,
                "drain timeout ({:?}) reached with flows still tracked",
                d.timeout()
            );
            true
        }
    }
}

/// Start a drain (SIGTERM, SIGINT or the API): BGP routes tagged GRACEFUL_SHUTDOWN, new flows refused. `None`: the
/// draining config could not be published; stop now.
fn start_drain(
    store: &Store,
    graceful_shutdown: &tokio::sync::watch::Sender<bool>,
    now: Instant,
    timeout: Duration,
) -> Option<Drain> {
    let _ = graceful_shutdown.send(true);
    if let Err(e) = store.set_draining(true) {
        error!("cannot publish the draining config ({e}); stopping now");
        return None;
    }
    info!(?timeout, "draining: new flows refused; a second signal stops at once");
    let d = Drain::start(now, timeout);
    store.set_drain_progress(d.progress(now));
    Some(d)
}

/// SIGHUP reloads the file. The first SIGTERM/SIGINT starts a drain: new flows refused, tracked ones finish, and BGP
/// peers learn first (GRACEFUL_SHUTDOWN) so they move traffic away meanwhile; a second one stops at once. True: stop.
fn on_signals(
    pending: impl Iterator<Item = i32>,
    args: &Args,
    loaded: &mut Loaded,
    store: &Store,
    graceful_shutdown: &tokio::sync::watch::Sender<bool>,
    drain: &mut Option<Drain>,
    now: Instant,
) -> bool {
    for sig in pending {
        match sig {
            SIGHUP => reload(args, loaded, store),
            _ if drain.is_some() => return true,
            _ => {
                *drain = start_drain(store, graceful_shutdown, now, args.drain_timeout());
                if drain.is_none() {
                    return true;
                }
            }
        }
    }
    false
}

/// The control plane's settings from the loaded file.
fn control_settings(
    loaded: &Loaded,
    store: &Store,
    graceful_shutdown: tokio::sync::watch::Receiver<bool>,
) -> ControlSettings {
    ControlSettings {
        listen: loaded.api.clone(),
        tls: loaded.api_tls.clone(),
        metrics: loaded.metrics,
        peers: peers_with_kept(loaded, store),
        bgp_listen_port: loaded.bgp_listen_port,
        bgp: loaded.bgp,
        kubernetes: loaded.kubernetes.clone(),
        graceful_shutdown,
    }
}

/// The file's BGP peers with the API's kept changes: peers it added (replacing a file peer of the same name), less
/// those it removed. A kept peer this edgelbd no longer accepts is left out, with an error.
fn peers_with_kept(loaded: &Loaded, store: &Store) -> Vec<edgelb_controlplane::bgp::session::PeerConfig> {
    let mut peers = loaded.bgp_peers.clone();
    let (added, removed) = store.kept_peers();
    peers.retain(|p| !removed.contains(&p.name));
    let Some((asn, router_id)) = loaded.bgp else { return peers };
    for spec in added {
        match edgelb_controlplane::api::server::peer_in(&spec, asn, router_id) {
            Ok(p) => {
                peers.retain(|x| x.name != p.name && x.address != p.address);
                peers.push(p);
            }
            Err(e) => error!(peer = %spec.name, "a kept peer is no longer accepted, left out: {}", e.message()),
        }
    }
    peers
}

/// Lay the state file's changes over the config file's (see `edgelb_controlplane::state` for the precedence). A
/// damaged file is set aside and the previous good state used; only an unreadable one stops the start.
fn attach_state(store: &Store, path: &std::path::Path) -> Result<(), DaemonError> {
    use edgelb_controlplane::state::{self, Loaded as State};
    let overlay = match state::load(path).map_err(|e| DaemonError::Config(format!("--state: {e}")))? {
        State::Empty => {
            info!(state = %path.display(), "no state file yet: the API's changes will be kept there");
            Default::default()
        }
        State::Good(o) => {
            info!(state = %path.display(), services = o.services.len(), peers = o.peers_added.len(), "API changes kept from before");
            o
        }
        State::Recovered(o, why) => {
            error!(
                state = %path.display(),
                "state file refused ({why}); set aside as .damaged, using the previous good state ({} services, {} peers)",
                o.services.len(),
                o.peers_added.len()
            );
            o
        }
    };
    if let Err(e) = store.attach_state(path.to_path_buf(), overlay) {
        error!("the kept API changes do not fit the config file, running the file alone (the state is kept): {e}");
    }
    Ok(())
}

/// A dead worker ends edgelbd at once with [`EXIT_WORKER_DIED`]; `EDGELB_FAULT_KILL_WORKER` (tests) kills one when
/// its time comes.
fn check_workers<P>(workers: &Workers<P>, view: &WorkerView, fault: &mut Option<(u16, Instant)>, now: Instant)
where
    P: Port + 'static,
    P::Buf: 'static,
{
    if let Some(w) = workers.dead() {
        error!(worker = w, "worker {w} stopped unexpectedly; edgelbd exits so a supervisor restarts it");
        eprintln!("edgelbd: worker {w} (edgelb-w{w}) stopped unexpectedly");
        std::process::exit(i32::from(EXIT_WORKER_DIED));
    }
    if let Some((w, at)) = *fault {
        if now >= at {
            warn!(worker = w, "EDGELB_FAULT_KILL_WORKER: injecting a fault into worker {w}");
            let _ = view.inject_fault(w);
            *fault = None;
        }
    }
}

/// The workers' packets for the slow path, and the packets they hold for an unresolved next hop (copied into the
/// slow path's queue, their buffers back to the pool now); then the slow path's timers.
/// Send the neighbour probe the API asked for (`edgelbctl doctor`), and report what answered it for 3 s.
fn follow_probes(
    slow: &mut SlowPath,
    store: &Store,
    probing: &mut Option<(u64, Instant)>,
    now: Instant,
    emit: &mut impl FnMut(u16, &[u8]),
) {
    if let Some((id, addrs)) = store.take_probe_request() {
        slow.probe(&addrs, emit);
        *probing = Some((id, now + Duration::from_secs(3)));
    }
    if let Some((id, until)) = *probing {
        store.set_probe_results(id, slow.probed().into_iter().map(|(a, m)| (a, m.map(|(mac, _)| mac))).collect());
        if now > until {
            *probing = None;
        }
    }
}

fn pump_slow_path<P: Port>(slow: &mut SlowPath, workers: &Workers<P>, now: Instant, emit: &mut impl FnMut(u16, &[u8])) {
    while let Some((port, b)) = workers.slow.pop() {
        slow.handle(port, b.data(), now, emit);
    }
    while let Some(h) = workers.held.pop() {
        let via = edgelb_dataplane::snapshot::addr_from16(h.via, h.v4);
        slow.hold(h.port, via, h.buf.data(), now, emit);
    }
    slow.poll(now, emit);
}

/// A new service set (file, API or Kubernetes): the slow path answers for its VIPs and resolves every backend.
fn follow_services(slow: &mut SlowPath, store: &Store, emit: &mut impl FnMut(u16, &[u8])) {
    let mut model = store.model();
    model.services = store.services().1;
    slow.update(&store.handle().load());
    slow.set_wanted(wanted(&model));
    // A Kubernetes VIP governed by a Lease is announced by its holder only.
    ownership::follow_leases(slow, store, Instant::now());
    slow.announce(emit);
}

/// The last log line: what the workers and the slow path did in all.
fn log_stopped(total: &edgelb_dataplane::pipeline::Counters, slow: &SlowPath, inject_full: u64) {
    let (slow_stats, neigh_stats) = (&slow.stats, slow.neighbour_stats());
    let drops: Vec<String> = DropReason::all()
        .filter(|d| total.dropped(*d) > 0)
        .map(|d| format!("{}={}", d.name(), total.dropped(d)))
        .collect();
    info!(
        rx = total.rx,
        tx = total.tx,
        new_flows = total.new_flows,
        replies = total.replies,
        slowpath = total.slowpath,
        arp_answered = slow_stats.vip_arp_replies,
        own_answers = slow_stats.own_replies,
        neighbours_learnt = neigh_stats.learnt,
        neighbour_conflicts = neigh_stats.conflicts,
        neighbour_conflicts_refused = neigh_stats.refused,
        held = slow_stats.held,
        held_released = slow_stats.released,
        held_dropped = slow_stats.held_dropped,
        slowpath_tx_full = inject_full,
        drops = %drops.join(","),
        "stopped"
    );
}

/// Next hops the dataplane needs that the file gives no MAC for: backends and gateways.
fn wanted(m: &Model) -> Vec<IpAddr> {
    let known: HashSet<IpAddr> = m.neighbours.iter().map(|(a, _)| *a).collect();
    let mut w: Vec<IpAddr> =
        m.services.iter().flat_map(|s| s.backends.iter().map(|b| b.addr)).chain(m.gateways.iter().copied()).collect();
    w.retain(|a| !known.contains(a));
    w.sort_unstable();
    w.dedup();
    w
}

/// SIGHUP: re-read the file and swap the snapshot through the store; on any error keep the running config.
fn reload(args: &Args, loaded: &mut Loaded, store: &Store) {
    match config::load(&args.config) {
        Ok(mut new) => {
            if new.ports != loaded.ports || new.cores != loaded.cores {
                warn!("port or worker changes need a restart; applying services and neighbours only");
            }
            // A port that stays keeps the MAC read when it was opened (a DPDK port's comes from the device).
            for (i, p) in new.ports.iter().enumerate() {
                if let (Some(old), Some(oi)) = (loaded.ports.get(i), loaded.model.interfaces.get(i)) {
                    if p.mac.is_none() && old.name == p.name {
                        new.model.interfaces[i].mac = oi.mac;
                    }
                }
            }
            if let Err(e) = resolve_macs(&mut new) {
                error!("reload rejected, keeping the running config: {e}");
                return;
            }
            // The file's services, with the API's changes laid over them (they survive a reload).
            match store.replace(new.model.clone(), "file") {
                Ok(a) => {
                    loaded.model = new.model;
                    info!(version = a.version, generation = a.generation, "config reloaded");
                }
                Err(e) => error!("reload rejected, keeping the running config: {e}"),
            }
        }
        Err(e) => error!("reload rejected, keeping the running config: {e}"),
    }
}
