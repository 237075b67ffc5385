//! What an attacker on the same machine could try: a daemon started as root must not keep root
//! after binding, must refuse a pidfile path that is a planted symlink, and must warn about a
//! config file others can write; and hostile config files must be rejected with a message, never
//! a panic. The tests that need root say so and skip (with a message) when not run as root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The `Uid:`/`Gid:` (real, effective, saved, filesystem), `Groups:` and capability lines of
/// every thread of `pid`: (thread id, line).
fn thread_credentials(pid: u32) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/<pid>/task").flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        for line in status.lines() {
            if ["Uid:", "Gid:", "Groups:", "CapPrm:", "CapEff:"].iter().any(|k| line.starts_with(k)) {
                lines.push((tid.clone(), line.to_string()));
            }
        }
    }
    lines
}

/// Injects: a daemon started as root with `daemon.user = "nobody"`, `daemon.group = "nogroup"`
/// and two workers. Must survive: once it serves, every one of its threads has real, effective,
/// saved and filesystem uid and gid 65534, no supplementary groups and no capabilities.
#[test]
fn started_as_root_with_a_user_no_thread_keeps_root() {
    if !is_root() {
        skip("needs root (privilege drop)");
        return;
    }
    let upstream = Upstream::echo();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_section(dir.path(), "2s")
        .replace("[daemon]\n", "[daemon]\nuser = \"nobody\"\ngroup = \"nogroup\"\nworkers = 2\n")
        + &relay_listener("dropped", listen, upstream.addr, "30s");
    let mut daemon = Daemon::start_in(dir, &config);

    // Serving proves the workers run; a few connections reach both of them.
    for i in 0..8 {
        let mut c = connect(listen);
        assert_echo(&mut c, format!("as nobody {i}").as_bytes());
    }
    let creds = thread_credentials(daemon.pid());
    let threads: std::collections::BTreeSet<&str> = creds.iter().map(|(t, _)| t.as_str()).collect();
    assert!(threads.len() >= 3, "main thread and two workers: {threads:?}");
    for (tid, line) in &creds {
        let (key, values) = line.split_once(':').unwrap();
        let values: Vec<&str> = values.split_whitespace().collect();
        match key {
            "Uid" | "Gid" => assert_eq!(values, ["65534"; 4], "thread {tid}: {line}"),
            "Groups" => assert!(values.is_empty(), "thread {tid} keeps supplementary groups: {line}"),
            _ => assert!(values.iter().all(|v| v.trim_start_matches('0').is_empty()), "thread {tid}: {line}"),
        }
    }
    let status = daemon.stop();
    assert!(status.success(), "stops as nobody: {status:?}; log:\n{}", daemon.log());
}

/// Injects: the pidfile path is a symlink planted to another (not yet existing) file.
/// Must survive: the daemon refuses to start, foreground or not (exit non-zero, a message that
/// says "symbolic link"), the symlink's target is not created and nothing is bound.
#[test]
fn a_pidfile_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let pidfile = dir.path().join("idlereaper.pid");
    let target = dir.path().join("victim");
    std::os::unix::fs::symlink(&target, &pidfile).unwrap();
    let config = dir.path().join("idlereaper.toml");
    fs::write(&config, daemon_section(dir.path(), "2s") + &sink_listener("symlinked", listen, "30s"))
        .unwrap();

    for foreground in [true, false] {
        let mut args = vec!["-c".as_ref(), config.as_os_str()];
        if foreground {
            args.push("-f".as_ref());
        }
        let run = run_cli(dir.path(), &args, Duration::from_secs(10));
        assert!(!run.status.success(), "foreground={foreground}: started on a symlinked pidfile");
        assert!(run.stderr.contains("symbolic link"), "foreground={foreground}: {:?}", run.stderr);
        assert!(!target.exists(), "the symlink's target was created");
        assert!(fs::symlink_metadata(&pidfile).unwrap().file_type().is_symlink(), "the symlink is untouched");
        assert!(is_bindable(listen), "something listens on {listen}");
        assert_eq!(processes_with_arg(config.to_str().unwrap()), Vec::<u32>::new(), "no process left");
    }
}

