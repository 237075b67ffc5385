//! The live view's unit tests: rates, plain lines, the screen at 80×24 and smaller, keys.

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
        protocol: "tcp".into(),
        state: "half_closed".into(),
        timer: "idle".into(),
        age_ms: 65_000,
        idle_ms,
        reap_in_ms: Some(300_000u64.saturating_sub(idle_ms)),
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
    (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_owned()).collect::<String>()).collect()
}

fn view(listeners: usize, conns: usize) -> View {
    let t0 = Instant::now();
    let rows: Vec<ListenerRow> = (0..listeners).map(|i| listener(&format!("l{i}"), 10, 2, 1000)).collect();
    let more: Vec<ListenerRow> =
        (0..listeners).map(|i| listener(&format!("l{i}"), 20, 3, 5_000_000)).collect();
    let cs: Vec<ConnRow> = (0..conns)
        .map(|i| conn(i as u64 + 1, "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:54321", (i as u64) * 20_000))
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
    assert!(lines[1].starts_with("LISTENER") && lines[1].trim_end().ends_with("FROM UPSTREAM B/s"), "{text}");
    assert!(lines[2].starts_with("l0 ") && lines[2].contains("10.0") && lines[2].contains("9.5M"), "{text}");
    assert!(lines[4].contains("(18 of 40)"), "{text}");
    assert!(lines[5].contains("ID") && lines[5].contains("IDLE"), "{text}");
    // The client keeps its port; the bar ends in its percentage.
    assert!(lines[6].contains("…:54321") && lines[6].trim_end().ends_with("0%"), "{text}");
    assert!(lines[23].trim_end().ends_with("100%"), "{text}");
    assert!(lines[6].contains("postgres-primary-…"), "{text}");
}

#[test]
fn a_limited_answer_is_counted_against_the_open_connections() {
    // top asks for a screenful (`--limit`): the caption counts every open connection.
    let mut limited = view(2, 24);
    limited.open = 9_000;
    let lines = screen(&limited, 80, 24);
    assert!(lines[4].contains("(18 of 9000)"), "{}", lines.join("\n"));
    let t0 = Instant::now();
    let mut busy = listener("l0", 1, 1, 1);
    busy.open = 8_999;
    let counted = sample(t0, vec![busy, listener("l1", 1, 1, 1)], vec![conn(1, "127.0.0.1:1", 0)]);
    assert_eq!(counted.open(), 9_002);
    // Connections of a listener a reload removed are listed but in no listener's count.
    assert_eq!(sample(t0, vec![], vec![conn(1, "127.0.0.1:1", 0)]).open(), 1);
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
    // A protocol listener's longest state widens its column; the bar gives way first.
    let mut observed = conns.clone();
    observed[3].state = "idle_in_transaction".into();
    assert_eq!(conn_widths(80, &observed), [2, 16, 21, 19, 7, 10]);
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
