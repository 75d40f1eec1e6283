//! `sriov-device-plugin`: advertise SR-IOV VF pools to the kubelet.
//!
//! ```text
//! sriov-device-plugin --config FILE [--sys-root /sys] [--plugin-dir /var/lib/kubelet/device-plugins]
//!                     [--log-format text|json]
//! ```
//! SIGHUP (or a change of the file) reloads the configuration; SIGTERM/SIGINT stop. Exit 2 on a usage or
//! configuration error, 1 when serving fails.

use clap::{Parser, ValueEnum};
use sriov_device_plugin::plugin;
use std::path::PathBuf;
use std::process::ExitCode;

/// Advertise SR-IOV VF pools to the kubelet. SIGHUP (or a change of the file) reloads the configuration;
/// SIGTERM/SIGINT stop. Exit 2 on a usage or configuration error, 1 when serving fails.
#[derive(Parser, Debug)]
#[command(name = "sriov-device-plugin", version)]
struct Args {
    /// The resource pools (the upstream plugin's JSON format; upstream's `-config-file` is taken too)
    #[arg(long, visible_alias = "config-file", value_name = "FILE")]
    config: PathBuf,
    /// Prefix of resources that name none (upstream's `-resource-prefix`)
    #[arg(long, value_name = "PREFIX", default_value = sriov_device_plugin::config::DEFAULT_PREFIX)]
    resource_prefix: String,
    /// Where sysfs is mounted (a copy of it in tests)
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    sys_root: PathBuf,
    /// The kubelet's device-plugin directory (kubelet.sock and the plugins' sockets)
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet/device-plugins")]
    plugin_dir: PathBuf,
    /// Log lines as text or JSON
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Upstream's Go-style flags (`-config-file=F`, `-resource-prefix P`) as ours (`--config-file=F`, ...): one dash
/// before a long name becomes two.
fn go_style(args: impl Iterator<Item = String>) -> Vec<String> {
    args.enumerate()
        .map(|(i, a)| {
            let long =
                a.len() > 2 && a.starts_with('-') && !a.starts_with("--") && a.as_bytes()[1].is_ascii_lowercase();
            if i > 0 && long && a[1..].split('=').next().is_some_and(|n| n.len() > 1) {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

edgelb_cpu::check_before_main!();

fn main() -> ExitCode {
    let Args { config, resource_prefix, sys_root, plugin_dir, log_format } =
        Args::parse_from(go_style(std::env::args()));
    let json = log_format == LogFormat::Json;
    let sub = tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr);
    if json {
        sub.json().init();
    } else {
        sub.init();
    }
    // Check the file before anything else: a bad one is a usage error.
    if let Err(e) = std::fs::read_to_string(&config).map_err(|e| e.to_string()).and_then(|t| {
        sriov_device_plugin::config::parse_with(&t, &resource_prefix).map(|_| ()).map_err(|e| e.to_string())
    }) {
        eprintln!("sriov-device-plugin: {}: {e}", config.display());
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sriov-device-plugin: {e}");
            return ExitCode::from(1);
        }
    };
    let r = rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => { let _ = reload_tx.send(()).await; }
                    _ = term.recv() => { let _ = stop_tx.send(true); break; }
                    _ = int.recv() => { let _ = stop_tx.send(true); break; }
                }
            }
        });
        plugin::run_with_prefix(config, sys_root, plugin_dir, resource_prefix, reload_rx, stop_rx).await
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sriov-device-plugin: {e}");
            ExitCode::from(1)
        }
    }
}
