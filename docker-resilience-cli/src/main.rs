//! `drbuild`: see `drbuild --help`.

fn main() -> std::process::ExitCode {
    docker_resilience_cli::main()
}
