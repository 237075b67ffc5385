//! `idlereaperctl top`: a live view of the daemon, refreshed every second from the control
//! socket's `show listeners --json` and `show conns --json`. Per listener: its open connections,
//! and its accepts, reaps (closes for `idle`, `max_lifetime` or `half_close_timeout`) and bytes
//! per second, from the difference of its counters between two refreshes. Below: the
//! connections soonest to be reaped, each with a bar of how much of its idle timeout is spent.
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
use idlereaper::report::{human_ms, ConnRow, ListenerRow};
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
const REAP_REASONS: [&str; 3] = ["idle", "max_lifetime", "half_close_timeout"];
/// How long the live view waits for a key or a sample before it looks for a signal.
const WAKE_SLICE: Duration = Duration::from_millis(50);

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Stop after this many refreshes (default: until q, Esc or Ctrl-C; off a terminal, until
    /// killed or the output is closed).
    #[arg(short = 'n', long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

pub fn run(socket: &Path, options: &Options) -> Result<(), Failure> {
    // A daemon out of reach is said before the terminal is touched.
    let first = Sample::take(socket)?;
    if io::stdout().is_terminal() {
        screen::live(socket, options.count, first)
    } else {
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
    /// Soonest to be reaped first, as the daemon sorts them.
    conns: Vec<ConnRow>,
}

impl Sample {
    fn take(socket: &Path) -> Result<Sample, Failure> {
        let listeners = parse(socket, &ctl::ask(socket, "show listeners --json")?)?;
        let at = Instant::now();
        let conns = parse(socket, &ctl::ask(socket, "show conns --json")?)?;
        Ok(Sample { at, listeners, conns })
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
            c.reap_in_ms,
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
        let current = Sample::take(socket)?;
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

// ---------------------------------------------------------------------------------------------
// On a terminal: the live view.

#[cfg(test)]
mod tests {
    use super::render::*;
    use super::screen::quits;
    use super::*;
    use ratatui::backend::TestBackend;

    fn listener(name: &str, accepted: u64, idle: u64, bytes: u64) -> ListenerRow {
        ListenerRow {
            name: name.into(),
            listen: "127.0.0.1:6000".into(),
            upstream: "127.0.0.1:7000".into(),
            open: 3,
            accepted,
            closed: vec![("client_closed".into(), 5), ("idle".into(), idle), ("killed".into(), 1)],
            refused: 0,
            idle_timeout_ms: 300_000,
            bytes_from_client: bytes,
            bytes_from_upstream: 2 * bytes,
        }
    }

    fn conn(id: u64, client: &str, idle_ms: u64) -> ConnRow {
        ConnRow {
            id,
            listener: "postgres-primary-eu-west".into(),
            client: client.into(),
            upstream: "127.0.0.1:5432".into(),
            state: "half_closed".into(),
            age_ms: 65_000,
            idle_ms,
            reap_in_ms: 300_000u64.saturating_sub(idle_ms),
            reap_reason: "idle".into(),
            idle_timeout_ms: 300_000,
            bytes_from_client: 10,
            bytes_from_upstream: 2048,
        }
    }

    fn sample(at: Instant, listeners: Vec<ListenerRow>, conns: Vec<ConnRow>) -> Sample {
        Sample { at, listeners, conns }
    }

    #[test]
    fn rates_are_counter_growth_per_second() {
        let t0 = Instant::now();
        let before = sample(t0, vec![listener("pg", 10, 2, 1000)], vec![]);
        let after = sample(
            t0 + Duration::from_secs(2),
            vec![listener("pg", 14, 6, 3000), listener("new", 4, 0, 0)],
            vec![],
        );
        let lines = listener_lines(Some(&before), &after);
        let pg = lines[0].rates.unwrap();
        assert_eq!((pg.accepts, pg.reaps, pg.from_client, pg.from_upstream), (2.0, 2.0, 1000.0, 2000.0));
        assert_eq!(lines[1].rates.unwrap().accepts, 2.0, "a new listener counts from zero");
        assert_eq!(listener_lines(None, &after)[0].rates, None);
        // A counter that went down was reset: it counts from zero.
        assert_eq!(growth(3, 10), 3);
    }

    #[test]
    fn plain_lines_are_key_value() {
        let t0 = Instant::now();
        let before = sample(t0, vec![listener("pg", 10, 2, 1000)], vec![]);
        let conns: Vec<ConnRow> = (1..=12).map(|i| conn(i, "127.0.0.1:40000", 150_000)).collect();
        let after = sample(t0 + Duration::from_secs(1), vec![listener("pg", 11, 3, 1100)], conns);
        let text = plain_refresh(&listener_lines(Some(&before), &after), &after.conns);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "listener=pg open=3 accepts_per_s=1.0 reaps_per_s=1.0 bytes_per_s=300.0");
        assert_eq!(
            lines[1],
            "conn id=1 listener=postgres-primary-eu-west client=127.0.0.1:40000 state=half_closed \
             reap_in_ms=150000 idle_pct=50"
        );
        assert_eq!(lines.len(), 1 + PLAIN_CONNS + 1);
        assert_eq!(lines[PLAIN_CONNS + 1], "");
        assert!(!text.contains('\x1b'));
    }

    /// The screen at `width`×`height` as lines of text.
    fn screen(view: &View, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| render(frame, view)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_owned()).collect::<String>())
            .collect()
    }

    fn view(listeners: usize, conns: usize) -> View {
        let t0 = Instant::now();
        let rows: Vec<ListenerRow> =
            (0..listeners).map(|i| listener(&format!("l{i}"), 10, 2, 1000)).collect();
        let more: Vec<ListenerRow> =
            (0..listeners).map(|i| listener(&format!("l{i}"), 20, 3, 5_000_000)).collect();
        let cs: Vec<ConnRow> = (0..conns)
            .map(|i| {
                conn(i as u64 + 1, "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:54321", (i as u64) * 20_000)
            })
            .collect();
        let before = sample(t0, rows, vec![]);
        let after = sample(t0 + Duration::from_secs(1), more, cs);
        View::new(Path::new("/run/idlereaper/control.sock"), Some(&before), &after)
    }

    #[test]
    fn the_view_fits_80_by_24() {
        let lines = screen(&view(2, 40), 80, 24);
        let text = lines.join("\n");
        assert!(lines[0].contains("idlereaperctl top") && lines[0].contains("q quits"), "{text}");
        assert!(
            lines[1].starts_with("LISTENER") && lines[1].trim_end().ends_with("FROM UPSTREAM B/s"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("l0 ") && lines[2].contains("10.0") && lines[2].contains("9.5M"),
            "{text}"
        );
        assert!(lines[4].contains("(18 of 40)"), "{text}");
        assert!(lines[5].contains("ID") && lines[5].contains("IDLE"), "{text}");
        // The client keeps its port; the bar ends in its percentage.
        assert!(lines[6].contains("…:54321") && lines[6].trim_end().ends_with("0%"), "{text}");
        assert!(lines[23].trim_end().ends_with("100%"), "{text}");
        assert!(lines[6].contains("postgres-primary-…"), "{text}");
    }

    #[test]
    fn many_listeners_take_at_most_half_and_small_screens_do_not_panic() {
        let lines = screen(&view(30, 5), 80, 24);
        let text = lines.join("\n");
        assert!(lines[11].starts_with("… 21 more"), "{text}");
        assert!(lines[12].starts_with("Connections"), "{text}");
        for (w, h) in [(40, 6), (60, 10), (79, 24), (200, 60), (30, 4), (1, 1)] {
            let lines = screen(&view(3, 50), w, h);
            assert_eq!(lines.len(), h as usize);
        }
        let empty = screen(&view(0, 0), 80, 24).join("\n");
        assert!(empty.contains("(no listeners)") && empty.contains("No open connections"), "{empty}");
    }

    #[test]
    fn quitting_keys() {
        for keys in [&b"q"[..], b"Q", b"\x03", b"\x1b", b"xq"] {
            assert!(quits(keys), "{keys:?}");
        }
        // Arrow keys, Alt+q, other keys.
        for keys in [&b"\x1b[A"[..], b"\x1bq", b"x", b" "] {
            assert!(!quits(keys), "{keys:?}");
        }
    }

    #[test]
    fn widths_and_cuts() {
        let conns = view(1, 40).conns;
        // Ids up to 40, a 24-character listener, IPv6 clients.
        assert_eq!(conn_widths(80, &conns), [2, 18, 21, 11, 7, 16]);
        assert_eq!(conn_widths(60, &conns), [2, 6, 20, 11, 7, 9]);
        assert_eq!(conn_widths(160, &conns), [2, 24, 46, 11, 7, 40]);
        let mut big = conns[..1].to_vec();
        big[0].id = u64::MAX;
        big[0].client = "127.0.0.1:5".into();
        assert_eq!(conn_widths(80, &big), [20, 16, 11, 11, 7, 10]);
        assert_eq!(fit_end("abcdef", 4), "abc…");
        assert_eq!(fit_start("/run/idlereaper/control.sock", 10), "…trol.sock");
        assert_eq!(fit_middle("[2001:db8::1]:5432", 12), "[2001:…:5432");
        assert_eq!(human_bytes(512.0), "512");
        assert_eq!(human_bytes(5.0 * 1024.0 * 1024.0), "5.0M");
        assert_eq!(human_rate(0.44), "0.4");
        assert_eq!(human_rate(1234.0), "1234");
        let t = Instant::now();
        assert_eq!(next_deadline(t, t), t + INTERVAL);
        assert_eq!(next_deadline(t, t + Duration::from_millis(2500)), t + Duration::from_secs(3));
    }
}
