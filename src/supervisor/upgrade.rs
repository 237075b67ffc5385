//! A live upgrade, the supervisor's part (SIGUSR2, `idlereaperctl upgrade`): resolve the path
//! the daemon was started as, ask that binary, answer the control requests that came meanwhile,
//! freeze the workers, start the guardian, write the state and exec; or, if the exec fails,
//! carry on from the same state. And the first turn of the new image
//! ([`Supervisor::upgrade_done`]), or of the guardian carrying on after the new image did not
//! take over. Every control client that asked for the upgrade, before it or during it, is told
//! its result by whichever image carries on; the others are answered before the freeze, or
//! handed over with what they sent or are still to read.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use log::kv::Value;
use log::{error, info, warn, Level};

use super::{broadcast, watch_list, Supervisor, Threads, Turn, Upgraded, CONTROL, METRICS};
use crate::clock::{self, monotonic_ns};
use crate::control;
use crate::handover::state::{ControlClientState, State};
use crate::handover::{exec, guardian};
use crate::logging;
use crate::metrics::http::Endpoint;
use crate::metrics::UpgradeResult;
use crate::signals::{self, Signal};
use crate::upgrade::{self, Carried};
use crate::worker::{Command, Frozen, Remote};

/// Writes `line` (and the end of the answer) to the control client a version 1 state carried
/// as the one that asked for the upgrade, and closes it.
fn tell(fd: Option<RawFd>, line: &str) {
    if let Some(fd) = fd {
        if let Ok(fd) = crate::os::sys::adopt(fd) {
            let mut client = std::os::unix::net::UnixStream::from(fd);
            let mut answer = format!("{line}\n").into_bytes();
            answer.extend_from_slice(control::server::END);
            let _ = client.write_all(&answer);
        }
    }
}

impl Supervisor {
    /// The loop's last step in a turn: an upgrade if a SIGUSR2 came (`signalled`) or a control
    /// client asked for one — one upgrade for all of them. Not while stopping.
    pub(super) fn upgrade_if_asked(&mut self, signalled: bool, turn: &mut Turn<'_>) -> io::Result<()> {
        let asked = self.control.as_ref().is_some_and(control::Server::upgrade_asked);
        if !(signalled || asked) {
            return Ok(());
        }
        if self.stopping {
            if signalled {
                warn!("SIGUSR2 while stopping: ignored");
            }
            if let Some(control) = self.control.as_mut() {
                control.tell_upgrade("error: the daemon is stopping\n");
            }
            return Ok(());
        }
        self.upgrading = true;
        let upgraded = self.upgrade(turn);
        self.upgrading = false;
        upgraded
    }

    /// A live upgrade: check the new binary, freeze the workers, exec it with the state. Returns
    /// only if the upgrade was refused (the running code carries on, with every connection),
    /// having told the control clients that asked for it why; `Err` if, after a failed exec,
    /// the workers could not be rebuilt.
    fn upgrade(&mut self, turn: &mut Turn<'_>) -> io::Result<()> {
        self.notifier.reloading();
        let (started_as, exe) = match self.binary() {
            Ok(paths) => paths,
            Err(reason) => {
                self.upgrade_refused(reason);
                return Ok(());
            }
        };
        info!("upgrade: checking {}", shown(&started_as, &exe));
        let mut args = vec![OsStr::new("--config"), self.config.path.as_os_str()];
        if self.runtime.pidfile_overridden {
            args.extend([OsStr::new("--pidfile"), self.config.daemon.pidfile.as_os_str()]);
        }
        let sample = upgrade::sample_of(
            self.carried(false, [None; 2], Vec::new(), turn.log.descriptor()),
            turn.threads.remotes.len(),
        );
        if let Err(reason) = exec::preflight(&exe, &args, &sample) {
            self.upgrade_refused(reason);
            return Ok(());
        }
        // From here on a signal waits for the image that will handle it; those that came
        // before are answered now.
        signals::block();
        let stop = self.answer_pending(turn.log);
        // Control requests that came during the checks are answered now (an `upgrade` joins
        // this one), and every `show conns` in progress is completed: the workers' rows do not
        // cross the exec. Clients still in the backlog are for the image that carries on.
        if let Some(control) = self.control.as_mut() {
            for (client, request) in control.take_in() {
                self.answer(client, request, &turn.threads.remotes, turn.log);
            }
        }
        self.complete_listings();
        let frozen_at = monotonic_ns();
        let at = clock::instant_of(frozen_at);
        let (reply, replies) = mpsc::channel::<Frozen>();
        broadcast(&turn.threads.remotes, || Command::Freeze { at: frozen_at, reply: reply.clone() });
        drop(reply);
        let mut frozen: Vec<Frozen> = replies.iter().collect();
        frozen.sort_by_key(|f| f.worker);
        turn.threads.join(turn.finished);
        let registry = self.poll.registry();
        let endpoint_fd = self.endpoint.take().map(|e| e.freeze(registry));
        let (control_fd, control_clients) = match self.control.take() {
            Some(control) => {
                let (fd, clients) = control.freeze(registry, at);
                (Some(fd), clients)
            }
            None => (None, Vec::new()),
        };
        let carried = self.carried(stop, [endpoint_fd, control_fd], control_clients, turn.log.descriptor());
        let mut state = upgrade::state_of(carried, frozen_at, frozen);
        let failure = self.hand_over(&mut state, &exe, &started_as);
        // Still here: the exec failed. The old code carries on from the state.
        for fd in [Some(state.pidfile_fd), state.log_fd].into_iter().flatten() {
            let _ = crate::os::sys::close_on_exec(fd);
        }
        let thawed = upgrade::thaw(&state, &self.metrics, &mut Vec::new())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (config, sources, upstreams) = (thawed.config, thawed.sources, thawed.upstreams);
        (self.config, self.sources, self.listener_indices) = (config, sources, thawed.in_force);
        self.watched.set(watch_list(&self.config, &upstreams));
        self.upstreams = upstreams;
        *turn.threads = Threads::spawn(thawed.workers, &self.done, turn.finished_tx)?;
        if let Some(fd) = state.endpoint_fd {
            let mut endpoint = Endpoint::adopt(fd)?;
            endpoint.register(self.poll.registry(), METRICS)?;
            self.endpoint = Some(endpoint);
        }
        self.control = self.adopt_control(state.control_fd, &state.control_clients, at)?;
        upgrade::close_retired(&state.retired);
        signals::unblock();
        self.upgrade_refused(format!("cannot execute {}: {failure}", exe.display()));
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

    /// What the state carries besides the workers' part; `fds`: the metrics endpoint's and the
    /// control socket's descriptors, with the control socket's clients.
    fn carried(
        &self,
        stop: bool,
        [endpoint_fd, control_fd]: [Option<RawFd>; 2],
        control_clients: Vec<ControlClientState>,
        log_fd: Option<RawFd>,
    ) -> Carried<'_> {
        Carried {
            config: &self.config,
            stop,
            foreground: self.runtime.foreground,
            pidfile: &self.config.daemon.pidfile,
            pidfile_overridden: self.runtime.pidfile_overridden,
            pidfile_fd: self.runtime.pidfile_fd,
            endpoint_fd,
            control_fd,
            // The clients that asked for the upgrade are among the control clients.
            reply_fd: None,
            control_clients,
            sources: &self.sources,
            in_force: &self.listener_indices,
            upstreams: &self.upstreams,
            metrics: &self.metrics,
            started_as: self.runtime.started_as.as_deref(),
            log_fd,
        }
    }

