//! `edgelbd`: the appliance daemon; see [`edgelb::daemon`].

edgelb_cpu::check_before_main!();

fn main() -> std::process::ExitCode {
    edgelb::daemon::run(std::env::args().skip(1).collect())
}
