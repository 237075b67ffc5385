//! The guardian's parts that need no upgrade: the word on the pipe, the handshake's wait for a
//! child, and how a failure is told. The whole crossing, with real binaries that fail, is
//! `tests/it/upgrade_failures.rs`.

#![allow(clippy::zombie_processes)] // each child is reaped with waitpid, as the code under test reaps them

use std::io::Write;
use std::process::{Command, Stdio};

use super::*;

fn pipe() -> (File, File) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (File::from(read), File::from(write))
}

/// What `read_word` makes of `said`, written at once, then the pipe closed (or not).
fn word_of(said: &[u8], close: bool) -> Result<(), Cause> {
    let (read, mut write) = pipe();
    write.write_all(said).unwrap();
    let kept = (!close).then_some(write);
    let word = read_word(&read, Instant::now() + Duration::from_millis(200));
    drop(kept);
    match word {
        Word::Taken => Ok(()),
        Word::Failed(cause) => Err(cause),
    }
}

#[test]
fn the_word_on_the_pipe_decides() {
    assert_eq!(word_of(b"ok\n", false), Ok(()));
    assert_eq!(word_of(b"ok\nmore", true), Ok(()), "the first line counts");
    assert_eq!(word_of(b"failed: no log\n", true), Err(Cause::Said("no log".into())));
    assert_eq!(word_of(b"", true), Err(Cause::Ended), "the new image ended");
    assert_eq!(word_of(b"ok", true), Ok(()), "a last line without its newline");
    assert_eq!(word_of(b"o", true), Err(Cause::Said("it said \"o\"".into())), "cut short");
    assert_eq!(word_of(b"", false), Err(Cause::Silent), "no word before the deadline");
    assert_eq!(word_of(b"o", false), Err(Cause::Silent), "half a word before the deadline");
    let long = vec![b'x'; MAX_LINE + 10];
    assert!(matches!(word_of(&long, false), Err(Cause::Said(_))), "a line without end is bounded");
}

/// A child that reads its standard input (the pipe) to its end, then exits.
fn reader(pipe: File) -> u32 {
    let child = Command::new("cat").stdin(Stdio::from(pipe)).stdout(Stdio::null()).spawn().unwrap();
    child.id()
}

#[test]
fn taking_over_says_ok_and_waits_for_the_guardian() {
    let (read, write) = pipe();
    let guardian = reader(read);
    assert_eq!(Handshake { pipe: write, guardian }.taken(), Ok(()));
    assert!(
        matches!(
            waitpid(Pid::from_raw(guardian as i32), Some(WaitPidFlag::WNOHANG)),
            Err(nix::errno::Errno::ECHILD)
        ),
        "reaped"
    );
    // A guardian that does not exit is killed and reaped.
    let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let started = Instant::now();
    let e = wait_child(sleeper.id(), Duration::from_millis(100)).unwrap_err();
    assert!(e.contains("did not exit within 100ms") && e.contains("killed"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(waitpid(Pid::from_raw(sleeper.id() as i32), None), Err(nix::errno::Errno::ECHILD)));
}

#[test]
fn a_failure_is_said_on_one_line() {
    let (read, write) = pipe();
    Handshake { pipe: write, guardian: 0 }.failed("event loop:\nToo many open files");
    assert_eq!(
        read_word(&read, Instant::now() + Duration::from_millis(200)).failed(),
        Some(Cause::Said("event loop: Too many open files".into()))
    );
}

impl Word {
    fn failed(self) -> Option<Cause> {
        match self {
            Word::Taken => None,
            Word::Failed(cause) => Some(cause),
        }
    }
}

/// How a child running `sh -c script` ended, as a failure describes it, once reaped.
fn described(script: &str, cause: Cause) -> String {
    let child = Command::new("sh").arg("-c").arg(script).spawn().unwrap();
    let pidfd = sys::pidfd_open(child.id()).unwrap(); // a zombie until reaped: still named
    let _ = waitpid(Pid::from_raw(child.id() as i32), None);
    Failure { cause, image: child.id(), pidfd: Some(pidfd) }.describe()
}

#[test]
fn a_failure_says_how_the_new_image_ended_where_the_kernel_tells() {
    let exited = described("exit 3", Cause::Ended);
    // The exit status of a process that is not our child comes from PIDFD_GET_INFO (Linux
    // 6.15); an older kernel does not tell, and the failure says so in other words.
    let probe = Command::new("true").spawn().unwrap();
    let pidfd = sys::pidfd_open(probe.id()).unwrap();
    let _ = waitpid(Pid::from_raw(probe.id() as i32), None);
    if sys::pidfd_exit_status(&pidfd).is_some() {
        assert!(exited.ends_with("exited with status 3 before taking over"), "{exited}");
        let crashed = described("kill -SEGV $$", Cause::Ended);
        assert!(crashed.ends_with("was killed by signal 11 (SIGSEGV) before taking over"), "{crashed}");
    } else {
        assert!(exited.ends_with("ended before taking over"), "{exited}");
    }
    let said = described("exit 1", Cause::Said("pidfile: gone".into()));
    assert!(said.ends_with("could not take over: pidfile: gone"), "{said}");
    let silent = described("exit 0", Cause::Silent);
    assert!(silent.ends_with("did not take over within 10 s: killed"), "{silent}");
    assert!(silent.starts_with("the new image (pid "), "{silent}");
}