    /// The control socket a state carried, with its clients (their deadlines counted from
    /// `frozen`), registered on this poll.
    pub(super) fn adopt_control(
        &self,
        fd: Option<RawFd>,
        clients: &[ControlClientState],
        frozen: Instant,
    ) -> io::Result<Option<control::Server>> {
        let (Some(fd), Some(config)) = (fd, self.config.control.as_ref()) else { return Ok(None) };
        let mut server = control::Server::adopt(fd, &config.socket, clients, frozen)?;
        server.register(self.poll.registry(), CONTROL)?;
        Ok(Some(server))
    }

    /// An upgrade that did not happen: said, counted, the service manager and the control
    /// clients that asked for it told.
    fn upgrade_refused(&mut self, reason: String) {
        error!("upgrade refused: {reason}");
        self.metrics.upgrade(UpgradeResult::Refused);
        if let Some(control) = self.control.as_mut() {
            control.tell_upgrade(&format!("error: upgrade refused: {reason}\n"));
        }
        self.history.upgraded("refused", &reason);
        self.last_change = format!("upgrade refused: {reason}");
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
    }

    /// The new image's first turn: the `upgraded` line (also to the control clients that asked),
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
        if let Some(control) = self.control.as_mut() {
            control.tell_upgrade(&format!("{line}\n"));
        }
        upgrade::close_retired(&upgraded.retired);
        match self.apply_reload(remotes, log) {
            Ok(reloaded) => info!("upgrade: reloaded {}: {}", self.config.path.display(), reloaded.summary),
            Err(e) => {
                error!("upgrade: the configuration file was not applied, keeping the one in force: {e}")
            }
        }
        self.metrics.upgrade(UpgradeResult::Success);
        self.history.upgraded("success", &line);
        self.last_change = line;
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
        if upgraded.stop {
            self.stop(remotes);
        }
        Ok(())
    }

    /// The guardian's first turn, the new image having failed: said (also to the control clients
    /// that asked, handed over to it with the rest), counted, and this process made the
    /// service's main one.
    fn upgrade_failed(&mut self, upgraded: &Upgraded, reason: &str, pause_ms: f64) {
        let pid = std::process::id();
        error!(
            "upgrade failed: {reason}; the old code carries on as pid={pid} connections={} listeners={} \
             pause_ms={pause_ms:.1}",
            upgraded.connections, upgraded.listeners
        );
        let answer = format!("error: upgrade failed: {reason}");
        tell(upgraded.reply, &answer);
        if let Some(control) = self.control.as_mut() {
            control.tell_upgrade(&format!("{answer}\n"));
        }
        upgrade::close_retired(&upgraded.retired);
        self.metrics.upgrade(UpgradeResult::Failed);
        self.history.upgraded("failed", reason);
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
