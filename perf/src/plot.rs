//! `edgelb-perf --plot DIR`: sweeps run as child processes of this binary (`--json`), drawn as plain SVG: Mpps
//! against tracked flows per mode, Mpps against cores, the per-burst latency distribution, and (with
//! `--kernel-json`, written by `perf/kernel-compare`) the kernel comparison. Each chart names the command and the
//! machine; `DIR/figures.json` keeps the numbers.

use std::fmt::Write as _;
use std::process::Command;

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 170.0;
const T: f64 = 50.0;
const B: f64 = 60.0;
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

/// One line of a chart.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * e).find(|x| *x >= v).unwrap_or(10.0 * e)
}

fn head(title: &str, note: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" \
         font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{L}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n\
         <text x=\"{L}\" y=\"{}\" font-size=\"10\" fill=\"#555\">{}</text>\n",
        esc(title),
        H - 8.0,
        esc(note)
    );
    s
}

/// A line chart; `logx` draws x on a log-10 scale.
pub(crate) fn lines(title: &str, xlabel: &str, ylabel: &str, note: &str, series: &[Series], logx: bool) -> String {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    let fx = |x: f64| if logx { x.max(1e-9).log10() } else { x };
    let (x0, x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(fx(p.0)), b.max(fx(p.0))));
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 1.0, x0 + 1.0) };
    let ymax = nice_max(all.iter().map(|p| p.1).fold(0.0, f64::max));
    let px = |x: f64| L + (fx(x) - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - y / ymax * (H - T - B);
    let mut s = head(title, note);
    let _ = writeln!(s, "<line x1=\"{L}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>", H - B, W - R, H - B);
    let _ = writeln!(s, "<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{}\" stroke=\"black\"/>", H - B);
    for i in 0..=5 {
        let y = ymax * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            "<line x1=\"{L}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{3:.1}\" \
             text-anchor=\"end\">{4}</text>",
            py(y),
            W - R,
            L - 6.0,
            py(y) + 4.0,
            trim(y)
        );
    }
    // Log scale: a tick at each power of ten in range; linear: one at each x of the data.
    let mut xs: Vec<f64> = if logx {
        (x0.ceil() as i32..=x1.floor() as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        all.iter().map(|p| p.0).collect()
    };
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    for x in xs {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(x),
            H - B + 16.0,
            if logx { human(x) } else { trim(x) }
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (L + W - R) / 2.0,
        H - B + 34.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(18,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (T + H - B) / 2.0,
        esc(ylabel)
    );
    for (i, se) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = se.points.iter().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))).collect();
        let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>", pts.join(" "));
        for p in &se.points {
            let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>", px(p.0), py(p.1));
        }
        let ly = T + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            W - R + 12.0,
            ly - 4.0,
            W - R + 30.0,
            ly + 1.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Grouped horizontal bars: one group per metric, one bar per side.
