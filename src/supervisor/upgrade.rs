//! A live upgrade, the supervisor's part (SIGUSR2, `idlereaperctl upgrade`): ask the new binary,
//! answer the control requests that came meanwhile, freeze the workers, write the state and
//! exec; or, if the exec fails, carry on from the same state. And the new image's first turn
//! ([`Supervisor::upgrade_done`]). Every control client that asked for the upgrade, before it
//! or during it, is told its result; the others are answered before the freeze, or handed over
//! with what they sent or are still to read.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::mpsc;
use std::time::Instant;

use log::{error, info, warn};

use super::{broadcast, watch_list, Supervisor, Threads, Turn, Upgraded, CONTROL, METRICS};
use crate::clock::monotonic_ns;
use crate::control;
use crate::handover::exec;
use crate::handover::state::ControlClientState;
use crate::metrics::http::Endpoint;
use crate::signals::{self, Signal};
use crate::upgrade::{self, Carried};
use crate::worker::{Command, Frozen, Remote};

/// Writes `line` (and the end of the answer) to the control client a version 1 state carried
/// as the one that asked for the upgrade, and closes it.
fn tell(fd: Option<RawFd>, line: &str) {
    if let Some(fd) = fd {
        if let Ok(fd) = crate::sys::adopt(fd) {
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
        let Some(exe) = self.runtime.exe.clone() else {
            self.upgrade_refused("the path of the running binary is not known".to_owned());
            return Ok(());
        };
        info!("upgrade: checking {}", exe.display());
        let mut args = vec![OsStr::new("--config"), self.config.path.as_os_str()];
        if self.runtime.pidfile_overridden {
            args.extend([OsStr::new("--pidfile"), self.config.daemon.pidfile.as_os_str()]);
        }
        let sample =
            upgrade::sample_of(self.carried(false, None, None, Vec::new()), turn.threads.remotes.len());
        if let Err(reason) = exec::preflight(&exe, &args, &sample) {
            self.upgrade_refused(reason);
            return Ok(());
        }
        // From here on a signal waits for the image that will handle it; those that came
        // before are answered now.
        signals::block();
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
                    turn.log.reopen();
                    info!("stats {}", self.metrics.stats_line());
                }
            }
        }
        // Control requests that came during the checks are answered now (an `upgrade` joins
        // this one), and every `show conns` in progress is completed: the workers' rows do not
        // cross the exec. Clients still in the backlog are the new image's.
        if let Some(control) = self.control.as_mut() {
            for (client, request) in control.take_in() {
                self.answer(client, request, &turn.threads.remotes, turn.log);
            }
        }
        self.complete_listings();
        let (at, frozen_at) = (Instant::now(), monotonic_ns());
        let (reply, replies) = mpsc::channel::<Frozen>();
        broadcast(&turn.threads.remotes, || Command::Freeze { at, reply: reply.clone() });
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
        let carried = self.carried(stop, endpoint_fd, control_fd, control_clients);
        let state = upgrade::state_of(carried, frozen_at, frozen);
        let failure =
            match exec::write(&state).and_then(|memfd| exec::inherit(&state, &memfd).map(|()| memfd)) {
                Ok(memfd) => {
                    info!(
                        "upgrade: handing over connections={} listeners={} to {}",
                        state.connections(),
                        state.in_force.len(),
                        exe.display()
                    );
                    log::logger().flush();
                    exec::exec(&exe, &self.runtime.args, &memfd)
                }
                Err(e) => e,
            };
        // Still here: the exec failed. The old code carries on from the state.
        let thawed = upgrade::thaw(&state, &self.metrics).map_err(|e| io::Error::other(e.to_string()))?;
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
        self.control = self.adopt_control(state.control_fd, &state.control_clients, at)?;
        upgrade::close_retired(&state.retired);
        signals::unblock();
        self.upgrade_refused(format!("cannot execute {}: {failure}", exe.display()));
        if stop {
            self.stop(&turn.threads.remotes);
        }
        Ok(())
    }

    /// What the state carries besides the workers' part.
    fn carried(
        &self,
        stop: bool,
        endpoint_fd: Option<RawFd>,
        control_fd: Option<RawFd>,
        control_clients: Vec<ControlClientState>,
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
            in_force: &self.slots,
            upstreams: &self.upstreams,
            metrics: &self.metrics,
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
        self.metrics.upgrade(false);
        if let Some(control) = self.control.as_mut() {
            control.tell_upgrade(&format!("error: upgrade refused: {reason}\n"));
        }
        self.last_change = format!("upgrade refused: {reason}");
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
    }

    /// The new image's first turn: the `upgraded` line (also to the control clients that asked),
    /// the configuration file read again (as a reload), and a stop that was asked for during
    /// the upgrade.
    pub(super) fn upgrade_done(
        &mut self,
        upgraded: Upgraded,
        remotes: &[Remote],
        log: &super::LogHandle,
    ) -> io::Result<()> {
        let pause_ms = monotonic_ns().saturating_sub(upgraded.frozen_at) as f64 / 1e6;
        let line = format!(
            "upgraded from={} to={} connections={} listeners={} pause_ms={pause_ms:.1}",
            upgraded.from,
            env!("CARGO_PKG_VERSION"),
            upgraded.connections,
            upgraded.listeners
        );
        info!("{line}");
        tell(upgraded.reply, &line);
        if let Some(control) = self.control.as_mut() {
            control.tell_upgrade(&format!("{line}\n"));
        }
        upgrade::close_retired(&upgraded.retired);
        match self.apply_reload(remotes, log) {
            Ok(changes) => info!("upgrade: reloaded {}: {changes}", self.config.path.display()),
            Err(e) => {
                error!("upgrade: the configuration file was not applied, keeping the one in force: {e}")
            }
        }
        self.metrics.upgrade(true);
        self.last_change = line;
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
        if upgraded.stop {
            self.stop(remotes);
        }
        Ok(())
    }
}
