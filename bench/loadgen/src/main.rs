//! `loadgen`: the load tool for idlereaper's benchmarks and smoke runs. It is both the upstream
//! (`echo`, `discard`) and the clients (`reap`, `hold`, `pingpong`, `churn`; `bigvalue` against
//! Redis), so that idlereaper,
//! HAProxy and nginx are measured in front of the same server with the same clients. It talks only
//! to the addresses it is given; use loopback. Every scenario is bounded in count and time.
//! Results are printed as one `key=value` line for scripts to parse.

mod bigvalue;
mod clients;
mod stats;
mod upstream;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadgen", about = "Load tool for idlereaper benchmarks (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve as the upstream: echo every byte back.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Serve as the upstream: read and discard.
    Discard {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Open N connections, send one byte on each, and measure when each is closed relative to
    /// its last byte plus the idle timeout.
    Reap {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        conns: usize,
        /// The relay's idle timeout.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Write every lateness sample (µs) to this file, one per line.
        #[arg(long)]
        samples: Option<std::path::PathBuf>,
        /// The upstream echoes: count lateness from the kernel's receive time of the echo (the
        /// relay's last activity) rather than from the send, and report the echo's delay.
        #[arg(long)]
        echo: bool,
    },
    /// Open N connections through an echo upstream, prove each relays a byte, hold them idle, and
    /// measure the relay's resident memory per connection and its CPU time while idle.
    Hold {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Pid of the relay to measure.
        #[arg(long)]
        pid: u32,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        hold: Duration,
    },
    /// 64-byte round trips over one connection through an echo upstream.
    Pingpong {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 20000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// A large value SET and GET back, through a relay in front of Redis: MB/s each way.
    Bigvalue {
        #[arg(long)]
        connect: SocketAddr,
        /// Bytes in the value.
        #[arg(long, default_value_t = 100_000_000)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Short connections (connect, request, response, close) from several threads.
    Churn {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 4)]
        threads: usize,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// At most this many connections per second in all (0: as fast as they go).
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Echo { listen } => upstream::serve(listen, upstream::Mode::Echo),
        Command::Discard { listen } => upstream::serve(listen, upstream::Mode::Discard),
        Command::Reap { connect, conns, timeout, samples, echo } => {
            clients::reap(connect, conns, timeout, samples.as_deref(), echo)
        }
        Command::Hold { connect, conns, pid, hold } => clients::hold(connect, conns, pid, hold),
        Command::Pingpong { connect, count, size } => clients::pingpong(connect, count, size),
        Command::Churn { connect, threads, duration, rate } => {
            clients::churn(connect, threads, duration, rate)
        }
        Command::Bigvalue { connect, size, rounds } => bigvalue::bigvalue(connect, size, rounds),
    };
    match result {
        Ok(line) => {
            if !line.is_empty() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
