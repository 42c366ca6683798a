//! The `microscale` binary: parse the command line and dispatch (see `src/cli/`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
