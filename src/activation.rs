//! Sockets systemd passes (socket activation, `sd_listen_fds(3)`): a listener whose `listen` is
//! `systemd:NAME` takes the socket named NAME instead of binding one.
//!
//! systemd passes `LISTEN_FDS` descriptors from 3 on, names them in `LISTEN_FDNAMES` (`:`
//! separated; a socket unit's `FileDescriptorName=`, by default its own name), and sets
//! `LISTEN_PID` to the pid they are meant for: variables inherited by another process (a
//! program that did not unset them) are not ours, and neither are those descriptors.
//! [`Inherited::take`] reads the three variables and unsets them, whatever they say (so that no
//! child — the upgrade's guardian, the new image — takes the descriptors again: the new image
//! gets its listeners from the upgrade's state), and makes every passed descriptor
//! close-on-exec. It runs first at start, while descriptors 3 and up are still only what the
//! process inherited. A passed socket that no listener names is closed, with a warning.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, SockRef, Type};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST: RawFd = 3;
/// More than any socket unit passes; a larger `LISTEN_FDS` is not believed.
const MAX_PASSED: usize = 1024;

/// The sockets systemd passed to this process, by name.
#[derive(Debug, Default)]
pub struct Inherited {
    /// In descriptor order: the name, the number, and the socket until a listener takes it.
    passed: Vec<(String, RawFd, Option<OwnedFd>)>,
    /// Why none were passed, said when a listener asks for one.
    none_because: Option<String>,
}

impl Inherited {
    /// Takes what systemd passed to this process and unsets `LISTEN_PID`, `LISTEN_FDS` and
    /// `LISTEN_FDNAMES`. Call it while the process has one thread and before it opens anything
    /// it keeps.
    pub fn take() -> Inherited {
        let var = |name: &str| std::env::var(name).ok();
        let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(name);
        }
        let passed = match parse(pid.as_deref(), fds.as_deref(), names.as_deref(), std::process::id()) {
            Ok(passed) => passed,
            Err(why) => return Inherited { passed: Vec::new(), none_because: Some(why) },
        };
        let mut inherited = Inherited::default();
        for (fd, name) in passed {
            match crate::os::sys::adopt(fd) {
                Ok(socket) => inherited.passed.push((name, fd, Some(socket))),
                Err(e) => {
                    let why = format!("LISTEN_FDS names descriptor {fd} ({name:?}), which is not open: {e}");
                    inherited.none_because = Some(why);
                }
            }
        }
        inherited
    }

    /// The socket passed as `name`, for one listener; or why there is none (exactly one must
    /// carry the name: a listener listens on one socket).
    pub fn take_named(&mut self, name: &str) -> Result<OwnedFd, String> {
        let mut named = self.passed.iter_mut().filter(|(n, _, _)| n == name);
        let (first, more) = (named.next(), named.count());
        match first {
            Some(_) if more > 0 => Err(format!(
                "systemd passed {} sockets named {name:?} (LISTEN_FDNAMES): a listener takes one; give \
                 each socket a .socket unit (or a FileDescriptorName=) of its own and a listener each",
                more + 1
            )),
            Some((_, fd, socket)) => socket
                .take()
                .ok_or_else(|| format!("the socket systemd passed as {name:?} (descriptor {fd}) is taken")),
            None => Err(format!("systemd passed no socket named {name:?}: {}", self.what_was_passed())),
        }
    }

    /// Closes the passed sockets no listener took, returning a warning for each.
    pub fn close_the_rest(self) -> Vec<String> {
        self.passed
            .into_iter()
            .filter(|(_, _, socket)| socket.is_some())
            .map(|(name, fd, _)| {
                format!(
                    "systemd passed a socket named {name:?} (descriptor {fd}) that no listener takes \
                     (listen = \"systemd:{name}\"): closed"
                )
            })
            .collect()
    }

    fn what_was_passed(&self) -> String {
        if let Some(why) = &self.none_because {
            return why.clone();
        }
        let names: Vec<String> =
            self.passed.iter().map(|(n, fd, _)| format!("{n:?} (descriptor {fd})")).collect();
        match names.is_empty() {
            true => "it passed none".to_owned(),
            false => format!("it passed {}", names.join(", ")),
        }
    }
}

/// The descriptors and names the three variables give this process (pid `me`), or why none:
/// not set (not started by systemd's socket activation), meant for another process, or not
/// what `sd_listen_fds(3)` specifies. A descriptor without a name is `"unknown"`, as
/// `sd_listen_fds_with_names(3)` calls it.
fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Vec<(RawFd, String)>, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Err("LISTEN_PID and LISTEN_FDS are not set: idlereaper was not started by a systemd \
                    .socket unit (or systemd-socket-activate)"
            .to_owned());
    };
    match pid.parse::<u32>() {
        Ok(pid) if pid == me => {}
        Ok(pid) => return Err(format!("LISTEN_PID={pid} is another process's (this is {me})")),
        Err(_) => return Err(format!("LISTEN_PID={pid:?} is not a process id")),
    }
    let count = match fds.parse::<usize>() {
        Ok(n) if n <= MAX_PASSED => n,
        _ => return Err(format!("LISTEN_FDS={fds:?} is not a count of descriptors (0 to {MAX_PASSED})")),
    };
    let mut names = names.map(|n| n.split(':').collect::<Vec<_>>()).unwrap_or_default().into_iter();
    Ok((0..count)
        .map(|i| (FIRST + i as RawFd, names.next().filter(|n| !n.is_empty()).unwrap_or("unknown").to_owned()))
        .collect())
}

