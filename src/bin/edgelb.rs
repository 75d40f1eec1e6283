//! `edgelb`: operator commands. Today: `edgelb lab`, the embedded default that needs no NIC and no DPDK (root on
//! Linux): it builds network namespaces and veth pairs (a client, the appliance, three backends; addresses from
//! 198.18.0.0/15), starts a small HTTP server in each backend that reports which backend answered and the client
//! address it saw, runs the daemon in the appliance namespace on AF_XDP ports (`--driver afpacket` for the fallback)
//! with one VIP per mode (NAT, full-NAT,
//! DSR-L2; the DSR backends hold the VIP on `lo` with `arp_ignore=1`, `arp_announce=2`), sends real HTTP requests from
//! the client namespace, and prints per VIP: requests per backend, failures, the client address each backend saw, and
//! the appliance's counters. It removes everything it created on exit, on Ctrl-C and on failure; `--keep` leaves the
//! lab up and prints how to use and remove it.
//!
//! No static neighbours: the client and the backends ARP for the appliance's addresses (answered by its slow path),
//! and the appliance resolves the backends and learns the client. Only the DSR backends' direct return link to the
//! client is wired statically (it does not involve the appliance).
//!
//! `edgelb daemon ...` is the daemon (the same as `edgelbd`); the lab runs it in the appliance namespace. Helpers the
//! lab runs inside namespaces: `edgelb lab-server NAME ADDR...` and `edgelb lab-client ADDR COUNT`.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use edgelb_testkit::drill::Mode;
use edgelb_testkit::netns::{is_root, run, Lab};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `println!` that ignores a closed stdout (`edgelb lab | head`): in a release build (`panic = "abort"`) the
/// panic `println!` raises would abort the lab before it removes what it created.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `edgelb`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "edgelb",
    version,
    about = "edgelb operator commands: the lab (the appliance's main job on a machine without NICs), the daemon and \
             the API client"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Everything after the subcommand, handed on as it is (including --help, which the daemon and the client answer).
#[derive(Debug, Args)]
struct PassOn {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build network namespaces (a client, the appliance, three backends), run the daemon with one VIP per mode and
    /// family, send real HTTP requests through it, print what each backend saw and the appliance's counters, and
    /// remove everything (needs root).
    Lab(LabArgs),
    /// Remove a lab that `lab --keep` left up: its namespaces, processes and files.
    LabRemove {
        /// The lab's prefix, as `lab --keep` printed it (elb-lab-PID).
        prefix: String,
    },
    /// The daemon, the same as edgelbd (`edgelb daemon --help`).
    #[command(disable_help_flag = true)]
    Daemon(PassOn),
    /// The API client, the same as edgelbctl (`edgelb ctl --help`).
    #[command(disable_help_flag = true)]
    Ctl(PassOn),
    /// Write the custom resource definitions (VIPPool, BGPPeer, L2Announcement) generated from their Rust types.
    Crds {
        /// Directory to write them into (absent: print them, separated by `---`).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Print a shell completion script for edgelb.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Lab helper (run in a backend namespace): HTTP server answering with its name and the client's address.
    #[command(hide = true, disable_help_flag = true)]
    LabServer(PassOn),
    /// Lab helper (run in the client namespace): COUNT HTTP requests.
    #[command(hide = true, disable_help_flag = true)]
    LabClient(PassOn),
    /// Lab helper: UDP sink.
    #[command(hide = true, disable_help_flag = true)]
    LabUdpSink(PassOn),
    /// Lab helper: UDP sender.
    #[command(hide = true, disable_help_flag = true)]
    LabUdpBlast(PassOn),
}

#[derive(Debug, Args)]
struct LabArgs {
    /// Leave the lab and the daemon running; print commands to try it and to remove it.
    #[arg(long)]
    keep: bool,
    /// HTTP requests per VIP.
    #[arg(long, default_value_t = 90)]
    requests: usize,
    /// The appliance's port driver.
    #[arg(long, value_enum, default_value_t = LabDriver::Afxdp)]
    driver: LabDriver,
    /// Also send this many one-way UDP packets through the NAT VIP (0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    blast: u64,
    /// Packets per second for --blast (0: as fast as it goes).
    #[arg(long, default_value_t = 0, value_name = "PPS")]
    rate: u64,
    /// The failover drill instead: a BIRD router with ECMP toward two appliances (BGP with BFD, DSR-L2, IPv4 and
    /// IPv6), 50 long-lived connections and a new one every 100 ms while a backend drains, appliance A is killed and
    /// comes back; prints per step the connections broken, the longest stall, the new connections that failed
    /// (needs BIRD: apt-get install bird2; it installs it when missing).
    #[arg(long, conflicts_with_all = ["keep", "blast"])]
    ha: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LabDriver {
    Afxdp,
    Afpacket,
}

edgelb_cpu::check_before_main!();

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match cli.cmd {
        Cmd::Lab(a) => lab(&a),
        Cmd::LabRemove { prefix } => lab_remove(&prefix),
        Cmd::Daemon(p) => edgelb::daemon::run(p.args),
        Cmd::Ctl(p) => edgelb::ctl::main_with(p.args),
        Cmd::Crds { out } => crds(out.as_deref()),
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "edgelb", &mut script);
            say!("{}", String::from_utf8_lossy(&script).trim_end());
            ExitCode::SUCCESS
        }
        Cmd::LabServer(p) => lab_server(&p.args),
        Cmd::LabClient(p) => lab_client(&p.args),
        Cmd::LabUdpSink(p) => lab_udp_sink(&p.args),
        Cmd::LabUdpBlast(p) => lab_udp_blast(&p.args),
    }
}

