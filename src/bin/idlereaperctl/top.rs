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
        live(socket, options.count, first)
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

/// What one screen shows.
struct View {
    socket: String,
    listeners: Vec<ListenerLine>,
    conns: Vec<ConnRow>,
}

impl View {
    fn new(socket: &Path, previous: Option<&Sample>, current: &Sample) -> View {
        View {
            socket: socket.display().to_string(),
            listeners: listener_lines(previous, current),
            conns: current.conns.clone(),
        }
    }
}

fn terminal_failure(e: io::Error) -> Failure {
    Failure::Unreachable(format!("the terminal: {e}"))
}

/// The full-screen view until q, Esc or Ctrl-C, `count` refreshes, the end of the terminal's
/// input (hung up), a signal, or an error. The terminal is restored before this returns (or the
/// process dies of the signal it got).
fn live(socket: &Path, count: Option<u64>, first: Sample) -> Result<(), Failure> {
    let signals = Signals::watch().map_err(terminal_failure)?;
    let outcome = match Screen::enter() {
        Ok(mut screen) => screen_loop(&mut screen, &signals, socket, count, first),
        Err(e) => Err(terminal_failure(e)),
    };
    // The screen is dropped here: the terminal is as it was.
    if let Some(signal) = signals.received() {
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
    outcome
}

/// What the view waits for, from the keyboard's thread and the sampler's.
enum Input {
    /// q, Q, Esc or Ctrl-C.
    Quit,
    /// The terminal's input ended or failed: it was hung up.
    Ended,
    Sample(Result<Sample, Failure>),
}

fn screen_loop(
    screen: &mut Screen,
    signals: &Signals,
    socket: &Path,
    count: Option<u64>,
    first: Sample,
) -> Result<(), Failure> {
    let (tx, inputs) = mpsc::channel();
    keyboard(tx.clone()).map_err(terminal_failure)?;
    sampler(socket.to_owned(), first.at, tx);
    let mut view = View::new(socket, None, &first);
    let mut previous = first;
    let mut refreshes = 0;
    if !screen.draw(&view)? {
        return Ok(());
    }
    loop {
        if signals.received().is_some() {
            return Ok(());
        }
        if signals.resized.swap(false, Ordering::SeqCst) && !screen.draw(&view)? {
            return Ok(());
        }
        match inputs.recv_timeout(WAKE_SLICE) {
            Ok(Input::Quit | Input::Ended) => return Ok(()),
            Ok(Input::Sample(Ok(current))) => {
                view = View::new(socket, Some(&previous), &current);
                previous = current;
                refreshes += 1;
                if !screen.draw(&view)? || count.is_some_and(|c| refreshes >= c) {
                    return Ok(());
                }
            }
            Ok(Input::Sample(Err(failure))) => return Err(failure),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Failure::Unreachable("top: the sampler and the keyboard stopped".into()))
            }
        }
    }
}

/// Reads the terminal (standard input if it is one, as raw mode does, or /dev/tty) in a thread
/// of its own, and sends [`Input::Quit`] for a quitting key, or [`Input::Ended`] once its input
/// ends. Crossterm's event reader is not used: it spins without end on a hung-up terminal.
fn keyboard(tx: Sender<Input>) -> io::Result<()> {
    let mut tty = if io::stdin().is_terminal() {
        File::from(io::stdin().as_fd().try_clone_to_owned()?)
    } else {
        File::open("/dev/tty")?
    };
    thread::spawn(move || {
        let mut bytes = [0u8; 64];
        let input = loop {
            match tty.read(&mut bytes) {
                Ok(0) => break Input::Ended,
                Ok(n) if quits(&bytes[..n]) => break Input::Quit,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Input::Ended,
            }
        };
        let _ = tx.send(input);
    });
    Ok(())
}

/// Whether what one read of the raw terminal brought is a quitting key: q, Q, Ctrl-C, or Esc
/// alone. An escape sequence (an arrow key, Alt+q) comes whole in one read, and does not quit.
fn quits(bytes: &[u8]) -> bool {
    match bytes {
        [0x1b] => true,
        [0x1b, ..] => false,
        _ => bytes.iter().any(|b| matches!(b, b'q' | b'Q' | 0x03)),
    }
}

