//! The control socket: a Unix stream socket on the supervisor's poll, where `idlereaperctl` (or
//! `socat`, `nc -U`) writes one request line and reads the answer until the daemon closes.
//! [`request`] reads the line; [`server`] accepts, checks who is asking (`SO_PEERCRED`) and
//! moves the bytes, with every client bounded like the metrics endpoint's; the supervisor
//! answers (`supervisor.rs`, asking the workers where it must).

pub mod request;
pub mod server;

pub use server::Server;
