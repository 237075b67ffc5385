//! How the process was invoked, for a live upgrade to execute it again: the path it was started
//! as (`argv[0]` made absolute, symbolic links kept) and the arguments it was given.

use std::path::PathBuf;

use crate::handover::{exec, guardian};

/// The arguments the process was started with, without the `--handover FD` of an upgrade and
/// the `--handover-guard FD PID PIDFD` of its guardian.
pub(super) fn started_args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    for (option, values) in [(exec::HANDOVER_ARG, 1), (guardian::GUARD_ARG, 3)] {
        if let Some(at) = args.iter().position(|a| a == option) {
            args.drain(at..(at + 1 + values).min(args.len()));
        }
    }
    args
}

/// The path this process was started as (`argv[0]`, see [`named_path`]). This is what an
/// upgrade executes, resolved only then, so that a daemon started as
/// `/opt/idlereaper/current/idlereaper` upgrades to whatever `current` points to by then. If that
/// path is not the file running (a launcher that set another `argv[0]`), the file running, as
/// resolved now.
pub(super) fn invoked_as() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    let named = named_path(&argv0, std::env::var_os("PATH").as_deref());
    let running = std::fs::metadata("/proc/self/exe").ok();
    let same = |path: &PathBuf| match (std::fs::metadata(path), &running) {
        (Ok(named), Some(running)) => named.dev() == running.dev() && named.ino() == running.ino(),
        _ => false,
    };
    named.filter(same).or_else(|| std::env::current_exe().ok())
}

/// The file `argv0` names, absolute but with its symbolic links kept: one with a slash against
/// the current directory, a bare name the first executable of that name on `path` (`PATH`).
fn named_path(argv0: &std::path::Path, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let found = match argv0.as_os_str().as_bytes().contains(&b'/') {
        true => Some(argv0.to_path_buf()),
        false => std::env::split_paths(path?)
            .map(|dir| dir.join(argv0))
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)),
    };
    std::path::absolute(found?).ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::named_path;

    #[test]
    fn the_path_started_as_is_made_absolute_without_resolving_links() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, link) = (dir.path().join("bin"), dir.path().join("current"));
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        let exe = bin.join("idlereaper");
        std::fs::write(&exe, "").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let through = link.join("idlereaper");
        assert_eq!(named_path(&through, None), Some(through.clone()), "the link is kept");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(named_path(Path::new("./x/idlereaper"), None), Some(cwd.join("x/idlereaper")));
        let path = std::env::join_paths([dir.path().join("none"), link.clone()]).unwrap();
        assert_eq!(named_path(Path::new("idlereaper"), Some(&path)), Some(through), "found on PATH");
        assert_eq!(named_path(Path::new("idlereaper"), None), None, "no PATH");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(named_path(Path::new("idlereaper"), Some(&path)), None, "not executable");
    }
}