/// Samples the daemon every second after `start`, in a thread of its own so that a slow answer
/// never delays a key. Stops after the first failure, or when the view is gone.
fn sampler(socket: PathBuf, start: Instant, tx: Sender<Input>) {
    thread::spawn(move || {
        let mut deadline = start + INTERVAL;
        loop {
            thread::sleep(deadline.saturating_duration_since(Instant::now()));
            deadline = next_deadline(deadline, Instant::now());
            let sample = Sample::take(&socket);
            let failed = sample.is_err();
            if tx.send(Input::Sample(sample)).is_err() || failed {
                return;
            }
        }
    });
}

/// SIGTERM, SIGHUP, SIGINT and SIGQUIT noted instead of killing, so that the terminal is
/// restored first; SIGWINCH noted for a redraw at the new size.
struct Signals {
    received: Arc<AtomicUsize>,
    resized: Arc<AtomicBool>,
}

impl Signals {
    fn watch() -> io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGWINCH};
        let received = Arc::new(AtomicUsize::new(0));
        for signal in [SIGTERM, SIGHUP, SIGINT, SIGQUIT] {
            signal_hook::flag::register_usize(signal, Arc::clone(&received), signal as usize)?;
        }
        let resized = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(SIGWINCH, Arc::clone(&resized))?;
        Ok(Signals { received, resized })
    }

    fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            signal => i32::try_from(signal).ok(),
        }
    }
}

/// Whether the terminal is in the view's state (raw mode, alternate screen) and needs restoring.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back: leaves the alternate screen, shows the cursor, ends raw mode. Once,
/// however many of the guard, the panic hook and the error paths call it.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
}

/// The terminal in the view's state, restored when dropped.
struct Screen {
    /// Never dropped: its `Drop` shows the cursor (as [`restore`] does) and reports a failure
    /// with `eprintln!`, which panics when standard error is a terminal that was hung up.
    terminal: ManuallyDrop<Terminal<CrosstermBackend<Stdout>>>,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // The panic message goes to the restored terminal, not to the alternate screen.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        ACTIVE.store(true, Ordering::SeqCst);
        let setup = || -> io::Result<Screen> {
            terminal::enable_raw_mode()?;
            // Cleared here rather than by `Terminal::clear`, which asks the terminal where its
            // cursor is and gives up after 2 s without an answer (a slow ssh link).
            let clear = terminal::Clear(terminal::ClearType::All);
            execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide, clear)?;
            let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            Ok(Screen { terminal: ManuallyDrop::new(terminal) })
        };
        setup().inspect_err(|_| restore())
    }

    /// Draws `view`: `Ok(false)` if the terminal is gone (EIO: hung up), for the view to end
    /// quietly, there being nowhere left to say anything.
    fn draw(&mut self, view: &View) -> Result<bool, Failure> {
        match self.terminal.draw(|frame| render(frame, view)) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(false),
            Err(e) => Err(terminal_failure(e)),
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing.

/// Below this the view does not fit; it says so instead.
const MIN_WIDTH: u16 = 40;
const MIN_HEIGHT: u16 = 6;
/// The connection table's fixed columns: the state (`half_closed`), the time to reap (`59.9s`).
const STATE_WIDTH: u16 = 11;
const REAP_IN_WIDTH: u16 = 7;

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn render(frame: &mut Frame, view: &View) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!("terminal too small ({}x{}): top needs 80x24", area.width, area.height);
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    // Title, listeners' header, listeners (at most half the room), caption, connections.
    let room = area.height - 4;
    let listener_rows = (view.listeners.len().max(1) as u16).min((room / 2).max(1));
    let [title, listeners, caption, conns] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1 + listener_rows),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    render_title(frame, title, view);
    render_listeners(frame, listeners, view);
    let shown = view.conns.len().min(conns.height.saturating_sub(1) as usize);
    let text = match view.conns.len() {
        0 => "No open connections".to_owned(),
        n if shown < n => format!("Connections, soonest to be reaped first ({shown} of {n})"),
        n => format!("Connections, soonest to be reaped first ({n})"),
    };
    frame.render_widget(Paragraph::new(fit_end(&text, area.width as usize)).style(bold()), caption);
    render_conns(frame, conns, &view.conns[..shown]);
}

