//! The daemon rebuilt from a live upgrade's state, without the start's checks and binds: in the
//! new image (`--handover MEMFD`: same process, pidfile still locked, privileges already
//! dropped), or in the upgrade's guardian when the new image did not take over
//! (`--handover MEMFD --handover-guard PIPE PID PIDFD`: the old code again, in the guardian's
//! process). See `handover::guardian` for the handshake between the two.
//!
//! Until the new image has told its guardian that it took over, a failure must leave the
//! guardian everything: no socket file is removed (the guardian serves it next), and no socket
//! is read or written (the loops start only once the guardian has exited).

use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use super::{invoked_as, serve, started_args, Ready};
use crate::control;
use crate::daemon::Pidfile;
use crate::error::Error;
use crate::handover::exec;
use crate::handover::guardian::{self, Failure, Handshake, Outcome};
use crate::handover::state::State;
use crate::logging::{self, Destination};
use crate::metrics::http::Endpoint;
use crate::metrics::Metrics;
use crate::notify::{self, Notifier};
use crate::os::net::UnixPath;
use crate::supervisor::{Runtime, Services, Supervisor, Upgraded};
use crate::upgrade;

/// The guardian of a live upgrade: waits for the word of the new image (pid `image`, process
/// descriptor `pidfd`) on `pipe`; exits once it took over, or carries on as the daemon from the
/// state in `memfd`.
pub(super) fn guard(memfd: RawFd, pipe: RawFd, image: u32, pidfd: RawFd) -> Result<(), Error> {
    // Executed as /proc/self/exe, the process is called "exe": it takes the name it had.
    if let Some(name) =
        std::env::args_os().next().as_deref().map(std::path::Path::new).and_then(|p| p.file_name())
    {
        let name: Vec<u8> = std::os::unix::ffi::OsStrExt::as_bytes(name).iter().copied().take(15).collect();
        if let Ok(name) = std::ffi::CString::new(name) {
            let _ = nix::sys::prctl::set_name(&name);
        }
    }
    match guardian::watch(pipe, image, pidfd) {
        Outcome::TakenOver { image } => {
            // The old image made this process systemd's main one for the exec: the new image
            // is again, before this one exits.
            Notifier::from_env().send(&format!("MAINPID={image}"));
            Ok(())
        }
        Outcome::Failed(failure) => {
            notify::take_over_from(failure.image);
            resume(memfd, Some(failure))
        }
    }
}

/// The daemon rebuilt from the state in memory file `fd`, and served: in the new image of an
/// upgrade (`failure`: `None`), which first tells the guardian the state names that it took
/// over, or in the guardian, after `failure`.
pub(super) fn resume(fd: RawFd, failure: Option<Failure>) -> Result<(), Error> {
    let state = exec::read(fd).map_err(|e| Error::io("upgrade: the state handed over", e))?;
    let handshake = match (&failure, state.guardian) {
        (None, Some(guardian)) => {
            Some(Handshake::adopt(guardian).map_err(|e| Error::io("upgrade: the guardian's pipe", e))?)
        }
        _ => None,
    };
    // A clone of every socket file's guard, so that none is removed before the guardian is
    // gone, whatever fails or panics while the daemon is rebuilt.
    let mut socket_files = Vec::new();
    let rebuilt = panic::catch_unwind(AssertUnwindSafe(|| rebuild(&state, failure, &mut socket_files)))
        .unwrap_or_else(|_| Err(Error::Message("upgrade: the new image panicked while taking over".into())));
    match rebuilt {
        Ok(mut ready) => {
            if let Some(handshake) = handshake {
                if let Err(e) = handshake.taken() {
                    ready.warnings.push(format!("upgrade: {e}"));
                }
            }
            drop(socket_files);
            serve(ready)
        }
        Err(e) => {
            if let Some(handshake) = handshake {
                handshake.failed(&e.to_string());
            }
            // The guardian serves these files on: they are not this image's to remove.
            std::mem::forget(socket_files);
            Err(e)
        }
    }
}

/// Everything [`resume`] builds before it serves, with no I/O on any socket; the guard of
/// every socket file is cloned into `socket_files`.
fn rebuild(
    state: &State,
    failure: Option<Failure>,
    socket_files: &mut Vec<UnixPath>,
) -> Result<Ready, Error> {
    let metrics = Metrics::resumed(state.workers.len(), &state.counters);
    let thawed = upgrade::thaw(state, &metrics, socket_files)?;
    let config = thawed.config.clone();
    let mut pidfile = Pidfile::adopt(&config.daemon.pidfile, state.pidfile_fd)?;
    if failure.is_some() {
        // The guardian is the daemon now: its pid goes in the pidfile (whose lock it held).
        pidfile.write_pid(std::process::id())?;
    }
    let endpoint = state.endpoint_fd.map(Endpoint::adopt).transpose().map_err(|e| Error::io("metrics", e))?;
    let control = match (state.control_fd, &config.control) {
        (Some(fd), Some(c)) => {
            let path = UnixPath::adopt(c.socket.clone());
            socket_files.push(path.clone());
            let frozen = crate::clock::instant_of(state.frozen_at);
            let server = control::Server::adopt_with(fd, path, &state.control_clients, frozen);
            Some(server.map_err(|e| Error::io("control socket", e))?)
        }
        _ => None,
    };
    let (destination, warning) = Destination::reopen(&config.daemon.log, state.foreground, state.log_fd)?;
    let log = logging::install(destination, config.daemon.log_level, config.daemon.log_format)?;
    let started_as = state.started_as.as_ref().map(PathBuf::from).or_else(invoked_as);
    let resolved = std::env::current_exe().ok();
    let runtime = Runtime {
        pidfile_overridden: state.pidfile_overridden,
        foreground: state.foreground,
        started_as: started_as.clone(),
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
        binary: started_as.zip(resolved),
        failed: failure,
    };
    let services = Services { endpoint, control };
    let supervisor = Supervisor::resumed(thawed, runtime, metrics, services, upgraded)
        .map_err(|e| Error::io("signal handlers", e))?;
    Ok(Ready { supervisor, log, pidfile, started: None, warnings: warning.into_iter().collect() })
}
