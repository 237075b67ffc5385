//! The program, from a parsed command line to a stopped daemon: load the config, lock the
//! pidfile, bind, daemonize (or not), drop privileges, run the event loop, clean up. Every error
//! is an [`Error`] whose [`Error::exit_status`] is the contract's: 2 for configuration, 1 else.

use log::info;

use crate::cli::Cli;
use crate::config::{Config, ConfigError};
use crate::control;
use crate::daemon::{self, Credentials, Forked, Pidfile};
use crate::error::Error;
use crate::handover::{codec, exec};
use crate::listener::{self, Listener};
use crate::logging::{self, Destination};
use crate::metrics::http::Endpoint;
use crate::metrics::Metrics;
use crate::supervisor::{Runtime, Services, Supervisor, Upgraded};
use crate::upgrade;
use crate::upstream;
use crate::worker::Worker;

/// Runs the command.
pub fn run(cli: Cli) -> Result<(), Error> {
    if cli.handover_versions {
        let versions: Vec<String> = codec::READS.iter().map(u32::to_string).collect();
        println!("{}", versions.join(" "));
        return Ok(());
    }
    if let Some(fd) = cli.handover_check {
        let state = exec::read(fd).map_err(|e| Error::io("the sample state", e))?;
        upgrade::check(&state)?;
        println!("ok: connections={} listeners={}", state.connections(), state.in_force.len());
        return Ok(());
    }
    if let Some(fd) = cli.handover {
        return resume(fd);
    }
    let pidfile = match &cli.pidfile {
        None => None,
        Some(p) => {
            Some(std::path::absolute(p).map_err(|e| Error::io(format!("--pidfile {}", p.display()), e))?)
        }
    };
    let mut config = Config::load(&cli.config, pidfile.as_deref())?;
    // A reload re-reads the file after the daemon has changed to `/`.
    config.path = std::path::absolute(&config.path).unwrap_or(config.path);
    let pidfile_overridden = pidfile.is_some();
    if cli.check {
        for line in config.summary() {
            println!("{line}");
        }
        // Host names are resolved as a start would resolve them (exit status 1 if one fails).
        for (i, lc) in config.listeners.iter().enumerate() {
            if let Some(upstreams) = listener::resolve_upstreams(&config, i)?.filter(|u| u.has_names()) {
                println!(
                    "listener {}: upstream resolves to {}",
                    lc.name,
                    upstream::list(&upstreams.pick().0)
                );
            }
        }
        // Not an error: the file is fine with --foreground (as under systemd).
        let detached = logging::detached_problem_with(&config.daemon.log, syslog_socket(), false);
        if let (false, Some(msg)) = (cli.foreground, detached) {
            let e = log_error(&config, msg);
            eprintln!("idlereaper: warning: without --foreground, idlereaper would refuse to start: {e}");
        }
        println!("{}: configuration ok", config.path.display());
        return Ok(());
    }
    start(&config, cli.foreground, pidfile_overridden)
}