fn render_title(frame: &mut Frame, area: Rect, view: &View) {
    let width = area.width as usize;
    let open: u64 = view.listeners.iter().map(|l| l.open).sum();
    let right = "q quits ";
    let n = view.listeners.len();
    let counts = format!(" idlereaperctl top  {n} listener{}  {open} open  ", if n == 1 { "" } else { "s" });
    let room = width.saturating_sub(counts.chars().count() + right.len() + 1);
    let left = fit_end(&(counts + &fit_start(&view.socket, room)), width.saturating_sub(right.len()));
    let pad = width.saturating_sub(left.chars().count() + right.len());
    let line = format!("{left}{}{right}", " ".repeat(pad));
    frame.render_widget(Paragraph::new(line).style(Style::new().add_modifier(Modifier::REVERSED)), area);
}

fn render_listeners(frame: &mut Frame, area: Rect, view: &View) {
    // The byte columns' headers are shortened below 80 columns, so that names keep some room.
    let (from_client, from_upstream) =
        if area.width < 80 { ("CLIENT B/s", "UPSTRM B/s") } else { ("FROM CLIENT B/s", "FROM UPSTREAM B/s") };
    let numbers = [6, 8, 8, from_client.len() as u16, from_upstream.len() as u16];
    let name_width = area.width.saturating_sub(numbers.iter().sum::<u16>() + 5) as usize;
    let widths = [Constraint::Fill(1)].into_iter().chain(numbers.map(Constraint::Length));
    let header = Row::new([
        Cell::from("LISTENER"),
        right("OPEN"),
        right("ACCEPT/s"),
        right("REAP/s"),
        right(from_client),
        right(from_upstream),
    ])
    .style(bold());
    let room = area.height.saturating_sub(1) as usize;
    let mut rows: Vec<Row> = Vec::with_capacity(room);
    let overflow = view.listeners.len() > room;
    let shown = if overflow { room.saturating_sub(1) } else { view.listeners.len() };
    for l in &view.listeners[..shown] {
        let rate = |f: fn(&Rates) -> f64, show: fn(f64) -> String| {
            l.rates.as_ref().map_or("-".into(), |r| show(f(r)))
        };
        rows.push(Row::new([
            Cell::from(fit_end(&l.name, name_width)),
            right(&l.open.to_string()),
            right(&rate(|r| r.accepts, human_rate)),
            right(&rate(|r| r.reaps, human_rate)),
            right(&rate(|r| r.from_client, human_bytes)),
            right(&rate(|r| r.from_upstream, human_bytes)),
        ]));
    }
    if overflow {
        let more = view.listeners.len() - shown;
        let open: u64 = view.listeners[shown..].iter().map(|l| l.open).sum();
        rows.push(Row::new([Cell::from(format!("… {more} more")), right(&open.to_string())]));
    } else if view.listeners.is_empty() {
        rows.push(Row::new([Cell::from("(no listeners)")]));
    }
    frame.render_widget(Table::new(rows, widths).header(header).column_spacing(1), area);
}

/// The connection table's column widths for `width` columns and these rows: the id as wide as
/// the largest (never cut: a cut id would name another connection), the state and the time to
/// reap fixed. The listener (up to 16), the client (up to 21, an IPv4 address with its port) and
/// the bar (16) share the rest. Too wide: the bar shrinks to 9, then the listener to 6, then the
/// client to 12. Room to spare: the listener and the client get their full length, then the
/// bar up to 40.
fn conn_widths(width: u16, conns: &[ConnRow]) -> [u16; 6] {
    let longest = |text: fn(&ConnRow) -> &str, least: usize| {
        conns.iter().map(|c| text(c).chars().count()).max().unwrap_or(0).max(least).min(64) as u16
    };
    let id = conns.iter().map(|c| c.id).max().unwrap_or(0).to_string().len().max(2) as u16;
    let (want_listener, want_client) = (longest(|c| &c.listener, 8), longest(|c| &c.client, 6));
    let rest = width.saturating_sub(5 + id + STATE_WIDTH + REAP_IN_WIDTH);
    let (mut listener, mut client, mut bar) = (want_listener.min(16), want_client.min(21), 16);
    let mut over = (listener + client + bar).saturating_sub(rest);
    for (column, least) in [(&mut bar, 9), (&mut listener, 6), (&mut client, 12)] {
        let cut = over.min(column.saturating_sub(least));
        *column -= cut;
        over -= cut;
    }
    let mut spare = rest.saturating_sub(listener + client + bar);
    for (column, wanted) in [(&mut listener, want_listener), (&mut client, want_client), (&mut bar, 40)] {
        let more = spare.min(wanted.saturating_sub(*column));
        *column += more;
        spare -= more;
    }
    [id, listener, client, STATE_WIDTH, REAP_IN_WIDTH, bar]
}

