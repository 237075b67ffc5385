//! The command line: `idlereaper [-c|--config PATH] [-f|--foreground] [-p|--pidfile PATH]
//! [-t|--check] [-V|--version]`. clap exits with status 2 on a usage error, as the contract wants.

use std::path::PathBuf;

use clap::Parser;

/// TCP relay daemon that closes idle connections.
#[derive(Debug, Clone, Parser)]
#[command(name = "idlereaper", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(short, long, value_name = "PATH", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Stay in the foreground and log to stderr (unless `daemon.log` is a file).
    #[arg(short, long)]
    pub foreground: bool,

    /// Pidfile; overrides `daemon.pidfile`.
    #[arg(short, long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,

    /// Parse and validate the configuration, print what it holds, and exit. Binds nothing.
    #[arg(short = 't', long)]
    pub check: bool,
}

impl Cli {
    /// Parses `std::env::args`, exiting with status 2 (and a usage message) on bad arguments.
    pub fn parse_args() -> Cli {
        Cli::parse()
    }
}
