//! A live upgrade, the supervisor's part (SIGUSR2, `idlereaperctl upgrade`): ask the new binary,
//! freeze the workers, write the state and exec; or, if the exec fails, carry on from the same
//! state. And the new image's first turn ([`Supervisor::upgrade_done`]).

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::mpsc;

use log::{error, info, warn};

use super::{broadcast, watch_list, Supervisor, Threads, Turn, Upgraded, CONTROL, METRICS};
use crate::clock::monotonic_ns;
use crate::control;
use crate::handover::exec;
use crate::metrics::http::Endpoint;
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
        let Some(exe) = self.runtime.exe.clone() else {
            self.upgrade_refused("the path of the running binary is not known".to_owned(), asker);
            return Ok(());
        };
        info!("upgrade: checking {}", exe.display());
        let mut args = vec![OsStr::new("--config"), self.config.path.as_os_str()];
        if self.runtime.pidfile_overridden {
            args.extend([OsStr::new("--pidfile"), self.config.daemon.pidfile.as_os_str()]);
        }
        let sample = upgrade::sample_of(self.carried(false, None, None, None), turn.threads.remotes.len());
        if let Err(reason) = exec::preflight(&exe, &args, &sample) {
            self.upgrade_refused(reason, asker);
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
        let carried = self.carried(stop, endpoint_fd, control_fd, reply_fd);
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

    /// What the state carries besides the workers' part.
    fn carried(
        &self,
        stop: bool,
        endpoint_fd: Option<RawFd>,
        control_fd: Option<RawFd>,
        reply_fd: Option<RawFd>,
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
            reply_fd,
            sources: &self.sources,
            in_force: &self.slots,
            upstreams: &self.upstreams,
            metrics: &self.metrics,
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
        self.metrics.upgrade(false);
        if let (Some(client), Some(control)) = (asker, self.control.as_mut()) {
            control.answer(client, format!("error: upgrade refused: {reason}\n"));
        }
        self.last_change = format!("upgrade refused: {reason}");
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.status()));
    }

    /// The new image's first turn: the `upgraded` line (also to the control client that asked),
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