/// Injects: a config file with mode 0666, and daemon started as root.
/// Must survive: one warning, at start, saying the file is "writable by a user other than
/// root"; a root-owned 0644 file gets none.
#[test]
fn a_config_writable_by_others_is_warned_about_when_started_as_root() {
    if !is_root() {
        skip("needs root (the warning is about running as root)");
        return;
    }
    const WARNING: &str = "writable by a user other than root";
    let set_mode = |mode: u32| {
        move |path: &Path, _: &mut std::process::Command| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let config = daemon_section(dir.path(), "2s") + &sink_listener("loose", free_addr(), "30s");
    let mut loose = Daemon::start_in_with(dir, &config, set_mode(0o666));
    loose.wait_log(WARNING, Duration::from_secs(5));
    let line = loose.log().lines().find(|l| l.contains(WARNING)).unwrap().to_string();
    assert!(line.contains(" WARN "), "logged as a warning: {line}");
    assert!(line.contains(loose.config_path.to_str().unwrap()), "names the file: {line}");
    assert_eq!(loose.log().matches(WARNING).count(), 1, "once");
    loose.stop();

    let dir = tempfile::tempdir().unwrap();
    let config = daemon_section(dir.path(), "2s") + &sink_listener("tight", free_addr(), "30s");
    let mut tight = Daemon::start_in_with(dir, &config, set_mode(0o644));
    tight.stop();
    assert!(!tight.log().contains(WARNING), "a 0644 root-owned config gets no warning:\n{}", tight.log());
}

// ---------------------------------------------------------------------------------------------
// Hostile config files
// ---------------------------------------------------------------------------------------------

/// Injects: config files an attacker (or a broken tool) could produce — binary garbage, a 1 MiB
/// line, arrays and tables nested 100,000 deep, a NUL byte, invalid UTF-8 — fed to `--check`.
/// Must survive: each is rejected with exit status 2 and a message that names the file; no
/// panic, no crash (a stack overflow would be a signal, not exit 2).
#[test]
fn hostile_config_files_are_rejected_with_exit_2_and_never_a_panic() {
    const DEPTH: usize = 100_000;
    let mut garbage = vec![0u8; 4096];
    ByteStream::new(99).fill(&mut garbage);
    let valid_head =
        "[daemon]\npidfile = \"/tmp/x.pid\"\n\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary garbage", garbage),
        ("a 1 MiB line", format!("{}{} = 1\n", valid_head, "k".repeat(1 << 20)).into_bytes()),
        (
            "a 1 MiB unterminated string",
            format!("{valid_head}idle_timeout = \"{}", "9".repeat(1 << 20)).into_bytes(),
        ),
        ("deeply nested arrays", format!("x = {}{}\n", "[".repeat(DEPTH), "]".repeat(DEPTH)).into_bytes()),
        (
            "deeply nested inline tables",
            format!("x = {}1{}\n", "{a = ".repeat(DEPTH), "}".repeat(DEPTH)).into_bytes(),
        ),
        ("unclosed nesting", format!("x = {}\n", "[{a=".repeat(DEPTH)).into_bytes()),
        ("a NUL byte", format!("{valid_head}idle_timeout = \"1s\0\"\n").into_bytes()),
        ("a NUL byte in a key", b"[daemon]\npid\0file = \"/tmp/x.pid\"\n".to_vec()),
        ("invalid UTF-8", [valid_head.as_bytes(), b"idle_timeout = \"1\xff\xfes\"\n"].concat()),
    ];
    assert_all_rejected(&cases);
}

/// Feeds each file to `--check` and asserts exit status 2, a message naming the file and no
/// panic, reporting every case that fails at once.
fn assert_all_rejected(cases: &[(&str, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("hostile{i}.toml"));
        fs::write(&path, bytes).unwrap();
        let run = run_cli(
            dir.path(),
            &["--check".as_ref(), "-c".as_ref(), path.as_os_str()],
            Duration::from_secs(20),
        );
        let stderr_head: String = run.stderr.chars().take(400).collect();
        let problem = if run.stderr.contains("panicked") || run.stderr.contains("overflow") {
            Some("panicked")
        } else if run.status.code() != Some(2) {
            Some("exit status is not 2")
        } else if !run.stderr.contains(path.to_str().unwrap()) {
            Some("the message does not name the file")
        } else {
            None
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{what}: {problem} (status {:?}); stdout: {:?}; stderr: {stderr_head:?}",
                run.status, run.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "hostile config files:\n{}", failures.join("\n"));
}

/// Injects: a structurally valid config whose `daemon.pidfile` or `daemon.log` path holds a NUL
/// (TOML's `\u0000` escape). No such file can ever be opened, so it is a configuration error:
/// `--check` must reject it with exit status 2 naming the file (rather than print "configuration
/// ok", and the start then fail with exit status 1).
#[test]
fn a_path_with_an_escaped_nul_is_a_configuration_error() {
    let listener = "\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nidle_timeout = \"1s\"\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a NUL in daemon.pidfile",
            format!("[daemon]\npidfile = \"/tmp/a\\u0000b.pid\"\n{listener}").into_bytes(),
        ),
        (
            "a NUL in daemon.log",
            format!("[daemon]\npidfile = \"/tmp/ok.pid\"\nlog = \"/tmp/a\\u0000b.log\"\n{listener}")
                .into_bytes(),
        ),
    ];
    assert_all_rejected(&cases);
}
