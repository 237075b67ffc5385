//! Why the daemon's control socket could not be reached, in words that say what to do: a socket
//! that is not there (no daemon, or none with a `[control]` table), one nobody listens on, or
//! one this user may not open — then the socket's group, whether the user is in it, and how to
//! get in. Every message ends by naming `-s SOCKET`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{getegid, getgroups, Gid, Group, Uid, User};

/// The message for a connection to `socket` that failed with `e`.
pub fn unreachable(socket: &Path, e: &io::Error) -> String {
    let (why, todo) = match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => permission(socket),
        Some(libc::ENOENT) => (
            "no such socket (is idlereaper running, with a [control] table in its configuration?)".to_owned(),
            String::new(),
        ),
        Some(libc::ECONNREFUSED) => (
            "connection refused: no daemon listens on it (a socket file left behind by a daemon that \
             did not stop cleanly?)"
                .to_owned(),
            String::new(),
        ),
        _ => (e.to_string(), String::new()),
    };
    format!(
        "cannot reach the daemon at {}: {why}; {todo}give another socket with -s SOCKET",
        socket.display()
    )
}

/// A group's name, or its number.
fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// Whether this process is in group `gid`.
fn in_group(gid: u32) -> bool {
    let gid = Gid::from_raw(gid);
    getegid() == gid || getgroups().is_ok_and(|groups| groups.contains(&gid))
}

/// Permission denied on `socket` (or on a directory above it): whose it is, and how to get in
/// (to go before "give another socket").
fn permission(socket: &Path) -> (String, String) {
    // The socket itself, else the nearest directory above it that can be looked at.
    let (what, meta) = match std::fs::metadata(socket) {
        Ok(meta) => (socket, meta),
        Err(_) => {
            let mut dir = socket.parent();
            loop {
                match dir.map(|d| (d, std::fs::metadata(d))) {
                    Some((d, Ok(meta))) => break (d, meta),
                    Some((d, Err(_))) => dir = d.parent(),
                    None => return ("permission denied".to_owned(), "run as root, or ".to_owned()),
                }
            }
        }
    };
    let (group, mode) = (group_name(meta.gid()), meta.mode() & 0o777);
    let owner = format!("{} belongs to {}:{group}, mode {mode:04o}", what.display(), user_name(meta.uid()));
    if in_group(meta.gid()) {
        return (
            format!("permission denied: {owner}, and you are in group {group}"),
            "run as root, or ".to_owned(),
        );
    }
    let me = User::from_uid(Uid::effective()).ok().flatten().map_or_else(|| "USER".to_owned(), |u| u.name);
    (
        format!("permission denied: {owner}, and you are not in group {group}"),
        format!("run as root or as a member of {group} (adduser {me} {group}, then log in again), or "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_says_what_to_do_and_names_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let gone = unreachable(&socket, &io::Error::from_raw_os_error(libc::ENOENT));
        assert!(gone.contains("no such socket") && gone.contains(&socket.display().to_string()), "{gone}");
        let refused = unreachable(&socket, &io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(refused.contains("no daemon listens"), "{refused}");
        std::fs::write(&socket, "").unwrap();
        let denied = unreachable(&socket, &io::Error::from_raw_os_error(libc::EACCES));
        let group = group_name(std::fs::metadata(&socket).unwrap().gid());
        assert!(denied.contains("permission denied") && denied.contains(&group), "{denied}");
        for message in [gone, refused, denied] {
            assert!(
                message.ends_with("; give another socket with -s SOCKET")
                    || message.ends_with(", or give another socket with -s SOCKET"),
                "{message}"
            );
        }
    }
}
