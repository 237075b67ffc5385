//! The program, from a parsed command line to a stopped daemon: load the config, lock the
//! pidfile, bind, daemonize (or not), drop privileges, run the event loop, clean up. Every error
//! is an [`Error`] whose [`Error::exit_status`] is the contract's: 2 for configuration, 1 else.
//! The daemon rebuilt from a live upgrade's state, in the new image or in its guardian, is
//! `resume`'s.

mod invocation;
mod resume;

use std::path::PathBuf;

use log::info;

use crate::activation::Inherited;
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
use crate::supervisor::{Runtime, Services, Supervisor};
use crate::upgrade;
use crate::upstream;
use crate::worker::Worker;
use invocation::{invoked_as, started_args};

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
        return match cli.handover_guard.as_deref() {
            Some(&[pipe, image, pidfd]) => resume::guard(fd, pipe, image as u32, pidfd),
            _ => resume::resume(fd, None),
        };
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
            if let Some(upstreams) = listener::resolve_upstreams(&config, i, None)?.filter(|u| u.has_names())
            {
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
    // First: descriptors 3 and up are still only what systemd passed, if it did.
    let mut inherited = Inherited::take();
    // Before daemonizing changes the directory a relative path is relative to.
    let started_as = invoked_as();
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
    let bound = listener::bind(config, &metrics, owner, &mut inherited).and_then(|listeners| {
        let (services, log) = open_services(config, foreground, &credentials, &pidfile, own_dir)?;
        // A socket systemd passed that no listener took is closed now.
        let warnings = std::mem::take(&mut inherited).close_the_rest();
        Ok((Bound { listeners, services, metrics, warnings }, log))
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
            (pidfile_overridden, true, started_as),
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
                    setup(
                        config,
                        (pidfile_overridden, false, started_as),
                        listeners,
                        log,
                        &credentials,
                        pidfile,
                    )
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

/// The metrics endpoint and the control socket, each if configured, and the log: opened while
/// start-up can still report errors on the terminal. The pidfile's directory (if start-up made
/// it), the pidfile and the log file are handed to `daemon.user` before the control socket is
/// bound, which is given to that user too, before privileges are dropped.
fn open_services(
    config: &Config,
    foreground: bool,
    credentials: &Option<Credentials>,
    pidfile: &Pidfile,
    own_dir: bool,
) -> Result<(Services, Destination), Error> {
    let endpoint = match &config.metrics {
        None => None,
        Some(m) => Some(
            Endpoint::bind(m.listen)
                .map_err(|e| Error::io(format!("metrics: cannot listen on {}", m.listen), e))?,
        ),
    };
    let log = Destination::open(&config.daemon.log, foreground)?;
    if let Some(creds) = credentials {
        creds.hand_over(pidfile, own_dir, log.file())?;
    }
    let owner = credentials.as_ref().map(|c| (c.uid.as_raw(), c.gid.as_raw()));
    let control = match &config.control {
        None => None,
        Some(c) => Some(
            control::Server::bind(c, owner)
                .map_err(|e| Error::io(format!("control: cannot listen on {}", c.socket.display()), e))?,
        ),
    };
    Ok((Services { endpoint, control }, log))
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
    started: Option<Started>,
    /// Logged once logging is up.
    warnings: Vec<String>,
}

/// What start-up binds while it can still report errors on the terminal.
struct Bound {
    /// One set per worker.
    listeners: Vec<Vec<Listener>>,
    services: Services,
    metrics: Metrics,
    /// Logged once logging is up.
    warnings: Vec<String>,
}

/// In the process that will serve: drop privileges, build the event loops, install the signal
/// handlers and logging.
fn setup(
    config: &Config,
    (pidfile_overridden, foreground, started_as): (bool, bool, Option<PathBuf>),
    Bound { listeners, services, metrics, warnings: bound_warnings }: Bound,
    log: Destination,
    credentials: &Option<Credentials>,
    pidfile: Pidfile,
) -> Result<Ready, Error> {
    let started = Started::of(config);
    let runtime = Runtime {
        pidfile_overridden,
        foreground,
        started_as,
        pidfile_fd: pidfile.descriptor(),
        args: started_args(),
    };
    let mut warnings: Vec<String> = config_writable_warning(config).into_iter().collect(); // while we may still be root
    warnings.extend(bound_warnings);

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
    let installed = built.and_then(|supervisor| {
        Ok((supervisor, logging::install(log, config.daemon.log_level, config.daemon.log_format)?))
    });
    match installed {
        Ok((supervisor, log)) => Ok(Ready { supervisor, log, pidfile, started: Some(started), warnings }),
        Err(e) => {
            pidfile.remove();
            Err(e)
        }
    }
}

/// An error about `daemon.log`, at the key, or saying it is the default.
fn log_error(config: &Config, msg: String) -> ConfigError {
    let at = config.daemon.log_at;
    config.error_at("daemon.log", at, if at.is_some() { msg } else { format!("not set, so {msg}") })
}

fn syslog_socket() -> bool {
    std::path::Path::new(logging::SYSLOG_SOCKET).exists()
}

/// The `started` line: what runs, logged once logging is up.
struct Started {
    workers: usize,
    /// `name=listen->upstream,…` or `name=listen sink`, for each listener.
    listeners: String,
}

impl Started {
    fn of(config: &Config) -> Started {
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
        Started { workers: config.daemon.workers, listeners: listeners.join(", ") }
    }

    fn log(&self) {
        let (version, pid) = (env!("CARGO_PKG_VERSION"), std::process::id());
        info!(version, pid, workers = self.workers, listeners = self.listeners.as_str(); "started");
    }
}

fn serve(Ready { supervisor, log, pidfile, started, warnings }: Ready) -> Result<(), Error> {
    if let Some(started) = started {
        started.log();
    }
    for warning in warnings {
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
