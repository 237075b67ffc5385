//! The integration tests, one binary that links the crate once: each module is one area of the
//! daemon's behaviour, started as the real `idlereaper` binary (and `idlereaperctl`) and talked
//! to over loopback, Unix sockets or network namespaces the test makes; `common` is the harness
//! they share, its rules stated at its top. `cargo test` runs them all; `cargo test --test it
//! relay::` runs one area.
//!
//! The tests share this process and run on parallel threads, so a test changes nothing
//! process-wide: no environment variable, working directory, umask, resource limit or signal
//! disposition of its own (a child's limits are set between fork and exec, a network namespace
//! is entered by one thread). What is process-wide is in the harness and safe to share: the
//! counters behind fresh addresses and names, and the child subreaper
//! (`common::become_child_subreaper`).

mod common;

mod abuse;
mod architecture;
mod cli;
mod config_errors;
mod config_reference;
mod control;
mod control_answers;
mod control_upgrade;
mod ctl_exits;
mod ctl_show;
mod ctl_top;
mod ctl_upgrade_pid;
mod daemon;
mod differential;
mod docs;
mod docs_agreement;
mod docs_reference;
mod faults;
mod floods;
mod integrity;
mod logs;
mod map;
mod metrics;
mod monitoring;
mod notify;
mod protocol_postgres;
mod protocol_redis;
mod proxy_protocol;
mod relay;
mod reload;
mod security;
mod services_postgres;
mod services_redis;
mod signals_load;
mod slow_readers;
mod socket_activation;
mod stalls;
mod timeouts;
mod upgrade;
mod upgrade_config;
mod upgrade_deadlines;
mod upgrade_failures;
mod upgrade_refusals;
mod upstream_health;
mod upstreams;
mod vanished_peers;
