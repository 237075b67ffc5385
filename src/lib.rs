//! idlereaper: a TCP relay daemon that closes connections once they have been idle too long.
//!
//! Data flows one way: config file → validated `config::Config` → `worker` event loop →
//! connections (`conn`) → timing [`wheel`] → close. `main.rs` only maps [`app::run`]'s result to
//! an exit status. The library is public only where a program outside it needs it: `app`, `cli`
//! and `error` for `main.rs`, `ctl` and `rows` for `idlereaperctl`, `wheel` for its benchmark,
//! `os` (its `net`) for the benchmarks' load tool, [`file_keys`] (the keys the configuration
//! file accepts) and [`RESTART_ONLY`] (the settings a reload does not apply) for the tests that
//! hold the configuration reference to them; everything else is the daemon's own
//! (`pub(crate)`). The integration tests drive the real binary.
//!
//! A module with submodules is a folder with its `mod.rs`. Unit tests sit beside what they test:
//! at the bottom of its file, or in a file of the same folder named `*tests.rs`.
//!
//! `unsafe` is denied here and allowed in two modules only: `daemon` (fork, `_exit`, `flock`,
//! owning a descriptor `fcntl` made) and `os::sys` (`TCP_INFO`, `SIOCATMARK`, the descriptors
//! and process descriptors of a live upgrade), each block with a `// SAFETY:` comment.

#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "idlereaper runs on Linux only: it relies on epoll, splice(2), timerfd, TCP_INFO, SIOCATMARK and /proc"
);

pub(crate) mod activation;
pub(crate) mod alarm;
pub mod app;
pub(crate) mod bounded;
pub(crate) mod buffer;
pub(crate) mod cancel;
pub mod cli;
pub(crate) mod client_table;
pub(crate) mod clock;
pub(crate) mod close_reason;
pub(crate) mod config;
pub(crate) mod conn;
pub(crate) mod control;
pub mod ctl;
pub(crate) mod daemon;
pub mod error;
pub(crate) mod handover;
pub(crate) mod listener;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod observe;
pub mod os;
pub(crate) mod proxy_protocol;
pub(crate) mod relay;
pub mod rows;
pub(crate) mod side;
pub(crate) mod signals;
pub(crate) mod supervisor;
pub(crate) mod upgrade;
pub(crate) mod upstream;
pub mod wheel;
pub(crate) mod worker;

pub use config::{file_keys, TableKeys, RESTART_ONLY};
