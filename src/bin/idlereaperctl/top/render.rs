//! Drawing one screen with ratatui: a title, the listeners and their rates, and the connections
//! soonest to be reaped with a bar of their idle timeout spent, fitted to the terminal's width.

use super::*;

/// What one screen shows.
pub(super) struct View {
    pub(super) socket: String,
    pub(super) listeners: Vec<ListenerLine>,
    pub(super) conns: Vec<ConnRow>,
    /// How many connections are open (`conns` may be only the first of them).
    pub(super) open: u64,
}

impl View {
    pub(super) fn new(socket: &Path, previous: Option<&Sample>, current: &Sample) -> View {
        View {
            socket: socket.display().to_string(),
            listeners: listener_lines(previous, current),
            conns: current.conns.clone(),
            open: current.open(),
        }
    }
}

/// Below this the view does not fit; it says so instead.
const MIN_WIDTH: u16 = 40;
const MIN_HEIGHT: u16 = 6;
/// The connection table's state column: as wide as `half_closed`, and as the longest state
/// shown, up to `idle_in_transaction` (a protocol listener's).
const STATE_WIDTH: (usize, usize) = (11, 19);
/// The time to reap (`59.9s`).
const REAP_IN_WIDTH: u16 = 7;

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

pub(super) fn render(frame: &mut Frame, view: &View) {
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
    let text = match usize::try_from(view.open).unwrap_or(usize::MAX) {
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
/// the largest (never cut: a cut id would name another connection), the state as wide as the
/// longest (within [`STATE_WIDTH`]) and the time to reap fixed. The listener (up to 16), the client (up to 21, an IPv4 address with its port) and
/// the bar (16) share the rest. Too wide: the bar shrinks to 9, then the listener to 6, then the
/// client to 12. Room to spare: the listener and the client get their full length, then the
/// bar up to 40.
pub(super) fn conn_widths(width: u16, conns: &[ConnRow]) -> [u16; 6] {
    let longest = |text: fn(&ConnRow) -> &str, least: usize| {
        conns.iter().map(|c| text(c).chars().count()).max().unwrap_or(0).max(least).min(64) as u16
    };
    let id = conns.iter().map(|c| c.id).max().unwrap_or(0).to_string().len().max(2) as u16;
    let (want_listener, want_client) = (longest(|c| &c.listener, 8), longest(|c| &c.client, 6));
    let state = longest(|c| &c.state, STATE_WIDTH.0).min(STATE_WIDTH.1 as u16);
    let rest = width.saturating_sub(5 + id + state + REAP_IN_WIDTH);
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
    [id, listener, client, state, REAP_IN_WIDTH, bar]
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
            right(&c.reap_in_ms.map_or_else(|| "-".to_owned(), human_ms)),
            Cell::from(idle_bar(c, widths[5] as usize)),
        ])
    });
    let constraints = widths.map(Constraint::Length);
    frame.render_widget(Table::new(rows, constraints).header(header).column_spacing(1), area);
}

/// A right-aligned cell.
pub(super) fn right(text: &str) -> Cell<'static> {
    Cell::from(Line::from(text.to_owned()).right_aligned())
}

/// The bar of a connection's spent idle timeout, `width` columns with its percentage: green,
/// then yellow past half, red past 80 %.
pub(super) fn idle_bar(c: &ConnRow, width: usize) -> Line<'static> {
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
pub(super) fn human_rate(rate: f64) -> String {
    if rate < 100.0 {
        format!("{rate:.1}")
    } else if rate < 100_000.0 {
        format!("{rate:.0}")
    } else {
        format!("{:.0}k", rate / 1000.0)
    }
}

/// Bytes per second: `512`, `12.3K`, `4.5M` (powers of 1024).
pub(super) fn human_bytes(rate: f64) -> String {
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
pub(super) fn fit_end(text: &str, width: usize) -> String {
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
pub(super) fn fit_start(text: &str, width: usize) -> String {
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
pub(super) fn fit_middle(text: &str, width: usize) -> String {
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