/// Everything that can fail before the event loop runs, in the order that keeps errors on the
/// terminal and leaves nothing behind on failure.
fn start(config: &Config, foreground: bool, pidfile_overridden: bool) -> Result<(), Error> {
    if !foreground {
        if let Some(msg) = logging::detached_problem(&config.daemon.log) {
            return Err(log_error(config, msg).into());
        }
    }
    let credentials = Credentials::resolve(config.daemon.user.as_deref(), config.daemon.group.as_deref())?;
    let own_dir = daemon::make_pidfile_dir(&config.daemon.pidfile)?;
    let pidfile = Pidfile::lock(&config.daemon.pidfile)?;
    let metrics = Metrics::new(config.daemon.workers);
    let owner = credentials.as_ref().map(|c| (c.uid.as_raw(), c.gid.as_raw()));
    let bound = listener::bind(config, &metrics, owner).and_then(|listeners| {
        let endpoint = match &config.metrics {
            None => None,
            Some(m) => Some(
                Endpoint::bind(m.listen)
                    .map_err(|e| Error::io(format!("metrics: cannot listen on {}", m.listen), e))?,
            ),
        };
        let log = Destination::open(&config.daemon.log, foreground)?;
        if let Some(creds) = &credentials {
            creds.hand_over(&pidfile, own_dir, log.file())?;
        }
        // Before privileges are dropped: the socket file is given to daemon.user/group.
        let control = match &config.control {
            None => None,
            Some(c) => Some(
                control::Server::bind(c, owner)
                    .map_err(|e| Error::io(format!("control: cannot listen on {}", c.socket.display()), e))?,
            ),
        };
        Ok((Bound { listeners, services: Services { endpoint, control }, metrics }, log))
    });
    let (listeners, log) = match bound {
        Ok(ok) => ok,
        Err(e) => {
            pidfile.remove();
            return Err(e);
        }
    };
    if foreground {
        let server = setup(
            config,
            (pidfile_overridden, true),
            listeners,
            log,
            &credentials,
            pidfile_with_pid(pidfile)?,
        )?;
        return serve(server);
    }
    match daemon::daemonize()? {
        Forked::Starter(outcome) => {
            // The sockets are the daemon's now: the starter must not remove their files (a Unix
            // listener's, the control socket) as it drops its copies.
            std::mem::forget(listeners);
            outcome
        }
        Forked::Daemon(notifier) => {
            let daemon = pidfile_with_pid(pidfile)
                .and_then(|pidfile| {
                    setup(config, (pidfile_overridden, false), listeners, log, &credentials, pidfile)
                })
                .and_then(|ready| daemon::detach_stdio(ready.log.on_stderr()).map(|()| ready));
            match daemon {
                Ok(ready) => {
                    notifier.ready();
                    serve(ready)
                }
                Err(e) => {
                    notifier.fail(&e.to_string());
                    Err(e)
                }
            }
        }
    }
}

fn pidfile_with_pid(mut pidfile: Pidfile) -> Result<Pidfile, Error> {
    match pidfile.write_pid(std::process::id()) {
        Ok(()) => Ok(pidfile),
        Err(e) => {
            pidfile.remove();
            Err(e)
        }
    }
}

/// A daemon ready to serve: its workers under a supervisor, the logger, and the pidfile to
/// remove when it stops.
struct Ready {
    supervisor: Supervisor,
    log: logging::LogHandle,
    pidfile: Pidfile,
    /// The `started` line (the new image of an upgrade says `upgraded` instead).
    started: Option<String>,
    /// Logged once logging is up.
    warning: Option<String>,
}

/// What start-up binds while it can still report errors on the terminal.
struct Bound {
    /// One set per worker.
    listeners: Vec<Vec<Listener>>,
    services: Services,
    metrics: Metrics,
}

