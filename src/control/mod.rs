//! The control socket: a Unix stream socket on the supervisor's poll, where `idlereaperctl` (or
//! `socat`, `nc -U`) writes one request line and reads the answer, which ends with an empty
//! line, until the daemon closes. [`request`] reads the line; [`server`] accepts, checks who is
//! asking (`SO_PEERCRED`), with every client bounded like the metrics endpoint's, and hands
//! clients over across a live upgrade; [`client`] moves one client's bytes; the supervisor
//! answers (`supervisor/answer.rs`, asking the workers where it must).

mod client;
pub mod request;
pub mod server;

pub use server::{ClientId, Server};
