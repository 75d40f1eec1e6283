//! `edgelbctl`: the management API's command-line client; see [`edgelb::ctl`].

edgelb_cpu::check_before_main!();

fn main() -> std::process::ExitCode {
    edgelb::ctl::main_with(std::env::args().skip(1).collect())
}
