//! A live upgrade, the supervisor's part (SIGUSR2, `idlereaperctl upgrade`): resolve the path
//! the daemon was started as, ask that binary, freeze the workers, start the guardian, write
//! the state and exec; or, if the exec fails, carry on from the same state. And the first turn
//! of the new image ([`Supervisor::upgrade_done`]), or of the guardian carrying on after the new
//! image did not take over.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use log::kv::Value;
use log::{error, info, warn, Level};

use super::{broadcast, watch_list, Supervisor, Threads, Turn, Upgraded, CONTROL, METRICS};
use crate::clock::monotonic_ns;
use crate::control;
use crate::handover::state::State;
use crate::handover::{exec, guardian};
use crate::logging;
use crate::metrics::http::Endpoint;
use crate::metrics::UpgradeResult;
use crate::signals::{self, Signal};
use crate::upgrade::{self, Carried};
use crate::worker::{Command, Frozen, Remote};

/// Writes `line` to the control client whose descriptor a state carried, and closes it.
fn tell(fd: Option<RawFd>, line: &str) {
    if let Some(fd) = fd {
        if let Ok(fd) = crate::sys::adopt(fd) {
            let mut client = std::os::unix::net::UnixStream::from(fd);
            let _ = client.write_all(format!("{line}\n").as_bytes());
        }
    }
}

impl Supervisor {
    /// A live upgrade: check the new binary, freeze the workers, exec it with the state. Returns
    /// only if the upgrade was refused (the running code carries on, with every connection),
    /// having told `asker` (a control client) why; `Err` if, after a failed exec, the workers
    /// could not be rebuilt.
    pub(super) fn upgrade(&mut self, turn: &mut Turn<'_>, asker: Option<usize>) -> io::Result<()> {
        self.notifier.reloading();
        let (started_as, exe) = match self.binary() {
            Ok(paths) => paths,
            Err(reason) => {
                self.upgrade_refused(reason, asker);
                return Ok(());
            }
        };
        info!("upgrade: checking {}", shown(&started_as, &exe));
        let mut args = vec![OsStr::new("--config"), self.config.path.as_os_str()];
        if self.runtime.pidfile_overridden {
            args.extend([OsStr::new("--pidfile"), self.config.daemon.pidfile.as_os_str()]);
        }
        let sample = upgrade::sample_of(
            self.carried(false, [None; 3], turn.log.descriptor()),
            turn.threads.remotes.len(),
        );
        if let Err(reason) = exec::preflight(&exe, &args, &sample) {
            self.upgrade_refused(reason, asker);
            return Ok(());
        }
        // From here on a signal waits for the image that will handle it; those that came
        // before are answered now.
        signals::block();
        let stop = self.answer_pending(turn.log);
        let frozen_at = monotonic_ns();
        let (reply, replies) = mpsc::channel::<Frozen>();
        broadcast(&turn.threads.remotes, || Command::Freeze { at: frozen_at, reply: reply.clone() });
        drop(reply);
        let mut frozen: Vec<Frozen> = replies.iter().collect();
        frozen.sort_by_key(|f| f.worker);
        turn.threads.join(turn.finished);
        let registry = self.poll.registry();
        let endpoint_fd = self.endpoint.take().map(|e| e.freeze(registry));
        let (control_fd, reply_fd) = match self.control.take() {
            Some(control) => {
                let (fd, reply) = control.freeze(registry, asker);
                (Some(fd), reply)
            }
            None => (None, None),
        };
        let carried = self.carried(stop, [endpoint_fd, control_fd, reply_fd], turn.log.descriptor());
        let mut state = upgrade::state_of(carried, frozen_at, frozen);
        let failure = self.hand_over(&mut state, &exe, &started_as);
        // Still here: the exec failed. The old code carries on from the state.
        for fd in [Some(state.pidfile_fd), state.log_fd].into_iter().flatten() {
            let _ = crate::sys::close_on_exec(fd);
        }
        let thawed = upgrade::thaw(&state, &self.metrics, &mut Vec::new())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (config, sources, upstreams) = (thawed.config, thawed.sources, thawed.upstreams);
        (self.config, self.sources, self.slots) = (config, sources, thawed.in_force);
        self.watched.set(watch_list(&self.config, &upstreams));
        self.upstreams = upstreams;
        *turn.threads = Threads::spawn(thawed.workers, &self.done, turn.finished_tx)?;
        if let Some(fd) = state.endpoint_fd {
            let mut endpoint = Endpoint::adopt(fd)?;
            endpoint.register(self.poll.registry(), METRICS)?;
            self.endpoint = Some(endpoint);
        }
        self.control = self.adopt_control(state.control_fd)?;
        upgrade::close_retired(&state.retired);
        signals::unblock();
        let reason = format!("cannot execute {}: {failure}", exe.display());
        tell(state.reply_fd, &format!("error: upgrade refused: {reason}"));
        self.upgrade_refused(reason, None);
        if stop {
            self.stop(&turn.threads.remotes);
        }
        Ok(())
    }

