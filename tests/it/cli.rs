//! The command line for a person: `--help` says what the command does beyond its options
//! (daemonizing, signals, exit status) and where the manuals are, in plain text; `-v`, `-V` and
//! `--version` print the version, `--version` with the build's features. `idlereaperctl --help`
//! describes the tool (not the daemon) and every command its manual has, each option with words.

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
            "idlereaperctl(8)",
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

/// `idlereaperctl ARGS` (none of these asks a daemon): exit status and stdout.
fn ctl(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(CTL)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run idlereaperctl");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commands of idlereaperctl(8)'s COMMANDS section, as words: `["show", "conns"]`, `["kill"]`.
fn manual_commands() -> Vec<Vec<String>> {
    let man = include_str!("../../packaging/idlereaperctl.8");
    let section = man.split(".SH COMMANDS\n").nth(1).unwrap().split("\n.SH ").next().unwrap();
    let lines: Vec<&str> = section.lines().collect();
    let entries = lines.windows(2).filter(|w| w[0] == ".TP").map(|w| w[1]);
    let commands: Vec<Vec<String>> = entries
        .map(|entry| {
            let words = entry.trim_start_matches(".BI ").trim_start_matches(".B ");
            let words = words.split_whitespace().map(|w| w.trim_matches('"'));
            let words = words.take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()));
            words.map(str::to_owned).collect()
        })
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    commands
}

#[test]
fn idlereaperctl_help_describes_the_tool_and_every_command_of_its_manual() {
    let (status, help) = ctl(&["--help"]);
    assert_eq!(status, Some(0));
    assert!(help.starts_with("idlereaperctl: ") && help.contains("control socket"), "{help}");
    assert!(!help.contains(env!("CARGO_PKG_DESCRIPTION")), "the daemon's description:\n{help}");
    for words in [
        "idlereaperctl(8)",
        "-s, --socket <SOCKET>",
        "/run/idlereaper/control.sock",
        "Exit status: 0 done",
        "3 no answer",
    ] {
        assert!(help.contains(words), "--help mentions {words:?}:\n{help}");
    }
    let (_, show) = ctl(&["show", "--help"]);
    for command in manual_commands() {
        let (listing, word) = match command.as_slice() {
            [show_word, subject] if show_word == "show" => (&show, subject),
            [word, ..] => (&help, word),
            [] => panic!("an empty command in the manual"),
        };
        assert!(listing.contains(&format!("\n  {word} ")), "{command:?} is not in --help:\n{listing}");
        // Every option of every command is described in words.
        let (status, own) =
            ctl(&[command.iter().map(String::as_str).collect::<Vec<_>>(), vec!["--help"]].concat());
        assert_eq!(status, Some(0), "{command:?} --help");
        for line in own.lines().filter(|l| l.trim_start().starts_with('-')) {
            let described =
                line.trim_start().split_once("  ").is_some_and(|(_, words)| !words.trim().is_empty());
            assert!(described, "{command:?}: an option without words: {line:?}\n{own}");
        }
    }
}

#[test]
fn idlereaperctl_version_prints_its_name_and_version() {
    for flag in ["--version", "-V"] {
        assert_eq!(ctl(&[flag]), (Some(0), format!("idlereaperctl {}\n", env!("CARGO_PKG_VERSION"))));
    }
}
