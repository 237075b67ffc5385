//! The full-screen view on a terminal: raw mode and the alternate screen, restored on every way
//! out (a return, an error, a panic, a signal, a hung-up terminal); the keys read by a thread of
//! their own and the samples taken by another, so that a slow daemon never delays a key.

use super::render::{render, View};
use super::*;

fn terminal_failure(e: io::Error) -> Failure {
    Failure::Unreachable(format!("the terminal: {e}"))
}

/// The full-screen view until q, Esc or Ctrl-C, `count` refreshes, the end of the terminal's
/// input (hung up), a signal, or an error. The terminal is restored before this returns (or the
/// process dies of the signal it got).
pub(super) fn live(socket: &Path, count: Option<u64>, first: Sample) -> Result<(), Failure> {
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

/// How many connections a refresh asks for: as many as the terminal has lines, more than the
/// view can show (its title, listeners and captions take lines too), so it never runs short.
pub(super) fn rows() -> usize {
    terminal::size().map_or(100, |(_, height)| usize::from(height))
}

/// Whether what one read of the raw terminal brought is a quitting key: q, Q, Ctrl-C, or Esc
/// alone. An escape sequence (an arrow key, Alt+q) comes whole in one read, and does not quit.
pub(super) fn quits(bytes: &[u8]) -> bool {
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
            let sample = Sample::take(&socket, rows());
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
