//! The `idlereaper` command: parse the command line, run, map the outcome to an exit status.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = idlereaper::cli::Cli::parse_args();
    match idlereaper::app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            idlereaper::error::report(&err);
            ExitCode::from(err.exit_status())
        }
    }
}