/// Checks that a passed socket is a listening stream socket (TCP or Unix), makes it
/// non-blocking and, for TCP, sets `TCP_NODELAY` on it (accepted sockets inherit it, as for a
/// socket the daemon binds). Returns it and whether it is a Unix socket.
pub fn listening(socket: OwnedFd) -> Result<(OwnedFd, bool), String> {
    let sock = SockRef::from(&socket);
    let unix = is_unix(socket.as_fd()).map_err(|e| e.to_string())?;
    match sock.r#type() {
        Ok(t) if t == Type::STREAM => {}
        Ok(_) => return Err("is not a stream socket (ListenStream= makes one)".to_owned()),
        Err(e) => return Err(format!("is not a socket: {e}")),
    }
    if !sock.is_listener().map_err(|e| e.to_string())? {
        return Err("is not listening (Accept=no passes the listening socket)".to_owned());
    }
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    if !unix {
        sock.set_tcp_nodelay(true).map_err(|e| e.to_string())?;
    }
    Ok((socket, unix))
}

/// Whether a socket is a Unix one (`SO_DOMAIN`); an error for another family than TCP's.
pub fn is_unix(socket: BorrowedFd<'_>) -> std::io::Result<bool> {
    match SockRef::from(&socket).domain()? {
        d if d == Domain::UNIX => Ok(true),
        d if d == Domain::IPV4 || d == Domain::IPV6 => Ok(false),
        _ => Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "neither an IP nor a Unix socket")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_are_read_as_sd_listen_fds_reads_them() {
        let me = 4242;
        let passed = parse(Some("4242"), Some("3"), Some("web:admin"), me).unwrap();
        let expected = [(3, "web"), (4, "admin"), (5, "unknown")].map(|(fd, n)| (fd, n.to_owned()));
        assert_eq!(passed, expected, "a descriptor without a name is \"unknown\"");
        assert_eq!(parse(Some("4242"), Some("1"), None, me).unwrap(), [(3, "unknown".to_owned())]);
        assert_eq!(parse(Some("4242"), Some("0"), Some(""), me).unwrap(), []);
        let why = |pid, fds| parse(pid, fds, None, me).unwrap_err();
        assert!(why(None, None).contains("not set"));
        assert!(why(Some("4242"), None).contains("not set"));
        assert!(why(Some("1"), Some("1")).contains("another process's"));
        assert!(why(Some("x"), Some("1")).contains("not a process id"));
        assert!(why(Some("4242"), Some("-1")).contains("not a count"));
        assert!(why(Some("4242"), Some("100000")).contains("not a count"));
    }

    #[test]
    fn a_listener_takes_the_one_socket_of_its_name() {
        let socket = |_| OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let mut inherited = Inherited {
            passed: vec![
                ("web".into(), 7, Some(socket(()))),
                ("twice".into(), 8, Some(socket(()))),
                ("twice".into(), 9, Some(socket(()))),
                ("spare".into(), 10, Some(socket(()))),
            ],
            none_because: None,
        };
        assert!(inherited.take_named("web").is_ok());
        assert!(inherited.take_named("web").unwrap_err().contains("is taken"));
        assert!(inherited.take_named("twice").unwrap_err().contains("passed 2 sockets named \"twice\""));
        let missing = inherited.take_named("db").unwrap_err();
        assert!(
            missing.contains("no socket named \"db\"") && missing.contains("\"spare\" (descriptor 10)"),
            "{missing}"
        );
        let rest = inherited.close_the_rest();
        assert_eq!(rest.len(), 3, "both \"twice\" and \"spare\": {rest:?}");
        assert!(rest[2].contains("\"spare\"") && rest[2].contains("listen = \"systemd:spare\""));
        let mut none = Inherited { passed: Vec::new(), none_because: Some("LISTEN_PID … not set".into()) };
        assert!(none.take_named("web").unwrap_err().ends_with("LISTEN_PID … not set"));
    }

    #[test]
    fn only_a_listening_stream_socket_is_taken() {
        let tcp = OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        assert!(matches!(listening(tcp), Ok((_, false))));
        let dir = tempfile::tempdir().unwrap();
        let unix = OwnedFd::from(std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap());
        assert!(matches!(listening(unix), Ok((_, true))));
        let udp = OwnedFd::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        assert!(listening(udp).unwrap_err().contains("not a stream socket"));
        let unbound = OwnedFd::from(socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap());
        assert!(listening(unbound).unwrap_err().contains("not listening"));
        let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert!(listening(file).is_err(), "not a socket");
    }
}