pub(crate) fn bars(title: &str, note: &str, groups: &[(String, Vec<(String, f64)>)]) -> String {
    let mut s = head(title, note);
    let gh = (H - T - B) / groups.len().max(1) as f64;
    for (gi, (label, bars)) in groups.iter().enumerate() {
        let top = T + gi as f64 * gh;
        let _ = writeln!(s, "<text x=\"{L}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>", top + 12.0, esc(label));
        let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9);
        let bh = ((gh - 24.0) / bars.len().max(1) as f64).min(22.0);
        for (bi, (name, v)) in bars.iter().enumerate() {
            let y = top + 18.0 + bi as f64 * (bh + 4.0);
            let w = v / max * (W - L - R - 40.0);
            let c = COLOURS[bi % COLOURS.len()];
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect x=\"{L}\" y=\"{y:.1}\" width=\"{w:.1}\" \
                 height=\"{bh:.1}\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                L - 6.0,
                y + bh * 0.7,
                esc(name),
                L + w + 6.0,
                y + bh * 0.7,
                trim(*v)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn trim(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn human(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", trim(v / 1e6)),
        v if v >= 1e3 => format!("{}k", trim(v / 1e3)),
        v => trim(v),
    }
}

/// Run this binary with `args` and `--json`; its summary.
pub(crate) fn child(args: &[String]) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe).args(args).arg("--json").output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("edgelb-perf {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).ok_or("no JSON line")?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

/// The sweeps and charts of `--plot DIR` (see the module documentation). `base` carries the caller's --seconds and
/// --backends; `flows` the tracked-flow counts to sweep.
pub(crate) fn run(dir: &str, base: &[String], flows: &[usize], kernel_json: Option<&str>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let note = |cmd: &str| format!("{cmd}  ({machine}, {cores} cores)");
    let arg = |v: &[&str]| -> Vec<String> { base.iter().cloned().chain(v.iter().map(|s| s.to_string())).collect() };
    let mpps = |j: &serde_json::Value| j["total_mpps"].as_f64().unwrap_or(0.0);
    let mut figures = serde_json::Map::new();

    let mut series = Vec::new();
    for mode in ["floor", "nat", "dsr_l2", "fullnat"] {
        let mut pts = Vec::new();
        for &f in flows {
            // A point the harness cannot run (full-NAT has fewer source ports than 10 M flows need) is left out,
            // said so, and kept in figures.json with its reason.
            match child(&arg(&["--mode", mode, "--flows", &f.to_string()])) {
                Ok(j) => {
                    eprintln!("plot: {mode} {f} flows: {:.2} Mpps", mpps(&j));
                    pts.push((f as f64, mpps(&j)));
                }
                Err(e) => {
                    let e = e.lines().last().unwrap_or("").to_string();
                    eprintln!("plot: {mode} {f} flows: left out: {e}");
                    figures.insert(format!("left_out_{mode}_{f}"), serde_json::json!(e));
                }
            }
        }
        figures.insert(format!("mpps_by_flows_{mode}"), serde_json::json!(pts));
        series.push(Series { name: mode.to_string(), points: pts });
    }
    let svg = lines(
        "Established IPv4 packets, one core",
        "tracked flows",
        "Mpps",
        &note("edgelb-perf --mode M --flows N (64-byte frames)"),
        &series,
        true,
    );
    std::fs::write(format!("{dir}/mpps-by-flows.svg"), svg).map_err(|e| e.to_string())?;

    let mut pts = Vec::new();
    let mut cdf = Vec::new();
    for c in 1..=cores {
        let j = child(&arg(&["--mode", "nat", "--flows", "1000000", "--cores", &c.to_string()]))?;
        eprintln!("plot: {c} cores: {:.2} Mpps", mpps(&j));
        pts.push((c as f64, mpps(&j)));
        if c == 1 {
            if let Some(q) = j["workers"][0]["burst_cdf"].as_array() {
                cdf = q.iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()? * 100.0))).collect();
            }
        }
    }
    figures.insert("mpps_by_cores_nat_1m".into(), serde_json::json!(pts));
    figures.insert("burst_ns_cdf_nat_1m".into(), serde_json::json!(cdf));
    let svg = lines(
        "Established NAT, 1 M flows, by cores",
        "worker cores",
        "Mpps (all cores)",
        &note("edgelb-perf --mode nat --flows 1000000 --cores C"),
        &[Series { name: "nat".into(), points: pts }],
        false,
    );
    std::fs::write(format!("{dir}/mpps-by-cores.svg"), svg).map_err(|e| e.to_string())?;
    let svg = lines(
        &format!("Per-burst latency ({} packets), NAT, 1 M flows", edgelb_dataplane::port::BURST),
        "ns per burst (log scale)",
        "% of bursts at or below",
        &note("edgelb-perf --mode nat --flows 1000000"),
        &[Series { name: "CDF".into(), points: cdf }],
        true,
    );
    std::fs::write(format!("{dir}/burst-latency-cdf.svg"), svg).map_err(|e| e.to_string())?;

    if let Some(k) = kernel_json {
        let text = std::fs::read_to_string(k).map_err(|e| format!("{k}: {e}"))?;
        let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{k}: {e}"))?;
        let side = |s: &str, f: &str| j[s][f].as_f64().unwrap_or(0.0);
        let groups = vec![
            (
                "highest loss-free rate (kpps, tested steps)".to_string(),
                vec![
                    ("nftables".to_string(), side("nftables", "loss_free_pps") / 1e3),
                    ("edgelb".to_string(), side("edgelb", "loss_free_pps") / 1e3),
                ],
            ),
            (
                format!("load balancer CPU ns per packet at {} pps", j["fixed_rate"]),
                vec![
                    ("nftables".to_string(), side("nftables", "cpu_ns_per_packet")),
                    ("edgelb".to_string(), side("edgelb", "cpu_ns_per_packet")),
                ],
            ),
        ];
        let svg = bars(
            &format!("edgelb (AF_XDP) against nftables DNAT, one core each, IPv{}", j["family"].as_u64().unwrap_or(4)),
            &format!("perf/kernel-compare ({})", j["machine"].as_str().unwrap_or("?")),
            &groups,
        );
        std::fs::write(format!("{dir}/kernel-compare.svg"), svg).map_err(|e| e.to_string())?;
        figures.insert("kernel_compare".into(), j);
    }
    figures.insert("machine".into(), serde_json::json!(format!("{machine}, {cores} cores")));
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(figures)).map_err(|e| e.to_string())?;
    std::fs::write(format!("{dir}/figures.json"), text).map_err(|e| e.to_string())?;
    Ok(())
}
