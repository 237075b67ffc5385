//! The address forms of the configuration: where a listener listens (`IP:port`,
//! `[IPv6]:port`, `unix:/absolute/path`, or `systemd:NAME`, a socket systemd passes) and where a
//! relay connects (those but `systemd:`, or `host:port` with a DNS name, resolved at start and
//! then every `daemon.resolve_interval`). Each parser
//! returns the message that completes `"<text>" …` for the caller's positioned error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Longest Unix socket path: `sun_path` holds 108 bytes, the last for the NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    Tcp(SocketAddr),
    /// A Unix stream socket file.
    Unix(PathBuf),
    /// The listening socket systemd passes under this name (`FileDescriptorName=` of a
    /// `.socket` unit; `LISTEN_FDNAMES`), taken at start instead of binding.
    Systemd(String),
}

/// The longest name `LISTEN_FDNAMES` may carry (systemd's `FDNAME_MAX`).
pub const MAX_FDNAME: usize = 255;

/// One upstream address, as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    Ip(SocketAddr),
    /// A DNS name and a port: every address it resolves to, in the resolver's order.
    Host {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
            Listen::Systemd(name) => write!(f, "systemd:{name}"),
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Ip(addr) => write!(f, "{addr}"),
            Upstream::Host { host, port } => write!(f, "{host}:{port}"),
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Listen {
    /// The TCP address, for a TCP listener.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Listen::Tcp(addr) => Some(*addr),
            Listen::Unix(_) | Listen::Systemd(_) => None,
        }
    }
}

/// `IP:port`, `[IPv6]:port`, `unix:/path` or `systemd:NAME`.
pub fn listen(text: &str) -> Result<Listen, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return unix_path(path).map(Listen::Unix);
    }
    if let Some(name) = text.strip_prefix("systemd:") {
        return fdname(name).map(|name| Listen::Systemd(name.to_owned()));
    }
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err("port 0 is not allowed".into()),
        Ok(addr) => Ok(Listen::Tcp(addr)),
        Err(_) => Err("is not an address to listen on: expected \"IP:port\", \"[IPv6]:port\", \
                       \"unix:/absolute/path\" or \"systemd:NAME\""
            .into()),
    }
}

/// The name of `systemd:NAME`, as systemd allows it in `LISTEN_FDNAMES` (printable ASCII
/// without `:`, at most [`MAX_FDNAME`] characters), and not empty.
fn fdname(name: &str) -> Result<&str, String> {
    if name.is_empty() {
        return Err("has no name after \"systemd:\": write \"systemd:NAME\", NAME being the socket's \
                    FileDescriptorName= (by default the .socket unit's name)"
            .into());
    }
    if let Some(c) = name.chars().find(|&c| c == ':' || !(' '..='~').contains(&c)) {
        return Err(format!(
            "has {c:?} in its name: systemd names a socket with printable ASCII characters other than ':'"
        ));
    }
    if name.len() > MAX_FDNAME {
        return Err(format!("has a name of {} characters: systemd allows at most {MAX_FDNAME}", name.len()));
    }
    Ok(name)
}

/// `IP:port`, `[IPv6]:port`, `host:port` or `unix:/path`.
pub fn upstream(text: &str) -> Result<Upstream, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return unix_path(path).map(Upstream::Unix);
    }
    let expected = "expected \"IP:port\", \"[IPv6]:port\", \"host:port\" or \"unix:/absolute/path\"";
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return match addr {
            a if a.port() == 0 => Err("port 0 is not allowed".into()),
            a if a.ip().is_unspecified() => Err("is not an address to connect to".into()),
            a => Ok(Upstream::Ip(a)),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("has no port: {expected}"));
    };
    let port = match port.parse::<u16>() {
        Ok(0) => return Err("port 0 is not allowed".into()),
        Ok(p) if port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(format!("has no valid port (1 to 65535) after the last ':': {expected}")),
    };
    if !is_host_name(host) {
        return Err(format!("is not an address or a host name: {expected}"));
    }
    Ok(Upstream::Host { host: host.to_ascii_lowercase(), port })
}

