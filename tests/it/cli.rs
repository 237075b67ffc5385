//! The command line for a person: `--help` says what the command does beyond its options
//! (daemonizing, signals, exit status) and where the manuals are, in plain text; `-v`, `-V` and
//! `--version` print the version, `--version` with the build's features.

use std::time::Duration;

use crate::common::*;

fn run(args: &[&str]) -> CliRun {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    run_cli(dir.path(), &args, Duration::from_secs(10))
}

#[test]
fn help_points_to_the_manuals_and_says_how_the_daemon_behaves() {
    for flag in ["--help", "-h"] {
        let CliRun { status, stdout, stderr } = run(&[flag]);
        assert_eq!(status.code(), Some(0), "{flag}: {stderr}");
        for words in [
            "idlereaper(8)",
            "idlereaper.toml(5)",
            "daemonizes",
            "--foreground",
            "TERM",
            "HUP reloads",
            "USR1",
            "Exit status: 0 success, 2 usage or configuration error, 1 any other failure",
            "[alias: -v]",
        ] {
            let found =
                stdout.contains(words) || (words == "-v, --version" && stdout.contains("[alias: -v]"));
            assert!(found, "{flag} mentions {words:?}:\n{stdout}");
        }
        assert!(!stdout.contains('`'), "{flag} is plain text, not Markdown:\n{stdout}");
    }
}

#[test]
fn v_and_capital_v_print_the_version_and_long_version_the_features() {
    let short = format!("idlereaper {}\n", env!("CARGO_PKG_VERSION"));
    for flag in ["-v", "-V"] {
        let CliRun { status, stdout, stderr } = run(&[flag]);
        assert_eq!((status.code(), stdout.as_str()), (Some(0), short.as_str()), "{flag}: {stderr}");
    }
    let CliRun { status, stdout, stderr } = run(&["--version"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with(&short), "{stdout}");
    for words in
        ["target: ", "splice", "timerfd", "SO_REUSEPORT", "PROXY protocol v1 and v2", "/etc/idlereaper.toml"]
    {
        assert!(stdout.contains(words), "--version mentions {words:?}:\n{stdout}");
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error_that_shows_the_usage() {
    let CliRun { status, stderr, .. } = run(&["-x"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'-x'") && stderr.contains("Usage: idlereaper"), "{stderr}");
}
