//! Step 3 of the config pipeline: a validated `[daemon]` table against this machine, for
//! `Config::load` (the daemon's start, `--check`, a reload).
//!
//! Whatever the daemon would refuse at start and that needs no socket is checked here, so that
//! `--check` does not pass a file that the start then rejects:
//!
//! * `daemon.user` and `daemon.group` name a user and a group that exist;
//! * the pidfile (`daemon.pidfile`, or `--pidfile`) is not a directory nor a symbolic link, and
//!   its directory exists, or its parent does: started as root, the daemon creates that one
//!   directory (`/run/idlereaper`) itself, as systemd's `RuntimeDirectory=` does for the unit;
//! * a log file's directory exists (the daemon creates the file, not the directory), and the
//!   path is not a directory.
//!
//! Permissions are not checked: they depend on who starts the daemon, which `--check` cannot
//! know. Those errors still come at start, with the path and the system's reason.

use std::io;
use std::path::Path;

use nix::unistd::{Group, User};

use super::daemon::FileDaemon;
use super::locate::Source;
use super::{DaemonConfig, LogTarget, Res};

/// Checks `daemon` (validated from `file`, whose spans the errors point at) against this
/// machine. `pidfile`, the `--pidfile` option, replaces `daemon.pidfile` first.
pub(super) fn check(
    src: &Source,
    file: &FileDaemon,
    daemon: &mut DaemonConfig,
    pidfile: Option<&Path>,
) -> Res<()> {
    if let Some(v) = &file.user {
        exists("user", v.get_ref(), User::from_name(v.get_ref()).map(|u| u.is_some()))
            .map_err(|msg| src.error(v.span(), "daemon.user", msg))?;
    }
    if let Some(v) = &file.group {
        exists("group", v.get_ref(), Group::from_name(v.get_ref()).map(|g| g.is_some()))
            .map_err(|msg| src.error(v.span(), "daemon.group", msg))?;
    }
    match pidfile {
        Some(path) => {
            daemon.pidfile = path.to_owned();
            if let Some(msg) = pidfile_problem(path) {
                return Err(src.error(None, "--pidfile", format!("{}: {msg}", path.display())));
            }
        }
        None => {
            let span = file.pidfile.as_ref().map(|v| v.span());
            let default = if span.is_none() { " (the default)" } else { "" };
            if let Some(msg) = pidfile_problem(&daemon.pidfile) {
                let msg = format!("{}{default}: {msg}", daemon.pidfile.display());
                return Err(src.error(span, "daemon.pidfile", msg));
            }
        }
    }
    if let LogTarget::File(path) = &daemon.log {
        if let Some(msg) = log_file_problem(path) {
            let span = file.log.as_ref().map(|v| v.span());
            return Err(src.error(span, "daemon.log", format!("{}: {msg}", path.display())));
        }
    }
    Ok(())
}

/// `Ok` if the lookup of `kind` `name` found it.
fn exists(kind: &str, name: &str, found: nix::Result<bool>) -> Result<(), String> {
    match found {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("no such {kind} {name:?} on this machine")),
        Err(e) => Err(format!("cannot look up {kind} {name:?}: {e}")),
    }
}

/// Why the daemon could not create and lock a pidfile at `path`, if it could not (`path` is
/// absolute). The directory may be missing when its parent exists: the daemon, started as
/// root, creates it.
pub(super) fn pidfile_problem(path: &Path) -> Option<String> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => return Some("is a directory".into()),
        Ok(m) if m.file_type().is_symlink() => {
            return Some("is a symbolic link, which idlereaper refuses to use as its pidfile".into())
        }
        _ => {}
    }
    let dir = path.parent()?;
    match is_dir(dir) {
        Ok(true) => None,
        Ok(false) => Some(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir.parent()?;
            match is_dir(parent) {
                Ok(true) => None, // created at start, as root
                _ => Some(format!(
                    "directory {} does not exist, nor does {}: create it, or choose another \
                     path (started as root, idlereaper creates the pidfile's directory, but not \
                     its parents)",
                    dir.display(),
                    parent.display()
                )),
            }
        }
        Err(e) => Some(format!("directory {}: {e}", dir.display())),
    }
}