fn render_conns(frame: &mut Frame, area: Rect, conns: &[ConnRow]) {
    let widths = conn_widths(area.width, conns);
    let header = Row::new([
        right("ID"),
        Cell::from("LISTENER"),
        Cell::from("CLIENT"),
        Cell::from("STATE"),
        right("REAP IN"),
        Cell::from("IDLE"),
    ])
    .style(bold());
    let rows = conns.iter().map(|c| {
        Row::new([
            right(&c.id.to_string()),
            Cell::from(fit_end(&c.listener, widths[1] as usize)),
            Cell::from(fit_middle(&c.client, widths[2] as usize)),
            Cell::from(fit_end(&c.state, widths[3] as usize)),
            right(&human_ms(c.reap_in_ms)),
            Cell::from(idle_bar(c, widths[5] as usize)),
        ])
    });
    let constraints = widths.map(Constraint::Length);
    frame.render_widget(Table::new(rows, constraints).header(header).column_spacing(1), area);
}

/// A right-aligned cell.
fn right(text: &str) -> Cell<'static> {
    Cell::from(Line::from(text.to_owned()).right_aligned())
}

/// The bar of a connection's spent idle timeout, `width` columns with its percentage: green,
/// then yellow past half, red past 80 %.
fn idle_bar(c: &ConnRow, width: usize) -> Line<'static> {
    const EIGHTHS: [&str; 8] = [" ", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let pct = idle_pct(c);
    let cells = width.saturating_sub(5);
    let eighths = ((idle_fraction(c) * cells as f64 * 8.0).round() as usize).min(cells * 8);
    let (full, part) = (eighths / 8, eighths % 8);
    let color = match pct {
        0..50 => Color::Green,
        50..80 => Color::Yellow,
        _ => Color::Red,
    };
    let filled = Style::new().fg(color).bg(Color::DarkGray);
    let mut spans = vec![Span::styled("█".repeat(full), filled)];
    if full < cells {
        let partial = if part > 0 { EIGHTHS[part] } else { " " };
        spans.push(Span::styled(partial, filled));
        spans.push(Span::styled(" ".repeat(cells - full - 1), Style::new().bg(Color::DarkGray)));
    }
    spans.push(Span::raw(format!(" {pct:>3}%")));
    Line::from(spans)
}

/// Connections or reaps per second: `0.4`, `12.0`, `350`, `12k`.
fn human_rate(rate: f64) -> String {
    if rate < 100.0 {
        format!("{rate:.1}")
    } else if rate < 100_000.0 {
        format!("{rate:.0}")
    } else {
        format!("{:.0}k", rate / 1000.0)
    }
}

/// Bytes per second: `512`, `12.3K`, `4.5M` (powers of 1024).
fn human_bytes(rate: f64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if rate < 1024.0 {
        return format!("{rate:.0}");
    }
    let mut value = rate / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// `text` in at most `width` columns, its end replaced by `…` if cut.
fn fit_end(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

/// `text` in at most `width` columns, its start replaced by `…` if cut (a path keeps its end).
fn fit_start(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

/// An address in at most `width` columns, cut in the middle so that its port stays.
fn fit_middle(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    let port = text.rfind(':').map_or(0, |i| text[i..].chars().count());
    let tail = port.min(width / 2);
    let head = width.saturating_sub(tail + 1);
    if width == 0 {
        return String::new();
    }
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

#[cfg(test)]
mod tests {
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
