//! The process becoming a daemon, four concepts in four files: the [`pidfile`] and its lock,
//! the [`fork`] with its readiness pipe and detached stdio, the [`privileges`] dropped to
//! `daemon.user`, and the [`descriptors`] table grown ahead. This folder and `os/sys.rs` are the
//! only code allowed `unsafe` (fork, `_exit`, `flock`, owning a descriptor `fcntl` made), each
//! block with its `SAFETY:` note.
//!
//! The order matters and is driven by `app`: lock the pidfile (so a second instance is refused
//! with the running pid, before it tries to bind), bind, daemonize, write our pid, drop
//! privileges, and only then report "ready" through the pipe.

mod descriptors;
mod fork;
mod pidfile;
mod privileges;

pub use descriptors::reserve_descriptors;
pub use fork::{daemonize, detach_stdio, Forked};
pub use pidfile::{make_pidfile_dir, Pidfile};
pub use privileges::Credentials;