/// Why the daemon could not open a log file at `path`, if it could not (`path` is absolute).
pub(super) fn log_file_problem(path: &Path) -> Option<String> {
    if path.is_dir() {
        return Some("is a directory".into());
    }
    let dir = path.parent()?;
    match is_dir(dir) {
        Ok(true) => None,
        Ok(false) => Some(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(format!(
            "directory {} does not exist: create it first (idlereaper creates the log file, not \
             its directory)",
            dir.display()
        )),
        Err(e) => Some(format!("directory {}: {e}", dir.display())),
    }
}

/// Whether `path` is a directory (following symbolic links, as `open` does).
fn is_dir(path: &Path) -> io::Result<bool> {
    path.metadata().map(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::tests::PATH;
    use super::super::{Config, ConfigError};
    use super::*;

    /// `Config::load` of `daemon` (the `[daemon]` table's lines, from line 2 on) and a listener,
    /// written to a file in `dir`; `DIR` in the text stands for `dir`.
    fn load(dir: &Path, daemon: &str, pidfile: Option<&Path>) -> Result<Config, ConfigError> {
        let daemon = daemon.replace("DIR", &dir.display().to_string());
        let text = format!(
            "[daemon]\n{daemon}\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\n\
             idle_timeout = \"1s\"\n"
        );
        let path = dir.join("idlereaper.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, pidfile)
    }

    /// A pidfile in `dir`, so that the default `/run/idlereaper` does not matter.
    fn pid(line: &str) -> String {
        format!("pidfile = \"DIR/x.pid\"\n{line}")
    }

    fn rejected(e: ConfigError, key: &str, line: Option<usize>, fragment: &str) -> ConfigError {
        assert_eq!((e.key.as_deref(), e.line), (Some(key), line), "{e}");
        assert!(e.message.contains(fragment), "{fragment:?} not in: {e}");
        e
    }

    #[test]
    fn users_and_groups_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ok = load(d, &pid("user = \"root\"\ngroup = \"root\""), None).unwrap().daemon;
        assert_eq!((ok.user.as_deref(), ok.group.as_deref()), (Some("root"), Some("root")));
        let e = load(d, &pid("user = \"no-such-user-idlereaper\""), None).unwrap_err();
        rejected(e, "daemon.user", Some(3), "no such user \"no-such-user-idlereaper\" on this machine");
        let e = load(d, &pid("user = \"root\"\ngroup = \"no-such-group-idlereaper\""), None).unwrap_err();
        rejected(e, "daemon.group", Some(4), "no such group \"no-such-group-idlereaper\"");
        let e = load(d, &pid("group = \"root\""), None).unwrap_err();
        let e = rejected(e, "daemon.group", Some(3), "is set without daemon.user");
        assert_eq!(e.column, Some(9));
    }

    #[test]
    fn the_pidfile_directory_must_exist_or_be_creatable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Missing, but its parent exists: the daemon creates it (as root).
        assert!(load(d, "pidfile = \"DIR/run/x.pid\"", None).is_ok());
        let e = load(d, "pidfile = \"DIR/a/b/x.pid\"", None).unwrap_err();
        let e = rejected(e, "daemon.pidfile", Some(2), "/a/b does not exist, nor does");
        assert!(e.to_string().contains(":2:11: daemon.pidfile: "), "{e}");
        std::fs::write(d.join("file"), "").unwrap();
        let e = load(d, "pidfile = \"DIR/file/x.pid\"", None).unwrap_err();
        rejected(e, "daemon.pidfile", Some(2), "/file is not a directory");
        std::fs::create_dir(d.join("dir.pid")).unwrap();
        let e = load(d, "pidfile = \"DIR/dir.pid\"", None).unwrap_err();
        rejected(e, "daemon.pidfile", Some(2), "dir.pid: is a directory");
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("link.pid")).unwrap();
        let e = load(d, "pidfile = \"DIR/link.pid\"", None).unwrap_err();
        rejected(e, "daemon.pidfile", Some(2), "is a symbolic link");
    }

    #[test]
    fn the_pidfile_option_replaces_the_key_and_is_checked_instead() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bad_key = "pidfile = \"DIR/a/b/x.pid\"";
        let good = d.join("ok.pid");
        assert_eq!(load(d, bad_key, Some(&good)).unwrap().daemon.pidfile, good);
        let bad: PathBuf = d.join("a/b/x.pid");
        let e = load(d, &pid(""), Some(&bad)).unwrap_err();
        rejected(e, "--pidfile", None, "does not exist");
    }

    #[test]
    fn a_log_file_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(load(d, &pid("log = \"DIR/idlereaper.log\""), None).is_ok());
        let e = load(d, &pid("log = \"DIR/logs/idlereaper.log\""), None).unwrap_err();
        rejected(e, "daemon.log", Some(3), "/logs does not exist: create it first");
        let e = load(d, &pid("log = \"DIR\""), None).unwrap_err();
        rejected(e, "daemon.log", Some(3), "is a directory");
    }

    #[test]
    fn parse_checks_the_text_alone() {
        let text = format!(
            "[daemon]\npidfile = \"/no/such/dir/x.pid\"\nuser = \"no-such-user-idlereaper\"\n\
             log = \"/no/such/dir/x.log\"\n{}",
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:7000\"\nidle_timeout = \"1s\"\n"
        );
        assert!(Config::parse(&text, Path::new(PATH)).is_ok());
    }
}
