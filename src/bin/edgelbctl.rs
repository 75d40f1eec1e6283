//! `edgelbctl`: the management API's command-line client; see [`edgelb::ctl`].

fn main() -> std::process::ExitCode {
    edgelb::ctl::main_with(std::env::args().skip(1).collect())
}
