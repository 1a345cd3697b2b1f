//! `emberd`: the host supervisor daemon (same as `ember serve`).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "emberd",
    version,
    about = "ember's host supervisor: the Lambda-compatible API over microVMs"
)]
struct Cli {
    #[command(flatten)]
    serve: ember_host::daemon::ServeArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ember_host::daemon::run(cli.serve)
}
