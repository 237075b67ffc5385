//! `idlereaperctl`: the operator's side of idlereaper's control socket. It sends one request
//! and prints the answer (`show`, `kill`, `upstream`, `reload`, `upgrade`), or keeps asking to draw a live
//! view (`top`). Exit status: 0 done, 1 the daemon cannot be reached, 2 a usage error or a
//! request the daemon refused. See idlereaperctl(8).

mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use idlereaper::ctl::{self, Failure};

const AFTER_HELP: &str = "\
The control socket is the [control] table's socket in the configuration file (-c), unless -s
names it. The protocol is one request line, then the answer; see idlereaperctl(8).

Exit status: 0 done, 1 the daemon cannot be reached, 2 usage error or refused request.";

/// Inspect and steer a running idlereaper through its control socket.
#[derive(Debug, Parser)]
#[command(name = "idlereaperctl", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// The control socket (default: the one the configuration file names).
    #[arg(short, long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// The daemon's configuration file, to find the control socket in.
    #[arg(short, long, value_name = "CONFIG", default_value = "/etc/idlereaper.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show open connections or listeners.
    #[command(subcommand)]
    Show(Show),
    /// Close connections at once (reason "killed"): by id, by client, or by listener.
    Kill(Kill),
    /// Take an upstream address out of a listener's choice for new connections, or put it back.
    #[command(subcommand)]
    Upstream(Upstream),
    /// Reload the configuration file; prints what changed, or the error (exit 2).
    Reload,
    /// Upgrade the daemon in place to the binary on disk; prints the result (exit 2 if refused).
    Upgrade,
    /// A live view, refreshed every second (q or Ctrl-C quits); plain lines when not on a terminal.
    Top(top::Options),
}

#[derive(Debug, Subcommand)]
enum Show {
    /// One row per open connection, soonest to be reaped first.
    Conns {
        /// Only this listener's connections.
        #[arg(long, value_name = "NAME")]
        listener: Option<String>,
        /// Only connections idle at least this long ("30s", "5m").
        #[arg(long, value_name = "DURATION")]
        idle_over: Option<String>,
        /// At most this many rows: the soonest to be reaped.
        #[arg(long, value_name = "N", value_parser = count)]
        limit: Option<u64>,
        /// A JSON array of objects (durations in milliseconds).
        #[arg(long)]
        json: bool,
    },
    /// One row per listener, with its counters.
    Listeners {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Upstream {
    /// No new connection goes to ADDRESS; the open ones carry on (a drain).
    Disable(UpstreamAddress),
    /// New connections go to ADDRESS again, at once (a backoff it was in ends).
    Enable(UpstreamAddress),
}

#[derive(Debug, Args)]
struct UpstreamAddress {
    /// The relay listener, by name.
    listener: String,
    /// IP:port or unix:/path, as `show listeners` lists it; or an upstream entry as the
    /// configuration writes it (host:port: every address it resolves to).
    address: String,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Kill {
    /// Connection ids (as `show conns` and the close lines show them).
    #[arg(value_name = "ID")]
    ids: Vec<u64>,
    /// Every connection of this client: IP:port, or IP for all its ports.
    #[arg(long, value_name = "ADDRESS")]
    client: Option<String>,
    /// Every connection of this listener.
    #[arg(long, value_name = "NAME")]
    listener: Option<String>,
}

/// A count of at least 1 (`--limit`, `top -n`), refused in words otherwise.
fn count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a count of at least 1".to_owned()),
    }
}

/// The request line for a one-shot command.
fn request_line(command: &Command) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    let mut push = |w: &str| words.push(w.to_owned());
    match command {
        Command::Show(Show::Conns { listener, idle_over, limit, json }) => {
            push("show");
            push("conns");
            if let Some(l) = listener {
                push("--listener");
                push(l);
            }
            if let Some(d) = idle_over {
                push("--idle-over");
                push(&d.replace(' ', ""));
            }
            if let Some(n) = limit {
                push("--limit");
                push(&n.to_string());
            }
            if *json {
                push("--json");
            }
        }
        Command::Show(Show::Listeners { json }) => {
            push("show");
            push("listeners");
            if *json {
                push("--json");
            }
        }
        Command::Kill(Kill { ids, client, listener }) => {
            push("kill");
            match (client, listener) {
                (Some(c), _) => {
                    push("--client");
                    push(c);
                }
                (_, Some(l)) => {
                    push("--listener");
                    push(l);
                }
                _ => ids.iter().for_each(|id| push(&id.to_string())),
            }
        }
        Command::Upstream(action) => {
            let (word, UpstreamAddress { listener, address }) = match action {
                Upstream::Disable(a) => ("disable", a),
                Upstream::Enable(a) => ("enable", a),
            };
            ["upstream", word, listener, address].into_iter().for_each(&mut push);
        }
        Command::Reload => push("reload"),
        Command::Upgrade => push("upgrade"),
        Command::Top(_) => return None,
    }
    Some(words.join(" "))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = match cli.socket.clone().map_or_else(|| ctl::socket_in(&cli.config), Ok) {
        Ok(socket) => socket,
        Err(e) => return fail(&e),
    };
    let outcome = match request_line(&cli.command) {
        Some(line) => ctl::ask(&socket, &line).map(|answer| print!("{answer}")),
        None => match &cli.command {
            Command::Top(options) => top::run(&socket, options),
            _ => unreachable!("every other command is one request"),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &Failure) -> ExitCode {
    eprintln!("idlereaperctl: {e}");
    ExitCode::from(e.exit_status() as u8)
}