/// In the process that will serve: drop privileges, build the event loops, install the signal
/// handlers and logging.
fn setup(
    config: &Config,
    (pidfile_overridden, foreground): (bool, bool),
    Bound { listeners, services, metrics }: Bound,
    log: Destination,
    credentials: &Option<Credentials>,
    pidfile: Pidfile,
) -> Result<Ready, Error> {
    let started = started_line(config);
    let runtime = Runtime {
        pidfile_overridden,
        foreground,
        exe: std::env::current_exe().ok(),
        pidfile_fd: pidfile.descriptor(),
        args: started_args(),
    };
    let warning = config_writable_warning(config); // while we may still be root

    // Two descriptors per connection, and some for listeners, pipes and the like per worker.
    let connections: usize = config.listeners.iter().map(|l| l.max_connections).sum();
    daemon::reserve_descriptors(connections.saturating_mul(2).saturating_add(listeners.len() * 256));
    let built = credentials.as_ref().map_or(Ok(()), Credentials::drop_privileges).and_then(|()| {
        let upstreams =
            listeners.first().map_or(Vec::new(), |set| set.iter().map(|l| l.upstreams.clone()).collect());
        let workers = listeners
            .into_iter()
            .enumerate()
            .map(|(i, set)| Worker::new(config, i, set, metrics.clone()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("event loop", e))?;
        Supervisor::new(config.clone(), runtime, workers, metrics, services, upstreams)
            .map_err(|e| Error::io("signal handlers", e))
    });
    let installed =
        built.and_then(|supervisor| Ok((supervisor, logging::install(log, config.daemon.log_level)?)));
    match installed {
        Ok((supervisor, log)) => Ok(Ready { supervisor, log, pidfile, started: Some(started), warning }),
        Err(e) => {
            pidfile.remove();
            Err(e)
        }
    }
}

/// The new image of a live upgrade (`--handover FD`): the daemon rebuilt from the state the
/// old image left in `fd` — same process, pidfile still locked, privileges already dropped —
/// then served as if it had started, without the start's checks and binds.
fn resume(fd: i32) -> Result<(), Error> {
    let state = exec::read(fd).map_err(|e| Error::io("upgrade: the state handed over", e))?;
    let metrics = Metrics::resumed(state.workers.len(), &state.counters);
    let thawed = upgrade::thaw(&state, &metrics)?;
    let config = thawed.config.clone();
    let pidfile = Pidfile::adopt(&config.daemon.pidfile, state.pidfile_fd)?;
    let endpoint = state.endpoint_fd.map(Endpoint::adopt).transpose().map_err(|e| Error::io("metrics", e))?;
    let control = match (state.control_fd, &config.control) {
        (Some(fd), Some(c)) => {
            let frozen = crate::clock::instant_of(state.frozen_at);
            let server = control::Server::adopt(fd, &c.socket, &state.control_clients, frozen);
            Some(server.map_err(|e| Error::io("control socket", e))?)
        }
        _ => None,
    };
    let log =
        logging::install(Destination::open(&config.daemon.log, state.foreground)?, config.daemon.log_level)?;
    let runtime = Runtime {
        pidfile_overridden: state.pidfile_overridden,
        foreground: state.foreground,
        exe: std::env::current_exe().ok(),
        pidfile_fd: pidfile.descriptor(),
        args: started_args(),
    };
    let upgraded = Upgraded {
        from: state.from.clone(),
        frozen_at: state.frozen_at,
        connections: thawed.connections,
        listeners: thawed.listeners,
        stop: state.stop,
        reply: state.reply_fd,
        retired: state.retired.clone(),
    };
    let services = Services { endpoint, control };
    let supervisor = Supervisor::resumed(thawed, runtime, metrics, services, upgraded)
        .map_err(|e| Error::io("signal handlers", e))?;
    serve(Ready { supervisor, log, pidfile, started: None, warning: None })
}

/// The arguments the process was started with, without the `--handover FD` of an upgrade.
fn started_args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == exec::HANDOVER_ARG) {
        args.drain(at..(at + 2).min(args.len()));
    }
    args
}

/// An error about `daemon.log`, at the key, or saying it is the default.
fn log_error(config: &Config, msg: String) -> ConfigError {
    let at = config.daemon.log_at;
    config.error_at("daemon.log", at, if at.is_some() { msg } else { format!("not set, so {msg}") })
}

fn syslog_socket() -> bool {
    std::path::Path::new(logging::SYSLOG_SOCKET).exists()
}

fn started_line(config: &Config) -> String {
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .map(|l| match l.upstream.is_empty() {
            true => format!("{}={} sink", l.name, l.listen),
            false => {
                let ups: Vec<String> = l.upstream.iter().map(ToString::to_string).collect();
                format!("{}={}->{}", l.name, l.listen, ups.join(","))
            }
        })
        .collect();
    format!(
        "started version={} pid={} workers={} listeners=\"{}\"",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        config.daemon.workers,
        listeners.join(", ")
    )
}

fn serve(Ready { supervisor, log, pidfile, started, warning }: Ready) -> Result<(), Error> {
    if let Some(started) = started {
        info!("{started}");
    }
    if let Some(warning) = warning {
        log::warn!("{warning}");
    }
    let result = supervisor.run(log).map_err(|e| Error::io("event loop", e));
    pidfile.remove();
    match &result {
        Ok(()) => info!("stopped"),
        Err(e) => log::error!("stopped on error: {e}"),
    }
    result
}

/// Running as root on a config file that someone else may write would let them choose what we
/// listen on and relay to: say so once, at start.
fn config_writable_warning(config: &Config) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let meta = std::fs::metadata(&config.path).ok()?;
    let (owner, mode) = (meta.uid(), meta.mode());
    (owner != 0 || mode & 0o022 != 0).then(|| {
        format!(
            "config file {} is writable by a user other than root (owner uid {owner}, mode {:o}) \
             while idlereaper was started as root",
            config.path.display(),
            mode & 0o7777
        )
    })
}
