//! idlereaper: a TCP relay daemon that closes connections once they have been idle too long.
//!
//! Data flows one way: config file → validated [`config::Config`] → [`worker`] event loop →
//! connections ([`conn`]) → timing [`wheel`] → close. `main.rs` only maps [`app::run`]'s result to
//! an exit status. The library is public only where a program outside it needs it: `app`, `cli`
//! and `error` for `main.rs`, `wheel` for its benchmark, `net` for the load tool, [`file_keys`]
//! (the keys the configuration file accepts) for the test that holds the configuration
//! reference to them; everything else is the daemon's own (`pub(crate)`). The integration tests
//! drive the real binary.
//!
//! `unsafe` is denied here and allowed in two modules only: `daemon` (fork, `_exit`, `flock`)
//! and `sys` (`TCP_INFO`, `SIOCATMARK`), each block with a `// SAFETY:` comment.

#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "idlereaper runs on Linux only: it relies on epoll, splice(2), timerfd, TCP_INFO, SIOCATMARK and /proc"
);

pub(crate) mod activation;
pub(crate) mod alarm;
pub mod app;
pub(crate) mod buffer;
pub(crate) mod cancel;
pub mod cli;
pub(crate) mod clock;
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
pub mod net;
pub(crate) mod notify;
pub(crate) mod observe;
pub(crate) mod pipe;
pub(crate) mod proxy_protocol;
pub(crate) mod relay;
pub mod report;
pub(crate) mod signals;
pub(crate) mod slots;
pub(crate) mod stream;
pub(crate) mod supervisor;
pub(crate) mod sys;
pub(crate) mod upgrade;
pub(crate) mod upstream;
pub(crate) mod vocab;
pub mod wheel;
pub(crate) mod worker;

pub use config::{file_keys, TableKeys};
