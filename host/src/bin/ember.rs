//! `ember`: the command line for emberd (see `ember --help`).

fn main() -> std::process::ExitCode {
    ember_host::cli::main()
}
