//! `idlereaperctl top`: a live view of the daemon, refreshed every second from the control
//! socket's `show listeners --json` and `show conns --json`. Per listener: its open connections,
//! and its accepts, reaps (closes for `idle`, `max_lifetime` or `half_close_timeout`) and bytes
//! per second, from the difference of its counters between two refreshes. Below: the
//! connections soonest to be reaped, each with a bar of how much of its idle timeout is spent;
//! it asks for no more of them than it can show (`--limit`), so a refresh costs the daemon a
//! screenful of rows however many connections are open.
//!
//! On a terminal it is a full-screen view (alternate screen, raw mode; q, Esc or Ctrl-C quits)
//! laid out for 80×24 and up, and the terminal is restored on every way out: a return, an error
//! (the daemon gone: exit 1), a panic, SIGTERM or SIGHUP, a terminal hung up. Otherwise it prints plain `key=value`
//! lines every second, for a program or a log, until killed or its output is closed.

mod render;
mod screen;

use std::fs::File;
use std::io::{self, IsTerminal, Read, Stdout, Write};
use std::mem::ManuallyDrop;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use idlereaper::ctl::{self, Failure};
use idlereaper::rows::{human_ms, ConnRow, ListenerRow};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};
use serde::de::DeserializeOwned;

/// Time between two refreshes.
const INTERVAL: Duration = Duration::from_secs(1);
/// How many connections a refresh prints when not on a terminal.
const PLAIN_CONNS: usize = 10;
/// The close reasons that count as reaps: the daemon's own timers.
const REAP_REASONS: [&str; 5] =
    ["idle", "idle_in_transaction", "subscriber_idle", "max_lifetime", "half_close_timeout"];
/// How long the live view waits for a key or a sample before it looks for a signal.
const WAKE_SLICE: Duration = Duration::from_millis(50);

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Stop after this many refreshes (default: until q, Esc or Ctrl-C; off a terminal, until
    /// killed or the output is closed).
    #[arg(short = 'n', long, value_name = "COUNT", value_parser = crate::count)]
    pub count: Option<u64>,
}

pub fn run(socket: &Path, options: &Options) -> Result<(), Failure> {
    // A daemon out of reach is said before the terminal is touched.
    if io::stdout().is_terminal() {
        let first = Sample::take(socket, screen::rows())?;
        screen::live(socket, options.count, first)
    } else {
        let first = Sample::take(socket, PLAIN_CONNS)?;
        plain(socket, options.count, first)
    }
}

// ---------------------------------------------------------------------------------------------
// What the daemon says, and the rates between two answers.

/// One refresh's answers.
struct Sample {
    /// When the listeners' counters were read.
    at: Instant,
    listeners: Vec<ListenerRow>,
    /// The `limit` soonest to be reaped, in that order, as the daemon sorts them.
    conns: Vec<ConnRow>,
}

impl Sample {
    fn take(socket: &Path, limit: usize) -> Result<Sample, Failure> {
        let listeners = parse(socket, &ctl::ask(socket, "show listeners --json")?)?;
        let at = Instant::now();
        let conns =
            parse(socket, &ctl::ask(socket, &format!("show conns --json --limit {}", limit.max(1)))?)?;
        Ok(Sample { at, listeners, conns })
    }

    /// How many connections are open: the listeners' count, or more if the daemon listed more
    /// (a listener a reload removed still has its connections, but no row of its own).
    fn open(&self) -> u64 {
        let listed = u64::try_from(self.conns.len()).unwrap_or(u64::MAX);
        self.listeners.iter().map(|l| l.open).sum::<u64>().max(listed)
    }
}

fn parse<T: DeserializeOwned>(socket: &Path, answer: &str) -> Result<T, Failure> {
    serde_json::from_str(answer).map_err(|e| {
        Failure::Unreachable(format!("the daemon at {} answered what top cannot read: {e}", socket.display()))
    })
}

/// Per second, since the previous refresh.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    accepts: f64,
    reaps: f64,
    from_client: f64,
    from_upstream: f64,
}

impl Rates {
    fn bytes(&self) -> f64 {
        self.from_client + self.from_upstream
    }
}

/// A listener as the view shows it; `rates` is `None` until there is a previous refresh.
#[derive(Debug, Clone, PartialEq)]
struct ListenerLine {
    name: String,
    open: u64,
    rates: Option<Rates>,
}

