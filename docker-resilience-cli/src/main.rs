//! `drbuild`: see `drbuild --help`.

// The system allocator, on purpose: mimalloc made a plan of 10,000 Dockerfiles about 15%
// faster, but held 56-76 MiB at the peak of a 1 GiB blob fetched in 16 parts (freed
// read buffers of the parts' connections stay committed for a second) against 42-48
// MiB with glibc's malloc, and a blob fetch's memory has a bound (64 MiB) to keep.

fn main() -> std::process::ExitCode {
    docker_resilience_cli::main()
}
