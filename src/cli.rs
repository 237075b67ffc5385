//! The command line: `idlereaper [-c|--config PATH] [-f|--foreground] [-p|--pidfile PATH]
//! [-t|--check] [-v|-V|--version]`. clap exits with status 2 on a usage error, as the contract
//! wants. `--help` ends with what the man pages say at more length (daemonizing, signals, exit
//! status) and points to them; `--version` adds the build's features to the version, as
//! `haproxy -vv` does, and `-v` (nginx's and HAProxy's version flag) is `-V`.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{ArgAction, Parser};

/// After the options in `--help`.
const AFTER_HELP: &str = "\
Without --foreground, idlereaper daemonizes: the command returns once the daemon has locked its
pidfile and bound every listener (exit status 0), or prints the error and leaves nothing running.
Once it has returned, the daemon writes nothing to the terminal.

Signals: TERM or INT stop gracefully (open connections get up to daemon.shutdown_timeout; a
second one stops at once), HUP reloads the configuration, USR1 reopens the log file and logs
statistics, USR2 upgrades in place: the binary at the path the daemon was started as is
executed again from disk in the same process, and every listener and connection carries on in
the new code (or in the old, if the new one fails).

Exit status: 0 success, 2 usage or configuration error, 1 any other failure.

See idlereaper(8) and idlereaper.toml(5).";

/// `--version`: the version, then what this build is and does.
static LONG_VERSION: LazyLock<String> = LazyLock::new(|| {
    let build = if cfg!(debug_assertions) { "debug build" } else { "release build" };
    format!(
        "{}\n\
         target: {}-{}, {build}\n\
         features: epoll event loop, timerfd alarms, splice relay, SO_REUSEPORT workers, \
         PROXY protocol v1 and v2 toward upstreams, syslog ({}), Prometheus metrics endpoint\n\
         default config: {}\n\
         manuals: idlereaper(8), idlereaper.toml(5)",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        crate::logging::SYSLOG_SOCKET,
        crate::config::DEFAULT_PATH,
    )
});

/// TCP relay daemon that closes idle connections.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "idlereaper",
    version,
    long_version = LONG_VERSION.as_str(),
    about,
    long_about = None,
    after_help = AFTER_HELP,
    disable_version_flag = true
)]
pub struct Cli {
    /// Configuration file.
    #[arg(short, long, value_name = "PATH", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Do not daemonize; log to stderr (unless daemon.log is a file).
    #[arg(short, long)]
    pub foreground: bool,

    /// Pidfile; overrides daemon.pidfile.
    #[arg(short, long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,

    /// Check the configuration as a start would, print what it holds, and exit. Binds nothing.
    #[arg(short = 't', long)]
    pub check: bool,

    /// Internal: the new image of a live upgrade, handed its state in this descriptor.
    #[arg(long, value_name = "FD", hide = true)]
    pub handover: Option<i32>,

    /// Internal: the guardian of a live upgrade (with --handover): the read end of the pipe on
    /// which the new image says whether it took over, the new image's pid, and a process
    /// descriptor of it (-1: none).
    #[arg(long, value_names = ["FD", "PID", "PIDFD"], num_args = 3, requires = "handover", hide = true,
          allow_negative_numbers = true)]
    pub handover_guard: Option<Vec<i32>>,

    /// Print the handover state versions this binary reads (checked before a live upgrade to
    /// it), and exit.
    #[arg(long, hide = true)]
    pub handover_versions: bool,

    /// Read the sample handover state in this descriptor as an upgrade would, and exit 0 if
    /// it can be restored (checked before a live upgrade to this binary).
    #[arg(long, value_name = "FD", hide = true)]
    pub handover_check: Option<i32>,

    /// Print the version (--version: with the build's features) and exit.
    #[arg(short = 'V', long, visible_short_alias = 'v', action = ArgAction::Version)]
    version: Option<bool>,
}

impl Cli {
    /// Parses `std::env::args`, exiting with status 2 (and a usage message) on bad arguments.
    pub fn parse_args() -> Cli {
        Cli::parse()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }
}
