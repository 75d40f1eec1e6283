//! `edgelbd`: the appliance daemon; see [`edgelb::daemon`].

fn main() -> std::process::ExitCode {
    edgelb::daemon::run(std::env::args().skip(1).collect())
}