/// A DNS name: dot-separated labels of letters, digits and hyphens (not at a label's ends), at
/// most 253 characters; not all digits and dots (that would be a malformed IPv4 address).
fn is_host_name(host: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(label)
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The path of `unix:<path>`: absolute, at most [`MAX_UNIX_PATH`] bytes, no NUL.
pub(super) fn unix_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("has no path after \"unix:\": write \"unix:/absolute/path\"".into());
    }
    if !Path::new(path).is_absolute() {
        return Err("is a relative path: a Unix socket path must be absolute (\"unix:/run/app.sock\")".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path.len() > MAX_UNIX_PATH {
        return Err(format!(
            "is a path of {} bytes: a Unix socket path holds at most {MAX_UNIX_PATH}",
            path.len()
        ));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_forms_of_an_upstream() {
        assert_eq!(upstream("127.0.0.1:6379"), Ok(Upstream::Ip("127.0.0.1:6379".parse().unwrap())));
        assert_eq!(upstream("[::1]:5432"), Ok(Upstream::Ip("[::1]:5432".parse().unwrap())));
        let host = Upstream::Host { host: "db1.internal".into(), port: 5432 };
        assert_eq!(upstream("DB1.internal:5432"), Ok(host));
        let unix = Upstream::Unix("/var/run/postgresql/.s.PGSQL.5432".into());
        assert_eq!(upstream("unix:/var/run/postgresql/.s.PGSQL.5432"), Ok(unix));
    }

    #[test]
    fn bad_upstreams_say_why() {
        let why = |t: &str| upstream(t).unwrap_err();
        assert!(why("unix:").contains("no path"));
        assert!(why("unix:run/app.sock").contains("relative"));
        assert!(why(&format!("unix:/{}", "a".repeat(107))).contains("108 bytes"));
        assert!(why("localhost:0").contains("port 0"));
        assert!(why("127.0.0.1:0").contains("port 0"));
        assert!(why("0.0.0.0:80").contains("not an address to connect to"));
        assert!(why("localhost").contains("no port"));
        assert!(why("localhost:http").contains("no valid port"));
        assert!(why("bad_name:80").contains("not an address or a host name"));
        assert!(why("1.2.3:80").contains("not an address or a host name"));
        assert!(why("-a.b:80").contains("not an address or a host name"));
    }

    #[test]
    fn listeners_take_ip_or_unix_only() {
        assert_eq!(listen("unix:/run/a.sock"), Ok(Listen::Unix("/run/a.sock".into())));
        assert_eq!(listen("127.0.0.1:7000").map(|l| l.tcp()), Ok(Some("127.0.0.1:7000".parse().unwrap())));
        assert!(listen("localhost:7000").unwrap_err().contains("not an address to listen on"));
        assert!(listen("[::]:0").unwrap_err().contains("port 0"));
        assert_eq!(format!("{}", Listen::Unix("/x.sock".into())), "unix:/x.sock");
    }

    #[test]
    fn a_listener_may_take_a_socket_systemd_passes_by_name() {
        let systemd = Listen::Systemd("idlereaper.socket".into());
        assert_eq!(listen("systemd:idlereaper.socket"), Ok(systemd.clone()));
        assert_eq!((systemd.to_string(), systemd.tcp()), ("systemd:idlereaper.socket".to_owned(), None));
        assert_eq!(listen("systemd:web 1"), Ok(Listen::Systemd("web 1".into())), "a space is allowed");
        let why = |t: &str| listen(t).unwrap_err();
        assert!(why("systemd:").contains("no name"));
        assert!(why("systemd:a:b").contains("':'"));
        assert!(why("systemd:caf\u{e9}").contains("printable ASCII"));
        assert!(why(&format!("systemd:{}", "a".repeat(256))).contains("at most 255"));
        assert!(listen(&format!("systemd:{}", "a".repeat(255))).is_ok());
        assert!(why("sd:web").contains("\"systemd:NAME\""), "named in the expected forms");
    }
}
