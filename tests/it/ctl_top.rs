//! `idlereaperctl top` against a real daemon with relayed connections: plain `key=value` lines
//! when its output is a pipe (two refreshes with `-n 2`; a closed pipe ends it quietly), and the
//! full-screen view on an 80×24 pseudo-terminal, read back through a terminal emulator: it shows
//! the listener and the connections, q ends it, and the terminal is restored (alternate screen
//! left, cursor shown, raw mode off), also when the daemon goes away mid-run (exit status 1). A
//! hung-up terminal ends it, with or without the SIGHUP. A daemon out of reach at start is an
//! error before the terminal is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::*;
use idlereaper::rows::ConnRow;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{tcgetattr, LocalFlags};

/// Relayed connections each test opens.
const CONNS: usize = 3;
/// The listener's name.
const LISTENER: &str = "web";
/// Longest a `top` run may take to do what a test waits for (a refresh is every second).
const TOP_DEADLINE: Duration = Duration::from_secs(10);
const ROWS: u16 = 24;
const COLS: u16 = 80;

/// A daemon with a control socket and [`CONNS`] open relayed connections on [`LISTENER`].
struct Setup {
    daemon: Daemon,
    socket: PathBuf,
    /// The connections' ids and client addresses, as the daemon lists them.
    conns: Vec<ConnRow>,
    clients: Vec<TcpStream>,
    _upstream: Upstream,
}

fn setup() -> Setup {
    let upstream = Upstream::echo();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("control.sock");
    let listen = free_addr();
    let config = daemon_section(dir.path(), "2s")
        + &relay_listener(LISTENER, listen, upstream.addr, "60s")
        + &format!("[control]\nsocket = \"{}\"\n", socket.display());
    let daemon = Daemon::start_in(dir, &config);
    let clients: Vec<TcpStream> = (0..CONNS)
        .map(|i| {
            let mut client = connect(listen);
            assert_echo(&mut client, format!("hello {i}").as_bytes());
            client
        })
        .collect();
    let conns = wait_for(Duration::from_secs(5), || {
        let rows = show_conns(&socket);
        (rows.len() == CONNS).then_some(rows)
    })
    .unwrap_or_else(|| panic!("the daemon does not list {CONNS} connections; log:\n{}", daemon.log()));
    let mine: BTreeSet<String> = clients.iter().map(|c| c.local_addr().unwrap().to_string()).collect();
    let listed: BTreeSet<String> = conns.iter().map(|c| c.client.clone()).collect();
    assert_eq!(listed, mine, "the daemon lists the test's clients");
    Setup { daemon, socket, conns, clients, _upstream: upstream }
}

fn show_conns(socket: &Path) -> Vec<ConnRow> {
    let answer = idlereaper::ctl::ask(socket, "show conns --json").expect("show conns --json");
    serde_json::from_str(&answer).expect("show conns --json is a JSON array of rows")
}

/// Waits (up to [`TOP_DEADLINE`]) for `child` to exit; kills it and panics if it does not.
fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    wait_for(TOP_DEADLINE, || child.try_wait().expect("try_wait")).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not exit within {TOP_DEADLINE:?}")
    })
}

/// A line of `key=value` words (a leading bare word, such as `conn`, maps to "").
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split(' ')
        .map(|word| word.split_once('=').unwrap_or((word, "")))
        .inspect(|(key, _)| assert!(!key.is_empty(), "a word without a key in {line:?}"))
        .collect()
}

fn rate(fields: &BTreeMap<&str, &str>, key: &str) -> f64 {
    let value = fields.get(key).unwrap_or_else(|| panic!("no {key}= in {fields:?}"));
    let rate: f64 = value.parse().unwrap_or_else(|_| panic!("{key}={value} is not a number"));
    assert!(rate.is_finite() && rate >= 0.0, "{key}={value}");
    rate
}