    /// The signals that came before the upgrade committed: answered now (a stop is returned,
    /// for the image that carries on).
    fn answer_pending(&mut self, log: &super::LogHandle) -> bool {
        let mut stop = false;
        let pending: Vec<Signal> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                Signal::Stop => stop = true,
                Signal::Upgrade => warn!("SIGUSR2 during an upgrade: ignored"),
                Signal::Reload => {
                    warn!("SIGHUP during an upgrade: ignored (the upgrade reads the configuration)")
                }
                Signal::Stats => {
                    log.reopen();
                    logging::log_fields(Level::Info, "stats", &self.metrics.stats());
                }
            }
        }
        stop
    }

    /// The path the daemon was started as, and the file it resolves to now: the binary to ask
    /// and execute.
    fn binary(&self) -> Result<(PathBuf, PathBuf), String> {
        let Some(started_as) = self.runtime.started_as.clone() else {
            return Err("the path of the running binary is not known".to_owned());
        };
        let exe = std::fs::canonicalize(&started_as).map_err(|e| format!("{}: {e}", started_as.display()))?;
        Ok((started_as, exe))
    }

    /// Writes `state` to a memory file, starts the guardian (see `handover::guardian`), makes it
    /// the service manager's main process, and executes `exe`. Returns only if that failed,
    /// with why (the guardian then told to exit).
    fn hand_over(&self, state: &mut State, exe: &Path, started_as: &Path) -> io::Error {
        let memfd = match exec::memfd().and_then(|memfd| exec::inherit(state, &memfd).map(|()| memfd)) {
            Ok(memfd) => memfd,
            Err(e) => return e,
        };
        let guardian = match guardian::spawn(started_as, &self.runtime.args, &memfd, &signals::HANDLED) {
            Ok(guardian) => guardian,
            Err(e) => return io::Error::new(e.kind(), format!("cannot start the upgrade's guardian: {e}")),
        };
        let written = guardian.hand_over().and_then(|pipe| {
            state.guardian = Some(pipe);
            exec::write_into(&memfd, state)
        });
        let failure = match written {
            Err(e) => e,
            Ok(()) => {
                self.notifier.main_pid(guardian.pid());
                info!(
                    "upgrade: handing over connections={} listeners={} guardian={} to {}",
                    state.connections(),
                    state.in_force.len(),
                    guardian.pid(),
                    exe.display()
                );
                log::logger().flush();
                exec::exec(exe, started_as, &self.runtime.args, &memfd)
            }
        };
        if let Err(e) = guardian.release() {
            warn!("upgrade: {e}");
        }
        failure
    }

    /// What the state carries besides the workers' part; `fds`: the metrics endpoint's, the
    /// control socket's and the asking control client's descriptors.
    fn carried(&self, stop: bool, fds: [Option<RawFd>; 3], log_fd: Option<RawFd>) -> Carried<'_> {
        let [endpoint_fd, control_fd, reply_fd] = fds;
        Carried {
            config: &self.config,
            stop,
            foreground: self.runtime.foreground,
            pidfile: &self.config.daemon.pidfile,
            pidfile_overridden: self.runtime.pidfile_overridden,
            pidfile_fd: self.runtime.pidfile_fd,
            endpoint_fd,
            control_fd,
            reply_fd,
            sources: &self.sources,
            in_force: &self.slots,
            upstreams: &self.upstreams,
            metrics: &self.metrics,
            started_as: self.runtime.started_as.as_deref(),
            log_fd,
        }
    }

    /// The control socket a state carried, registered on this poll.
    pub(super) fn adopt_control(&self, fd: Option<RawFd>) -> io::Result<Option<control::Server>> {
        let (Some(fd), Some(config)) = (fd, self.config.control.as_ref()) else { return Ok(None) };
        let mut server = control::Server::adopt(fd, &config.socket)?;
        server.register(self.poll.registry(), CONTROL)?;
        Ok(Some(server))
    }

    /// An upgrade that did not happen: said, counted, the service manager and `asker` told.
    fn upgrade_refused(&mut self, reason: String, asker: Option<usize>) {
        error!("upgrade refused: {reason}");
        self.metrics.upgrade(UpgradeResult::Refused);
        if let (Some(client), Some(control)) = (asker, self.control.as_mut()) {
            control.answer(client, format!("error: upgrade refused: {reason}\n"));
        }
        self.last_change = format!("upgrade refused: {reason}");
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
    }

    /// The new image's first turn: the `upgraded` line (also to the control client that asked),
    /// the configuration file read again (as a reload), and a stop that was asked for during
    /// the upgrade. Or the guardian's, when the new image did not take over.
    pub(super) fn upgrade_done(
        &mut self,
        mut upgraded: Upgraded,
        remotes: &[Remote],
        log: &super::LogHandle,
    ) -> io::Result<()> {
        let pause_ms = monotonic_ns().saturating_sub(upgraded.frozen_at) as f64 / 1e6;
        if let Some(failure) = upgraded.failed.take() {
            self.upgrade_failed(&upgraded, &failure.describe(), pause_ms);
            if upgraded.stop {
                self.stop(remotes);
            }
            return Ok(());
        }
        let (binary, resolved) = match &upgraded.binary {
            Some((path, file)) => (path.display().to_string(), file.display().to_string()),
            None => ("unknown".to_owned(), "unknown".to_owned()),
        };
        // Tenths of a millisecond: what the pause can be told to.
        let pause_ms = (pause_ms * 10.0).round() / 10.0;
        let fields: [(&str, Value<'_>); 7] = [
            ("from", upgraded.from.as_str().into()),
            ("to", env!("CARGO_PKG_VERSION").into()),
            ("connections", upgraded.connections.into()),
            ("listeners", upgraded.listeners.into()),
            ("pause_ms", pause_ms.into()),
            ("binary", binary.as_str().into()),
            ("resolved", resolved.as_str().into()),
        ];
        logging::log_fields(Level::Info, "upgraded", &fields);
        let line = logging::text("upgraded", &fields);
        tell(upgraded.reply, &line);
        upgrade::close_retired(&upgraded.retired);
        match self.apply_reload(remotes, log) {
            Ok(changes) => info!("upgrade: reloaded {}: {changes}", self.config.path.display()),
            Err(e) => {
                error!("upgrade: the configuration file was not applied, keeping the one in force: {e}")
            }
        }
        self.metrics.upgrade(UpgradeResult::Success);
        self.last_change = line;
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
        if upgraded.stop {
            self.stop(remotes);
        }
        Ok(())
    }

    /// The guardian's first turn, the new image having failed: said (also to the control client
    /// that asked), counted, and this process made the service's main one.
    fn upgrade_failed(&mut self, upgraded: &Upgraded, reason: &str, pause_ms: f64) {
        let pid = std::process::id();
        error!(
            "upgrade failed: {reason}; the old code carries on as pid={pid} connections={} listeners={} \
             pause_ms={pause_ms:.1}",
            upgraded.connections, upgraded.listeners
        );
        tell(upgraded.reply, &format!("error: upgrade failed: {reason}"));
        upgrade::close_retired(&upgraded.retired);
        self.metrics.upgrade(UpgradeResult::Failed);
        self.last_change = format!("upgrade failed: {reason}");
        self.notifier.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS={}", self.status()));
    }
}

/// `path`, and the file it resolves to if that is another.
fn shown(path: &Path, file: &Path) -> String {
    match path == file {
        true => path.display().to_string(),
        false => format!("{} (resolved to {})", path.display(), file.display()),
    }
}