/// `edgelb lab --ha`: the failover drill (`edgelb_testkit::drill`) with this program as edgelbd and edgelbctl.
fn lab_ha() -> ExitCode {
    let have_bird = || Command::new("bird").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_bird() {
        say!("edgelb lab --ha: installing BIRD (Debian bird2) for the router");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "bird2"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if !have_bird() {
            eprintln!("edgelb lab --ha: BIRD is missing and could not be installed: apt-get install -y bird2");
            return ExitCode::from(2);
        }
    }
    let me = match std::env::current_exe() {
        Ok(p) => p.display().to_string(),
        Err(e) => {
            eprintln!("edgelb lab --ha: {e}");
            return ExitCode::from(1);
        }
    };
    let p = edgelb_testkit::drill::Programs { edgelbd: (&me, &["daemon"]), edgelbctl: (&me, &["ctl"]) };
    say!("edgelb lab --ha: appliances A and B in front of three backends, a client behind a router; 50 long-lived connections (25 per family) and a new one every 100 ms; four drills of about 25 s");
    let mut broken = 0;
    for (tag, mode, replication) in [
        ("labha", Mode::Dsr, false),
        ("labhr", Mode::Dsr, true),
        ("labna", Mode::NatVrrp, false),
        ("labnr", Mode::NatVrrp, true),
    ] {
        let mut lab = Lab::new(tag);
        say!(
            "\n== {}; flow replication between the appliances {} ==",
            mode.name(),
            if replication { "on ([replication])" } else { "off" }
        );
        match edgelb_testkit::drill::run(&mut lab, &p, mode, replication) {
            Ok(r) => {
                if !replication {
                    say!("{}", r.routes.trim_end());
                }
                say!("{}", r.table().trim_end());
                broken += r.steps.iter().map(|s| s.broken.0).sum::<usize>();
                if replication {
                    broken += r.steps.iter().map(|s| s.broken.1 + s.moved).sum::<usize>();
                }
            }
            Err(e) => {
                eprintln!("edgelb lab --ha: {e}");
                return ExitCode::from(1);
            }
        }
    }
    say!("\nWithout replication a connection on the drained backend (be1) that changes appliance is sent elsewhere by Maglev, which no longer lists be1 ('broken on be1'), and so is one of the few on be2 or be3 whose slot Maglev's table without be1 gave another backend ('moved by Maglev'); with replication the other appliance knows every flow. In NAT mode with VRRP every flow changes appliance at the kill, after the Backup's master down interval (3 adverts of 100 ms and its skew): a new connection whose SYN falls in it waits for the SYN's retransmission, 1 s later, past the drill's 1 s connect timeout.");
    if broken > 0 {
        say!("edgelb lab --ha: {broken} connections broke that should not have");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `edgelb crds`: the manifests into `out` (one file each), or on stdout.
fn crds(out: Option<&std::path::Path>) -> ExitCode {
    let all = edgelb_controlplane::k8s::crd::manifests();
    let Some(dir) = out else {
        let texts: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
        say!("{}", texts.join("---\n").trim_end());
        return ExitCode::SUCCESS;
    };
    for (name, text) in &all {
        let path = dir.join(name);
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text)) {
            eprintln!("edgelb crds: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        say!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

/// HTTP/1.1 server: every request gets `200 OK` with body `<name> <client address>`.
fn lab_server(args: &[String]) -> ExitCode {
    let Some((name, addrs)) = args.split_first() else { return ExitCode::from(2) };
    let mut threads = Vec::new();
    for a in addrs {
        let l = match TcpListener::bind(a) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("lab-server {name}: bind {a}: {e}");
                return ExitCode::from(1);
            }
        };
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let name = name.clone();
                std::thread::spawn(move || serve(s, &name));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

fn serve(mut s: TcpStream, name: &str) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let peer = s.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let body = format!("{name} {peer}\n");
    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

/// Count UDP datagrams on ADDR until none came for a second (or 30 s passed); print the count.
fn lab_udp_sink(args: &[String]) -> ExitCode {
    let Some(addr) = args.first() else { return ExitCode::from(2) };
    let Ok(s) = std::net::UdpSocket::bind(addr) else { return ExitCode::from(1) };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = std::io::stdout().write_all(b"ready\n");
    let _ = std::io::stdout().flush();
    let (mut n, mut last, start) = (0u64, None::<Instant>, Instant::now());
    let mut buf = [0u8; 2048];
    loop {
        match s.recv_from(&mut buf) {
            Ok(_) => {
                n += 1;
                last = Some(Instant::now());
            }
            Err(_) => {
                if last.is_some_and(|l| l.elapsed() > Duration::from_secs(1))
                    || start.elapsed() > Duration::from_secs(30)
                {
                    break;
                }
            }
        }
    }
    say!("{n}");
    ExitCode::SUCCESS
}

/// Send COUNT 64-byte UDP datagrams to ADDR from 64 source ports at RATE per second (0: as fast as one thread
/// can); print the seconds taken.
fn lab_udp_blast(args: &[String]) -> ExitCode {
    let (Some(addr), Some(count)) = (args.first(), args.get(1).and_then(|c| c.parse::<u64>().ok())) else {
        return ExitCode::from(2);
    };
    let rate: u64 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(0);
    let socks: Vec<std::net::UdpSocket> =
        (0..64).filter_map(|_| std::net::UdpSocket::bind("198.18.0.10:0").ok()).collect();
    if socks.is_empty() {
        return ExitCode::from(1);
    }
    let payload = [0x5au8; 22]; // 14 + 20 + 8 + 22 = a 64-byte frame
    let t = Instant::now();
    for i in 0..count {
        if rate > 0 && i % 64 == 0 {
            // Pace in steps of 64 datagrams.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            while t.elapsed() < due {
                std::hint::spin_loop();
            }
        }
        let s = &socks[(i % socks.len() as u64) as usize];
        while s.send_to(&payload, addr).is_err() {
            std::thread::yield_now();
        }
    }
    say!("{:.6}", t.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

/// `COUNT` HTTP GETs, one fresh connection each; prints one line per request: `ok BODY` or `fail REASON`.
fn lab_client(args: &[String]) -> ExitCode {
    let (Some(addr), Some(count)) = (args.first().and_then(|a| a.parse::<SocketAddr>().ok()), args.get(1)) else {
        return ExitCode::from(2);
    };
    let count: usize = count.parse().unwrap_or(0);
    for _ in 0..count {
        match get(addr) {
            Ok(body) => say!("ok {}", body.trim()),
            Err(e) => say!("fail {e}"),
        }
    }
    ExitCode::SUCCESS
}

fn get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    write!(s, "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| format!("read: {e}"))?;
    if !resp.starts_with("HTTP/1.1 200") {
        return Err(format!("bad response {:?}", resp.lines().next().unwrap_or("")));
    }
    Ok(resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// `edgelb lab-remove PREFIX`: remove a lab left up by `--keep`: every process in its namespaces, the namespaces,
/// and its files in the temporary directory.
fn lab_remove(prefix: &str) -> ExitCode {
    if !prefix.starts_with("elb-lab-") || prefix.contains('/') {
        eprintln!(
            "edgelb lab-remove: {prefix:?} is no lab's prefix: give elb-lab-PID, as `edgelb lab --keep` printed it"
        );
        return ExitCode::from(2);
    }
    let list = run(&["ip", "netns", "list"]).unwrap_or_default();
    let mut namespaces: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect();
    namespaces.sort();
    let mut removed = 0;
    for ns in &namespaces {
        for pid in run(&["ip", "netns", "pids", ns]).unwrap_or_default().split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    for ns in &namespaces {
        if run(&["ip", "netns", "del", ns]).is_ok() {
            removed += 1;
        }
    }
    let mut files = 0;
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) && std::fs::remove_file(e.path()).is_ok() {
                files += 1;
            }
        }
    }
    say!("edgelb lab-remove: removed {removed} namespaces (their processes killed) and {files} files of {prefix}");
    if removed == 0 {
        eprintln!("edgelb lab-remove: no namespace named {prefix}-*");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The lab's VIPs: (VIP, mode, the address a backend sees as the client's).
const VIPS: [(&str, &str, &str); 6] = [
    ("198.19.0.1", "nat", "198.18.0.10"),
    ("198.19.0.2", "fullnat", "198.18.2.1"),
    ("198.19.0.3", "dsr_l2", "198.18.0.10"),
    ("2001:db8:100::1", "nat", "2001:db8::10"),
    ("2001:db8:100::2", "fullnat", "2001:db8:2:1::1"),
    ("2001:db8:100::3", "dsr_l2", "2001:db8::10"),
];

/// `ADDR:PORT` for an address of either family.
fn sock(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn lab(args: &LabArgs) -> ExitCode {
    let (keep, requests, blast, rate) = (args.keep, args.requests, args.blast, args.rate);
    let driver = match args.driver {
        LabDriver::Afxdp => "afxdp",
        LabDriver::Afpacket => "afpacket",
    };
    if !is_root() {
        eprintln!("edgelb lab: needs root (it creates network namespaces); try: sudo -E cargo run --release --bin edgelb -- lab");
        return ExitCode::from(2);
    }
    let have_ip = || Command::new("ip").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
    if !have_ip() {
        // The lab needs only the Rust toolchain and root: bring iproute2 on Debian if it is missing.
        say!("edgelb lab: installing iproute2 (the `ip` command)");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "iproute2"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if !have_ip() {
            eprintln!(
                "edgelb lab: the `ip` command is missing and could not be installed: apt-get install -y iproute2"
            );
            return ExitCode::from(2);
        }
    }
    if args.ha {
        return lab_ha();
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, interrupted.clone()) {
            eprintln!("edgelb lab: signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let mut lab = Lab::new("lab");
    match run_lab(&mut lab, keep, requests, driver, (blast, rate), &interrupted) {
        Ok(failures) => {
            if keep {
                lab.keep();
                let me = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "edgelb".into());
                say!(
                    "\nThe lab stays up (--keep): the daemon keeps running in {}-lb. Namespaces: {}",
                    lab.prefix(),
                    lab.namespaces().join(" ")
                );
                say!("  try:     ip netns exec {}-cl curl -s http://198.19.0.1/", lab.prefix());
                say!("           ip netns exec {}-cl curl -s 'http://[2001:db8:100::1]/'", lab.prefix());
                say!("  stats:   ip netns exec {}-lb {me} ctl stats", lab.prefix());
                say!("  remove:  {me} lab-remove {}", lab.prefix());
            }
            if failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(_) if interrupted.load(Ordering::Relaxed) => {
            eprintln!("edgelb lab: interrupted; everything the lab created is being removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("edgelb lab: {e}");
            ExitCode::from(1)
        }
    }
}

/// Build, run, report. Returns the number of failed requests.
fn run_lab(
    lab: &mut Lab,
    keep: bool,
    requests: usize,
    driver: &str,
    (blast, rate): (u64, u64),
    interrupted: &AtomicBool,
) -> Result<usize, String> {
    let net = build_net(lab, driver)?;
    let (daemon_pid, log_path) = start_daemon(lab, &net, driver)?;
    wait_ready(&net, &log_path, interrupted)?;
    let (failures, secs) = http_round(&net, requests, interrupted)?;
    if blast > 0 {
        udp_blast(&net, driver, blast, rate)?;
    }
    report(&net, requests, secs)?;
    if !keep {
        stop_daemon(lab, daemon_pid, &log_path);
    }
    say!("\nedgelb lab: {} failed requests of {}", failures, requests * VIPS.len());
    Ok(failures)
}

/// The lab's network: namespace names, this program (run inside them), backend addresses, the appliance's ports.
struct LabNet {
    me: std::path::PathBuf,
    me_s: String,
    cl: String,
    lb: String,
    bes: Vec<String>,
    /// Each backend's IPv4 and IPv6 address.
    backend_addrs: Vec<(String, String)>,
    /// The `[[port]]` tables of the appliance's config.
    ports_toml: String,
}

/// Namespaces, links, addresses and routes: the client, the appliance, three backends each with an HTTP server.
fn build_net(lab: &mut Lab, driver: &str) -> Result<LabNet, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me_s = me.to_str().unwrap_or("edgelb").to_string();
    say!("edgelb lab: building namespaces {}-{{cl,lb,be1,be2,be3}} (IPv4 and IPv6)", lab.prefix());
    let cl = lab.try_ns("cl")?;
    let lb = lab.try_ns("lb")?;
    let bes = vec![lab.try_ns("be1")?, lab.try_ns("be2")?, lab.try_ns("be3")?];
    run(&["ip", "-n", &cl, "link", "add", "cl0", "type", "veth", "peer", "name", "lb0", "netns", &lb])?;
    lab.try_ip(&cl, "link set cl0 up")?;
    lab.try_ip(&lb, "link set lb0 up")?;
    lab.try_ip(&cl, "addr add 198.18.0.10/24 dev cl0")?;
    lab.try_ip(&cl, "addr add 2001:db8::10/64 dev cl0 nodad")?;
    lab.try_ip(&cl, "route add 198.19.0.0/24 via 198.18.0.1 dev cl0")?;
    lab.try_ip(&cl, "-6 route add 2001:db8:100::/64 via 2001:db8::1 dev cl0")?;
    lab.try_sysctl(&cl, "net.ipv4.conf.all.rp_filter", "0")?;
    lab.try_sysctl(&cl, "net.ipv4.conf.default.rp_filter", "0")?;
    let mut net = LabNet {
        me,
        me_s,
        cl,
        lb,
        bes: Vec::new(),
        backend_addrs: Vec::new(),
        ports_toml: format!(
            "[[port]]\nname = \"lb0\"\ndriver = \"{driver}\"\naddresses = [\"198.18.0.1/24\", \"2001:db8::1/64\"]\nframes = 2048\n\n"
        ),
    };
    for (i, be) in bes.iter().enumerate() {
        wire_backend(lab, &mut net, i, be, driver)?;
    }
    net.bes = bes;
    Ok(net)
}

/// Backend `i` in namespace `be`: its link to the appliance, the DSR VIPs on loopback with a direct path back to the
/// client, and its HTTP server.
fn wire_backend(lab: &mut Lab, net: &mut LabNet, i: usize, be: &str, driver: &str) -> Result<(), String> {
    let (cl, lb, me) = (net.cl.clone(), net.lb.clone(), net.me.clone());
    let n = i + 1;
    let (lbif, gw, addr) = (format!("lb{n}"), format!("198.18.2.{}", 16 * i + 1), format!("198.18.2.{}", 16 * i + 10));
    let (gw6, addr6) = (format!("2001:db8:2:{n}::1"), format!("2001:db8:2:{n}::10"));
    run(&["ip", "-n", &lb, "link", "add", &lbif, "type", "veth", "peer", "name", "be0", "netns", be])?;
    lab.try_ip(&lb, &format!("link set {lbif} up"))?;
    lab.try_ip(be, "link set be0 up")?;
    lab.try_ip(be, &format!("addr add {addr}/28 dev be0"))?;
    lab.try_ip(be, &format!("addr add {addr6}/64 dev be0 nodad"))?;
    lab.try_ip(be, &format!("route add default via {gw} dev be0"))?;
    lab.try_ip(be, &format!("-6 route add default via {gw6} dev be0"))?;
    // DSR: the VIPs on loopback, the appliance's ARP conventions (IPv6 answers NS only for addresses on the
    // interface asked, so the VIP on lo is never claimed), and a direct path back to the client.
    lab.try_ip(be, "addr add 198.19.0.3/32 dev lo")?;
    lab.try_ip(be, "addr add 2001:db8:100::3/128 dev lo nodad")?;
    lab.try_sysctl(be, "net.ipv4.conf.all.arp_ignore", "1")?;
    lab.try_sysctl(be, "net.ipv4.conf.all.arp_announce", "2")?;
    let ret = format!("ret{n}");
    run(&["ip", "-n", be, "link", "add", "ret0", "type", "veth", "peer", "name", &ret, "netns", &cl])?;
    lab.try_ip(be, "link set ret0 up")?;
    lab.try_ip(&cl, &format!("link set {ret} up"))?;
    lab.try_sysctl(&cl, &format!("net.ipv4.conf.{ret}.rp_filter"), "0")?;
    // Only replies from the DSR VIPs take the direct path; NAT and full-NAT replies go back through the appliance.
    lab.try_ip(be, "rule add from 198.19.0.3 table 100")?;
    lab.try_ip(be, "route add 198.18.0.10/32 dev ret0 table 100")?;
    lab.try_ip(
        be,
        &format!("neigh add 198.18.0.10 lladdr {} dev ret0", edgelb_testkit::netns::mac_text(lab.try_mac(&cl, &ret)?)),
    )?;
    lab.try_ip(be, "-6 rule add from 2001:db8:100::3 table 100")?;
    lab.try_ip(be, "-6 route add 2001:db8::10/128 dev ret0 table 100")?;
    lab.try_ip(
        be,
        &format!(
            "-6 neigh add 2001:db8::10 lladdr {} dev ret0",
            edgelb_testkit::netns::mac_text(lab.try_mac(&cl, &ret)?)
        ),
    )?;
    net.ports_toml += &format!(
        "[[port]]\nname = \"{lbif}\"\ndriver = \"{driver}\"\naddresses = [\"{gw}/28\", \"{gw6}/64\"]\nframes = 2048\n\n"
    );
    net.backend_addrs.push((addr.clone(), addr6.clone()));
    let server = Command::new("ip")
        .args(["netns", "exec", be])
        .arg(&me)
        .args([
            "lab-server",
            &format!("be{n}"),
            &sock(&addr, 8080),
            &sock(&addr6, 8080),
            "198.19.0.3:80",
            "[2001:db8:100::3]:80",
        ])
        // Nothing of the caller's: a kept lab's servers must not hold its output pipes open.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("backend server: {e}"))?;
    lab.adopt(server);
    Ok(())
}

/// The appliance's config: its ports, full-NAT sources, one TCP VIP per mode and family, a UDP VIP for --blast.
fn lab_config(net: &LabNet) -> String {
    let mut config = String::from("# written by edgelb lab\n");
    config += &net.ports_toml;
    let backend_addrs = &net.backend_addrs;
    config += "[fullnat]\nsources = [\"198.18.2.1\", \"2001:db8:2:1::1\"]\nports = [20000, 59999]\n\n";
    for (vip, mode, _) in VIPS {
        let dsr = mode == "dsr_l2";
        config += &format!("[[service]]\nvip = \"{vip}\"\nprotocol = \"tcp\"\nport = 80\nmode = \"{mode}\"\n\n");
        for (a4, a6) in backend_addrs {
            let a = if vip.contains(':') { a6 } else { a4 };
            config += &format!("[[service.backend]]\naddress = \"{a}\"\nport = {}\n\n", if dsr { 0 } else { 8080 });
        }
    }
    // A UDP VIP for --blast.
    config += "[[service]]\nvip = \"198.19.0.4\"\nprotocol = \"udp\"\nport = 9000\nmode = \"nat\"\n\n";
    for (a, _) in backend_addrs {
        config += &format!("[[service.backend]]\naddress = \"{a}\"\nport = 9000\n\n");
    }
    config
}

/// Write the config and start the daemon in the appliance's namespace; its pid and log file.
fn start_daemon(lab: &mut Lab, net: &LabNet, driver: &str) -> Result<(u32, std::path::PathBuf), String> {
    let (lb, me, config) = (&net.lb, &net.me, lab_config(net));
    let cfg = std::env::temp_dir().join(format!("{}.toml", lab.prefix()));
    std::fs::write(&cfg, &config).map_err(|e| format!("{}: {e}", cfg.display()))?;
    lab.own_file(cfg.clone());
    let log_path = std::env::temp_dir().join(format!("{}-edgelbd.log", lab.prefix()));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    lab.own_file(log_path.clone());
    say!("edgelb lab: starting the daemon in {lb} on {driver} ports ({})", cfg.display());
    let daemon = Command::new("ip")
        .args(["netns", "exec", lb])
        .arg(me)
        .args(["daemon", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("edgelbd: {e}"))?;
    let daemon_pid = daemon.id();
    lab.adopt(daemon);
    Ok((daemon_pid, log_path))
}

/// Wait (bounded) until both NAT VIPs answer.
fn wait_ready(net: &LabNet, log_path: &std::path::Path, interrupted: &AtomicBool) -> Result<(), String> {
    let (cl, me_s) = (&net.cl, &net.me_s);
    let deadline = Instant::now() + Duration::from_secs(15);
    for vip in ["198.19.0.1", "2001:db8:100::1"] {
        loop {
            if interrupted.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            let probe = run(&["ip", "netns", "exec", cl, me_s, "lab-client", &sock(vip, 80), "1"])?;
            if probe.starts_with("ok") {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                return Err(format!("the appliance did not answer for {vip} within 15 s; edgelbd log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// `requests` HTTP requests per VIP, each on a fresh connection; the failures and the seconds it took.
fn http_round(net: &LabNet, requests: usize, interrupted: &AtomicBool) -> Result<(usize, f64), String> {
    let (cl, me_s) = (&net.cl, &net.me_s);
    let mut failures = 0;
    let started = Instant::now();
    say!(
        "\nedgelb lab: {requests} HTTP requests per VIP from 198.18.0.10 and 2001:db8::10, each on a fresh TCP connection\n"
    );
    say!(
        "{:<16} {:<8} {:>9} {:>9}   {:<28}",
        "VIP",
        "mode",
        "requests",
        "failures",
        "backend: requests (client address seen)"
    );
    for (vip, mode, _) in VIPS {
        if interrupted.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let out = run(&["ip", "netns", "exec", cl, me_s, "lab-client", &sock(vip, 80), &requests.to_string()])?;
        let mut per: BTreeMap<String, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
        let mut failed = 0;
        for line in out.lines() {
            let mut it = line.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some("ok"), Some(name), Some(seen)) => {
                    let e = per.entry(name.to_string()).or_default();
                    e.0 += 1;
                    *e.1.entry(seen.to_string()).or_default() += 1;
                }
                _ => failed += 1,
            }
        }
        failures += failed;
        let detail = per
            .iter()
            .map(|(b, (n, seen))| format!("{b}: {n} ({})", seen.keys().cloned().collect::<Vec<_>>().join(",")))
            .collect::<Vec<_>>()
            .join("  ");
        say!("{vip:<16} {mode:<8} {requests:>9} {failed:>9}   {detail}");
    }
    let secs = started.elapsed().as_secs_f64();
    say!(
        "\n(NAT and DSR backends see the client's address, 198.18.0.10 or 2001:db8::10; full-NAT backends see the \
         appliance's, 198.18.2.1 or 2001:db8:2:1::1)"
    );
    Ok((failures, secs))
}

/// One-way UDP through the UDP VIP to sinks on the backends: offered and delivered rates.
fn udp_blast(net: &LabNet, driver: &str, blast: u64, rate: u64) -> Result<(), String> {
    let (cl, me_s, me, bes, backend_addrs) = (&net.cl, &net.me_s, &net.me, &net.bes, &net.backend_addrs);
    let mut sinks = Vec::new();
    for (i, be) in bes.iter().enumerate() {
        let mut c = Command::new("ip")
            .args(["netns", "exec", be])
            .arg(me)
            .args(["lab-udp-sink", &format!("{}:9000", backend_addrs[i].0)])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("udp sink: {e}"))?;
        let mut line = String::new();
        let mut out = BufReader::new(c.stdout.take().ok_or("sink stdout")?);
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        sinks.push((c, out));
    }
    let secs: f64 = run(&[
        "ip",
        "netns",
        "exec",
        cl,
        me_s,
        "lab-udp-blast",
        "198.19.0.4:9000",
        &blast.to_string(),
        &rate.to_string(),
    ])?
    .trim()
    .parse()
    .map_err(|_| "blast output".to_string())?;
    let mut got = 0u64;
    for (mut c, mut out) in sinks {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        got += line.trim().parse::<u64>().unwrap_or(0);
        let _ = c.wait();
    }
    say!(
        "\nUDP blast through 198.19.0.4 (NAT, {driver}): sent {blast} 64-byte frames in {secs:.2} s ({:.0} pps offered), \
         delivered {got} ({:.1} % loss): {:.0} pps through the appliance's one worker",
        blast as f64 / secs,
        100.0 * (blast.saturating_sub(got)) as f64 / blast as f64,
        got as f64 / secs
    );
    Ok(())
}

/// The appliance's counters through its API, and the rates.
fn report(net: &LabNet, requests: usize, secs: f64) -> Result<(), String> {
    let (lb, me_s) = (&net.lb, &net.me_s);
    // The appliance's counters, through its API (the daemon keeps running); workers publish every 100 ms.
    std::thread::sleep(edgelb::dataplane::worker::PUBLISH_EVERY * 3);
    let stats = run(&["ip", "netns", "exec", lb, me_s, "ctl", "stats"])?;
    say!("\nappliance (edgelb ctl stats):\n{}", stats.trim_end());
    let json = run(&["ip", "netns", "exec", lb, me_s, "ctl", "--output", "json", "stats"])?;
    let parsed: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("edgelb ctl --output json stats: {e}"))?;
    let tx = parsed["tx"].as_f64().unwrap_or(0.0);
    let n = (requests * VIPS.len()) as f64;
    say!(
        "throughput: {n} requests in {secs:.2} s = {:.0} requests/s (one client, one connection at a time); the \
         appliance's one worker forwarded {tx} packets: {:.0} packets/s",
        n / secs,
        tx / secs
    );
    Ok(())
}

/// Stop the daemon for its final log line (drops by reason, the slow path's and neighbours' counters).
fn stop_daemon(lab: &mut Lab, daemon_pid: u32, log_path: &std::path::Path) {
    let _ = Command::new("kill").args(["-TERM", &daemon_pid.to_string()]).status();
    if let Some(d) = lab.child(daemon_pid) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = d.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    if let Some(line) = log.lines().find(|l| l.contains("stopped")) {
        say!("\nappliance at exit: {}", line.split("INFO").nth(1).unwrap_or(line).trim());
    }
}