#[test]
fn off_a_terminal_top_prints_two_refreshes_of_key_value_lines() {
    let s = setup();
    let mut child = Command::new(CTL)
        .arg("-s")
        .arg(&s.socket)
        .args(["top", "-n", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn idlereaperctl");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = wait_exit(&mut child, "top -n 2");
    let elapsed = started.elapsed();
    let text = out.join().unwrap().expect("read top's output");
    let errors = err.join().unwrap().expect("read top's errors");
    assert!(status.success(), "top -n 2: {status}; stderr:\n{errors}\nstdout:\n{text}");
    assert_eq!(errors, "", "nothing on stderr");
    assert!(elapsed >= Duration::from_millis(1900), "a refresh every second: 2 took {elapsed:?}");
    assert!(!text.contains('\x1b'), "no terminal control codes off a terminal:\n{text:?}");

    assert!(text.ends_with("\n\n"), "each refresh ends with a blank line:\n{text}");
    let refreshes: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(refreshes.len(), 2, "two refreshes:\n{text}");
    let want_ids: BTreeSet<u64> = s.conns.iter().map(|c| c.id).collect();
    let want_clients: BTreeSet<String> =
        s.clients.iter().map(|c| c.local_addr().unwrap().to_string()).collect();
    for refresh in refreshes {
        let lines: Vec<&str> = refresh.lines().collect();
        assert_eq!(lines.len(), 1 + CONNS, "one listener line and {CONNS} conn lines:\n{refresh}");
        let listener = fields(lines[0]);
        assert_eq!(listener.get("listener"), Some(&LISTENER), "{refresh}");
        assert_eq!(listener.get("open"), Some(&CONNS.to_string().as_str()), "{refresh}");
        for key in ["accepts_per_s", "reaps_per_s", "bytes_per_s"] {
            rate(&listener, key);
        }
        assert_eq!(rate(&listener, "reaps_per_s"), 0.0, "nothing was reaped:\n{refresh}");
        let (mut ids, mut clients) = (BTreeSet::new(), BTreeSet::new());
        for line in &lines[1..] {
            let conn = fields(line);
            assert!(line.starts_with("conn "), "{line}");
            let keys: Vec<&str> = conn.keys().copied().collect();
            assert_eq!(
                keys,
                ["client", "conn", "id", "idle_pct", "listener", "reap_in_ms", "state"],
                "{line}"
            );
            assert_eq!(conn["listener"], LISTENER, "{line}");
            assert_eq!(conn["state"], "relaying", "{line}");
            let idle_pct: u64 = conn["idle_pct"].parse().expect("idle_pct is a number");
            assert!(idle_pct <= 100, "{line}");
            let reap_in: u64 = conn["reap_in_ms"].parse().expect("reap_in_ms is a number");
            assert!(reap_in > 0 && reap_in <= 60_000, "{line}");
            ids.insert(conn["id"].parse::<u64>().expect("id is a number"));
            clients.insert(conn["client"].to_owned());
        }
        assert_eq!(ids, want_ids, "the connections' ids:\n{refresh}");
        assert_eq!(clients, want_clients, "the connections' clients:\n{refresh}");
    }
}

#[test]
fn a_closed_output_ends_top_quietly() {
    let s = setup();
    let mut child = Command::new(CTL)
        .arg("-s")
        .arg(&s.socket)
        .arg("top")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn idlereaperctl");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    for _ in 0..=CONNS {
        first.clear();
        stdout.read_line(&mut first).expect("read a line of the first refresh");
        assert!(first.starts_with("listener=") || first.starts_with("conn "), "{first:?}");
    }
    drop(stdout); // the next refresh meets a closed pipe
    let status = wait_exit(&mut child, "top with its output closed");
    let mut errors = String::new();
    child.stderr.take().unwrap().read_to_string(&mut errors).unwrap();
    assert!(status.success(), "EPIPE is a quiet exit 0: {status}; stderr:\n{errors}");
    assert_eq!(errors, "", "nothing on stderr");
}

#[test]
fn a_daemon_out_of_reach_is_exit_1_before_anything_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody.sock");
    let output = Command::new(CTL)
        .arg("-s")
        .arg(&missing)
        .args(["top", "-n", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run idlereaperctl");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(errors.contains("cannot reach the daemon") && errors.contains("nobody.sock"), "{errors}");

    let mut top = Pty::spawn(&[OsStr::new("-s"), missing.as_os_str(), OsStr::new("top")], true);
    let status = wait_exit(&mut top.child, "top on a pty, no daemon");
    let screen = top.finish();
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(!top.raw().windows(8).any(|w| w == b"\x1b[?1049h"), "the alternate screen was never entered");
    assert!(screen.contents().contains("cannot reach the daemon"), "{}", screen.contents());
    top.assert_restored();
}

/// `idlereaperctl ARGS` on a new 80×24 pseudo-terminal, in a session of its own, with everything
/// it writes collected by a thread.
struct Pty {
    child: Child,
    /// `None` once hung up.
    master: Option<File>,
    output: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

/// A new pseudo-terminal of [`ROWS`]×[`COLS`]: its master and its slave, both close-on-exec from
/// the start (`openpty` makes them inheritable: a copy of the master in another test's child, or
/// in the child itself, would keep the terminal from ever hanging up).
fn open_pty() -> (File, File) {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).expect("posix_openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname_r(&master).expect("ptsname_r");
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    let size = libc::winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize, which lives across the call.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", io::Error::last_os_error());
    (File::from(OwnedFd::from(master)), slave)
}

/// Longest the pty's reader runs, whatever happens.
const READER_LIFETIME: Duration = Duration::from_secs(60);

impl Pty {
    /// With `controlling`, the pty is the child's controlling terminal (as a login over ssh
    /// gives: /dev/tty is the pty, and a hang-up sends it SIGHUP); without, it has none (as when
    /// the shell that started it is gone), and only reads and writes tell a hang-up.
    fn spawn(args: &[&OsStr], controlling: bool) -> Pty {
        let (master, slave) = open_pty();
        let mut command = Command::new(CTL);
        command
            .args(args)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec the closure only makes async-signal-safe calls (setsid,
        // ioctl) and allocates nothing: a new session, whose controlling terminal is the pty
        // slave on fd 0 if asked.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 || (controlling && libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0) {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn idlereaperctl on a pty");
        drop(command); // our copies of the slave: the reader sees EIO once the child is gone
        fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("O_NONBLOCK on the pty");
        let output = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let mut master = master.try_clone().unwrap();
            let (output, stop) = (Arc::clone(&output), Arc::clone(&stop));
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let start = Instant::now();
                while !stop.load(Ordering::SeqCst) && start.elapsed() < READER_LIFETIME {
                    match master.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => output.lock().unwrap().extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL / 2),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return, // EIO: the child and its copies of the slave are gone
                    }
                }
            })
        };
        Pty { child, master: Some(master), output, stop, reader: Some(reader) }
    }

    fn master(&self) -> &File {
        self.master.as_ref().expect("the pty is not hung up")
    }

    /// Closes the terminal, as sshd does when the connection drops.
    fn hang_up(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let reader = self.reader.take().unwrap();
        if wait_for(Duration::from_secs(5), || reader.is_finished().then_some(())).is_none() {
            panic!("the pty's reader did not stop");
        }
        reader.join().unwrap();
        self.master = None;
    }

    /// Everything written so far.
    fn raw(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// The 80×24 screen after everything written so far.
    fn screen(&self) -> vt100::Parser {
        let mut parser = vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 0);
        parser.process(&self.raw());
        parser
    }

    fn screen_text(&self) -> String {
        self.screen().screen().contents()
    }

    /// Whether the pty is in raw mode (no line editing, no echo).
    fn raw_mode(&self) -> bool {
        let flags = tcgetattr(self.master()).expect("tcgetattr").local_flags;
        !flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO)
    }

    /// After the child's exit: waits for the reader to see the end, and returns the screen.
    fn finish(&mut self) -> vt100::Screen {
        let reader = self.reader.take().unwrap();
        if wait_for(Duration::from_secs(5), || reader.is_finished().then_some(())).is_none() {
            panic!("the pty's output did not end after the child's exit");
        }
        reader.join().unwrap();
        self.screen().screen().clone()
    }

    /// The terminal as it was before: the primary screen, a visible cursor, line mode with echo.
    fn assert_restored(&self) {
        let parser = self.screen();
        let screen = parser.screen();
        assert!(!screen.alternate_screen(), "the alternate screen was left:\n{}", screen.contents());
        assert!(!screen.hide_cursor(), "the cursor is shown again");
        assert!(!self.raw_mode(), "raw mode was ended");
        let text = String::from_utf8_lossy(&self.raw()).into_owned();
        assert!(!text.contains("panicked"), "no panic:\n{text}");
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The row of the listener table for [`LISTENER`], as words, once it shows rates (the first
/// refresh after start).
fn listener_row(screen: &str) -> Option<Vec<String>> {
    let row = screen.lines().find(|l| l.starts_with(&format!("{LISTENER} ")))?;
    let words: Vec<String> = row.split_whitespace().map(str::to_owned).collect();
    (words.len() == 6 && words[2] != "-").then_some(words)
}

/// Starts `top` on a pty and waits for its first refresh with rates; returns the screen.
fn top_on_pty(s: &Setup, controlling: bool) -> (Pty, String) {
    let top = Pty::spawn(&[OsStr::new("-s"), s.socket.as_os_str(), OsStr::new("top")], controlling);
    let shown = wait_for(TOP_DEADLINE, || listener_row(&top.screen_text()));
    let screen = top.screen_text();
    let Some(row) = shown else {
        panic!("no refreshed {LISTENER} row within {TOP_DEADLINE:?}; screen:\n{screen}");
    };
    assert_eq!(row[1], CONNS.to_string(), "open connections; screen:\n{screen}");
    assert!(top.screen().screen().alternate_screen(), "a full-screen view");
    assert!(top.raw_mode(), "the pty is in raw mode while top runs");
    (top, screen)
}

#[test]
fn on_an_80x24_terminal_top_shows_the_listener_and_connections_and_q_quits() {
    let s = setup();
    let (mut top, screen) = top_on_pty(&s, true);
    // Shown with `cargo test -- --nocapture`.
    println!("the 80x24 screen:\n{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].contains("idlereaperctl top") && lines[0].contains("q quits"), "{screen}");
    assert!(lines.iter().any(|l| l.starts_with("LISTENER") && l.contains("ACCEPT/s")), "{screen}");
    for conn in &s.conns {
        let row = lines.iter().find(|l| l.split_whitespace().next() == Some(&conn.id.to_string()));
        let row = row.unwrap_or_else(|| panic!("no row for connection {}:\n{screen}", conn.id));
        for word in [LISTENER, conn.client.as_str(), "relaying", "%"] {
            assert!(row.contains(word), "{word} in the row of connection {}: {row}", conn.id);
        }
    }
    top.master().write_all(b"q").expect("type q");
    let status = wait_exit(&mut top.child, "top after q");
    let after = top.finish();
    assert!(status.success(), "q quits with status 0: {status} (signal {:?})", status.signal());
    assert!(!after.contents().contains("idlereaperctl top"), "the view is gone:\n{}", after.contents());
    top.assert_restored();
}

#[test]
fn when_the_daemon_goes_away_top_restores_the_terminal_and_exits_1() {
    let mut s = setup();
    let (mut top, _) = top_on_pty(&s, true);
    s.daemon.kill();
    let status = wait_exit(&mut top.child, "top without its daemon");
    let after = top.finish();
    assert_eq!(status.code(), Some(1), "{status}; screen:\n{}", after.contents());
    assert!(
        after.contents().contains("cannot reach the daemon"),
        "the error, on the restored screen:\n{}",
        after.contents()
    );
    top.assert_restored();
}

/// Starts `top` on a pty, hangs the pty up, and returns how `top` ended.
fn hung_up(controlling: bool) -> ExitStatus {
    let s = setup();
    let (mut top, _) = top_on_pty(&s, controlling);
    top.hang_up();
    wait_exit(&mut top.child, "top on a hung-up terminal")
}

#[test]
fn a_hung_up_terminal_ends_top() {
    // Its controlling terminal: SIGHUP, of which it dies once the terminal is restored (or the
    // end of its input, if that comes first: exit 0).
    let status = hung_up(true);
    assert!(status.success() || status.signal() == Some(libc::SIGHUP), "{status}");
    // No controlling terminal, so no SIGHUP: the end of its input ends it.
    let status = hung_up(false);
    assert!(status.success(), "{status}");
}
