//! `idlereaperctl`: the operator's side of idlereaper's control socket. It sends one request
//! and prints the answer (`show`, `kill`, `upstream`, `reload`, `upgrade`), or keeps asking to
//! draw a live view (`top`); `upgrade --pid` asks by signal instead, for a daemon without a
//! control socket. The socket is found without trusting the whole configuration file
//! (`ctl::locate`). Exit status, as idlereaperctl(8) states it: 0 done, 1 the daemon cannot be
//! reached or nothing matched, 2 a usage error or a request the daemon refused, 3 no answer
//! within the wait.

mod top;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use idlereaper::ctl::{self, by_signal, locate, Failure};

const AFTER_HELP: &str = "\
The socket is the one -s names; else the [control] table's socket in the configuration file
(-c), read even from a file with errors elsewhere (a file that cannot be read or parsed is a
warning); else /run/idlereaper/control.sock, the packaged one. The protocol is one request
line, then the answer; see idlereaperctl(8).

Exit status: 0 done; 1 the daemon cannot be reached, or nothing matched (kill); 2 usage error,
or a request the daemon refused (a failed reload, a refused or failed upgrade); 3 no answer
within the wait (upgrade --wait, 60 s for the other commands).";

/// idlereaperctl: see and steer a running idlereaper daemon through its control socket — its
/// connections, listeners and configuration; close connections, reload, upgrade in place, each
/// with its result. See idlereaperctl(8).
#[derive(Debug, Parser)]
#[command(name = "idlereaperctl", version, after_help = AFTER_HELP)]
struct Cli {
    /// The control socket (default: the [control] socket of the configuration file, else
    /// /run/idlereaper/control.sock).
    // The help text names the `[control]` table as a person writes it: not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(short, long, value_name = "SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// The daemon's configuration file, to find the control socket in.
    #[arg(short, long, value_name = "CONFIG", default_value = "/etc/idlereaper.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show open connections, listeners, the daemon or its configuration.
    #[command(subcommand)]
    Show(Show),
    /// Close connections at once (reason "killed"): by id, by client, or by listener; exit 1
    /// if none matched.
    Kill(Kill),
    /// Take an upstream address out of a listener's choice for new connections, or put it back.
    #[command(subcommand)]
    Upstream(Upstream),
    /// Reload the configuration file; prints what changed per listener and key, and the
    /// settings that need a restart, or the error (exit 2).
    Reload,
    /// Upgrade the daemon in place to the binary on disk and wait for the outcome: exit 0
    /// upgraded, 2 refused or failed (with why), 3 no outcome within the wait.
    Upgrade(Upgrade),
    /// A live view, refreshed every second (q or Ctrl-C quits); plain lines when not on a terminal.
    Top(top::Options),
    /// Whether the daemon answers: prints "pong", its pid and version (exit 0), or why not.
    Ping,
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
        /// A JSON array of objects (durations in milliseconds).
        #[arg(long)]
        json: bool,
    },
    /// The daemon: version, pid, uptime, configuration file and when it was loaded, workers,
    /// open connections, the last reload and the last upgrade.
    Info {
        /// One JSON object (times in seconds since the Unix epoch).
        #[arg(long)]
        json: bool,
    },
    /// The configuration in force, every key written out, as TOML that idlereaper --check
    /// accepts.
    Config {
        /// The same as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct Upgrade {
    /// Without a control socket: send SIGUSR2 to this idlereaper process and watch /proc for
    /// the outcome (a refusal's reason is then only in the daemon's log).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// How long to wait for the outcome ("90s", "2m").
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    wait: Duration,
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

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write \"90s\", \"2m\")"))
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
        Command::Show(Show::Listeners { json }) => subject(&mut words, "listeners", *json),
        Command::Show(Show::Info { json }) => subject(&mut words, "info", *json),
        Command::Show(Show::Config { json }) => subject(&mut words, "config", *json),
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
        Command::Upgrade(_) => push("upgrade"),
        Command::Ping => push("ping"),
        Command::Top(_) => return None,
    }
    Some(words.join(" "))
}

/// `show SUBJECT [--json]`.
fn subject(words: &mut Vec<String>, subject: &str, json: bool) {
    words.extend(["show", subject].map(str::to_owned));
    if json {
        words.push("--json".to_owned());
    }
}

/// A `kill` answer that closed nothing is a failure: a mistyped id or name must not pass.
fn killed(kill: &Kill, answer: String) -> Result<String, Failure> {
    if answer.trim_end() != "killed 0" {
        return Ok(answer);
    }
    let what = match (&kill.client, &kill.listener) {
        (Some(client), _) => format!("client {client}"),
        (_, Some(listener)) => {
            format!("listener {listener:?} (no such listener, or none of its connections is open)")
        }
        _ => {
            let ids: Vec<String> = kill.ids.iter().map(u64::to_string).collect();
            format!("id {}", ids.join(", "))
        }
    };
    Err(Failure::Unmatched(format!("no connection matched {what}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Upgrade(Upgrade { pid: Some(pid), wait }) = &cli.command {
        let (pidfile, warning) = locate::pidfile(&cli.config);
        if let Some(warning) = warning {
            eprintln!("idlereaperctl: warning: {warning}");
        }
        return finish(by_signal::upgrade(*pid, &pidfile.path, *wait).map(|line| println!("{line}")), None);
    }
    let (socket, warning) = locate::socket(cli.socket.as_deref(), &cli.config);
    if let Some(warning) = warning {
        eprintln!("idlereaperctl: warning: {warning}; the socket is {}", socket.origin);
    }
    let outcome = match (&cli.command, request_line(&cli.command)) {
        (Command::Top(options), _) => top::run(&socket.path, options),
        (command, Some(line)) => {
            let wait = match command {
                Command::Upgrade(upgrade) => upgrade.wait,
                _ => ctl::ANSWER_TIMEOUT,
            };
            let answer = ctl::ask_within(&socket.path, &line, wait);
            let answer = match command {
                Command::Kill(kill) => answer.and_then(|a| killed(kill, a)),
                _ => answer,
            };
            answer.map(|answer| print!("{answer}"))
        }
        (_, None) => unreachable!("every other command is one request"),
    };
    finish(outcome, Some(&socket))
}

/// The exit status of `outcome`, its failure said; where the socket came from, when it could
/// not be reached.
fn finish(outcome: Result<(), Failure>, socket: Option<&locate::Located>) -> ExitCode {
    let Err(e) = outcome else { return ExitCode::SUCCESS };
    eprintln!("idlereaperctl: {e}");
    if let (Failure::Unreachable(_), Some(socket)) = (&e, socket) {
        eprintln!("idlereaperctl: the socket is {}", socket.origin);
    }
    ExitCode::from(e.exit_status() as u8)
}