fn reaps(row: &ListenerRow) -> u64 {
    row.closed.iter().filter(|(reason, _)| REAP_REASONS.contains(&reason.as_str())).map(|(_, n)| n).sum()
}

/// How much a counter grew. One that went down was reset (a new daemon): it counts from zero.
fn growth(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// The listeners of `current`, with their rates since `previous`. A listener `previous` lacks
/// was added since (a reload): its counters started at zero.
fn listener_lines(previous: Option<&Sample>, current: &Sample) -> Vec<ListenerLine> {
    current
        .listeners
        .iter()
        .map(|row| {
            let rates = previous.map(|p| {
                let seconds = current.at.saturating_duration_since(p.at).as_secs_f64().max(0.001);
                let before = p.listeners.iter().find(|r| r.name == row.name);
                let per_s = |counter: fn(&ListenerRow) -> u64| {
                    growth(counter(row), before.map_or(0, counter)) as f64 / seconds
                };
                Rates {
                    accepts: per_s(|r| r.accepted),
                    reaps: per_s(reaps),
                    from_client: per_s(|r| r.bytes_from_client),
                    from_upstream: per_s(|r| r.bytes_from_upstream),
                }
            });
            ListenerLine { name: row.name.clone(), open: row.open, rates }
        })
        .collect()
}

/// How much of its idle timeout a connection has spent, 0 to 1.
fn idle_fraction(c: &ConnRow) -> f64 {
    if c.idle_timeout_ms == 0 {
        return 0.0;
    }
    (c.idle_ms as f64 / c.idle_timeout_ms as f64).clamp(0.0, 1.0)
}

fn idle_pct(c: &ConnRow) -> u64 {
    if c.idle_timeout_ms == 0 {
        return 0;
    }
    (u128::from(c.idle_ms) * 100 / u128::from(c.idle_timeout_ms)).min(100) as u64
}

/// The instant after `deadline` on the one-second grid, skipping the ones already past (a slow
/// answer does not make refreshes pile up).
fn next_deadline(deadline: Instant, now: Instant) -> Instant {
    let mut next = deadline + INTERVAL;
    if next <= now {
        let behind = now.duration_since(next).as_nanos() / INTERVAL.as_nanos() + 1;
        next += INTERVAL * u32::try_from(behind).unwrap_or(u32::MAX);
    }
    next
}

// ---------------------------------------------------------------------------------------------
// Not on a terminal: plain lines.

/// One refresh as plain lines: a line per listener, the [`PLAIN_CONNS`] connections soonest to
/// be reaped, a blank line.
fn plain_refresh(listeners: &[ListenerLine], conns: &[ConnRow]) -> String {
    use std::fmt::Write as _;
    let per_s = |rate: Option<f64>| rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
    let mut out = String::new();
    for l in listeners {
        let _ = writeln!(
            out,
            "listener={} open={} accepts_per_s={} reaps_per_s={} bytes_per_s={}",
            l.name,
            l.open,
            per_s(l.rates.map(|r| r.accepts)),
            per_s(l.rates.map(|r| r.reaps)),
            per_s(l.rates.map(|r| r.bytes())),
        );
    }
    for c in conns.iter().take(PLAIN_CONNS) {
        let _ = writeln!(
            out,
            "conn id={} listener={} client={} state={} reap_in_ms={} idle_pct={}",
            c.id,
            c.listener,
            c.client,
            c.state,
            c.reap_in_ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            idle_pct(c)
        );
    }
    out.push('\n');
    out
}

/// Prints a refresh every second, the first a second after `first` (so that every refresh has
/// its rates). A closed output (EPIPE) ends it quietly.
fn plain(socket: &Path, count: Option<u64>, first: Sample) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    let mut previous = first;
    let mut deadline = Instant::now() + INTERVAL;
    let mut done = 0;
    while count.is_none_or(|c| done < c) {
        thread::sleep(deadline.saturating_duration_since(Instant::now()));
        deadline = next_deadline(deadline, Instant::now());
        let current = Sample::take(socket, PLAIN_CONNS)?;
        let text = plain_refresh(&listener_lines(Some(&previous), &current), &current.conns);
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Failure::Unreachable(format!("cannot write to standard output: {e}"))),
        }
        previous = current;
        done += 1;
    }
    Ok(())
}

// The live view on a terminal is `screen.rs` (the terminal, keys, signals) and `render.rs` (one
// frame).

#[cfg(test)]
mod tests;
