//! idlereaper: a TCP relay daemon that closes connections once they have been idle too long.
//!
//! Data flows one way: config file → validated [`config::Config`] → [`worker`] event loop →
//! connections ([`conn`]) → timing [`wheel`] → close. `main.rs` only maps [`app::run`]'s result to
//! an exit status; everything else lives here so that tests can drive it without a process.

pub mod alarm;
pub mod app;
pub mod buffer;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pipe;
pub mod proxy_protocol;
pub mod relay;
pub mod signals;
pub mod supervisor;
pub mod sys;
pub mod vocab;
pub mod wheel;
pub mod worker;
