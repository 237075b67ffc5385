//! Tests that cannot run here: a skip that shows, and a missing peer that fails CI.
//!
//! A test that needs something this machine may lack (a peer program such as nginx, IPv6, root)
//! returns early. Locally it then passes, but prints `skipped: <test>: <why>` straight to the
//! process's stderr, which `cargo test` shows even for a passing test (the output capture only
//! takes `print!`/`eprint!`), and which `cargo test -- --nocapture` shows too. In CI (`CI` set
//! and not `false` or `0`, as `.ci/run` sets it) a missing peer program fails the test instead:
//! the CI machine installs its peers, and one that is missing must not pass unnoticed.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Whether the tests run in CI: `CI` set, and not to `false` or `0`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "false" | "0"))
}

/// Notes that the running test is skipped, and why, where a passing test's output still shows.
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Straight to the descriptor, past libtest's capture of `eprintln!`.
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// Whether `what` (a program or file a test needs, for the messages) is `available`. If not:
/// in CI, panics, saying how to install it (`hint`); elsewhere, [`skip`]s and returns `false`.
pub fn require(what: &str, available: bool, hint: &str) -> bool {
    if available {
        return true;
    }
    let why = format!("{what} is missing ({hint})");
    assert!(!in_ci(), "{why}; CI is set, so a missing peer fails the test instead of skipping it");
    skip(&why);
    false
}

/// [`require`] for the program at `path`: it exists and is executable.
pub fn require_program(path: &str, hint: &str) -> bool {
    let executable =
        Path::new(path).metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    require(path, executable, hint)
}
