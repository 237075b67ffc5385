//! The checks across listeners — unique names, unique `listen` addresses, no relay that reaches
//! itself — and the one line per listener that `idlereaper --check` prints.

use std::time::Duration;

use super::address::{Listen, Upstream};
use super::locate::{Source, Span};
use super::{Backoff, Balance, IdleClose, ListenerConfig, Protocol, Res};
use crate::proxy_protocol::Version as ProxyVersion;

/// A validated listener and where its values were, for the checks across listeners.
pub(super) struct Checked {
    pub(super) config: ListenerConfig,
    pub(super) name_span: Span,
    pub(super) listen_span: Span,
    /// Of each `upstream` entry.
    pub(super) upstream_spans: Vec<Span>,
}

/// Names and `listen` addresses are unique; the error points at the second occurrence.
pub(super) fn unique(src: &Source, listeners: &[Checked]) -> Res<()> {
    for (j, b) in listeners.iter().enumerate() {
        let (earlier, name, listen) = (&listeners[..j], &b.config.name, &b.config.listen);
        if let Some(i) = earlier.iter().position(|a| a.config.name == *name) {
            let line = src.line_of(&listeners[i].name_span);
            let msg = format!("duplicate name {name:?}: already used by listener[{i}] at line {line}");
            return Err(src.error(b.name_span.clone(), &format!("listener[{j}].name"), msg));
        }
        if let Some(i) = earlier.iter().position(|a| a.config.listen == *listen) {
            let a = &listeners[i];
            let (line, first) = (src.line_of(&a.listen_span), &a.config.name);
            let msg = format!(
                "duplicate address {listen}: already used by listener[{i}] ({first:?}) at line {line}"
            );
            return Err(src.error(b.listen_span.clone(), &format!("listener[{j}].listen"), msg));
        }
    }
    Ok(())
}

/// Whether connecting to `up` reaches a listener on `listen`: the same address or socket path,
/// or the wildcard address of its family when `up` is a loopback address with the same port.
/// Host names are not resolved here (they are at start, and may change): not a loop.
fn reaches(up: &Upstream, listen: &Listen) -> bool {
    match (up, listen) {
        (Upstream::Ip(up), Listen::Tcp(listen)) => {
            let wildcard = listen.ip().is_unspecified() && up.ip().is_loopback();
            up == listen || (up.port() == listen.port() && up.is_ipv4() == listen.is_ipv4() && wildcard)
        }
        (Upstream::Unix(up), Listen::Unix(listen)) => up == listen,
        _ => false,
    }
}

/// No relay may reach itself, directly or through other listeners of this file: its connections
/// would multiply until `max_connections` ran out.
pub(super) fn no_loops(src: &Source, listeners: &[Checked]) -> Res<()> {
    let targets = |up: &Upstream| -> Vec<usize> {
        listeners.iter().enumerate().filter(|(_, t)| reaches(up, &t.config.listen)).map(|(n, _)| n).collect()
    };
    for (start, l) in listeners.iter().enumerate() {
        for (entry, up) in l.config.upstream.iter().enumerate() {
            // Breadth-first from what this entry reaches, each listener visited once; `from`
            // keeps the way back for the message.
            let mut from: Vec<Option<usize>> = vec![None; listeners.len()];
            let mut queue: std::collections::VecDeque<usize> = targets(up).into();
            for &n in &queue {
                from[n] = Some(start);
            }
            while let Some(at) = queue.pop_front() {
                if at == start {
                    let mut path = vec![start];
                    let mut back = from[start];
                    while let Some(p) = back.filter(|_| path.len() <= listeners.len()) {
                        path.push(p);
                        back = if p == start { None } else { from[p] };
                    }
                    path.reverse();
                    let names: Vec<&str> = path.iter().map(|&i| listeners[i].config.name.as_str()).collect();
                    let listen = &l.config.listen;
                    let own = match (up, listen) {
                        (Upstream::Ip(u), Listen::Tcp(t)) => u == t,
                        (Upstream::Unix(_), _) => true,
                        _ => false,
                    };
                    let msg = match path.len() {
                        2 if own => format!("{up} is this listener's own address"),
                        2 => format!("{up} reaches this listener's own address {listen}"),
                        _ => format!("{up} leads back to this listener: {}", names.join(" -> ")),
                    };
                    let msg = format!("{msg}; connections would loop");
                    let key = l.config.upstream_key(start, entry);
                    return Err(src.error(l.upstream_spans[entry].clone(), &key, msg));
                }
                for next_up in &listeners[at].config.upstream {
                    for n in targets(next_up) {
                        if from[n].is_none() {
                            from[n] = Some(at);
                            queue.push_back(n);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

impl ListenerConfig {
    /// The key that names upstream entry `entry` of listener `index` in an error:
    /// `listener[0].upstream` for a single address, `listener[0].upstream[1]` in a list.
    pub fn upstream_key(&self, index: usize, entry: usize) -> String {
        match self.upstream.len() {
            1 => format!("listener[{index}].upstream"),
            _ => format!("listener[{index}].upstream[{entry}]"),
        }
    }

    /// One line for `idlereaper --check`: the addresses, a relay's protocol, the idle timers
    /// and the connection limit, then `half_close_timeout` (on by default, so always shown for
    /// a relay), then the other settings only when they are not the default.
    pub fn summary(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let mut line = self.summary_head();
        let mut add = |part: String| {
            line.push_str(", ");
            line.push_str(&part);
        };
        match &self.listen {
            Listen::Unix(_) => add(format!("socket_mode {:04o}", self.socket_mode)),
            // Nothing to check now: systemd passes it to the daemon it starts.
            Listen::Systemd(name) => add(format!("the socket systemd passes as {name:?}, taken at start")),
            Listen::Tcp(_) => {}
        }
        if self.upstream.len() > 1 || self.balance != Balance::First {
            add(format!("balance {}", if self.balance == Balance::First { "first" } else { "round_robin" }));
        }
        // Passive health chooses among addresses: worth saying where there is a choice.
        if !self.upstream.is_empty()
            && (self.upstream.len() > 1 || self.upstream_backoff != Some(Backoff::default()))
        {
            match self.upstream_backoff {
                None => add("upstream_backoff off".to_owned()),
                Some(b) => add(format!("upstream_backoff {}, upstream_backoff_max {}", d(b.first), d(b.max))),
            }
        }
        if let Some(lifetime) = self.max_lifetime {
            add(format!("max_lifetime {}", d(lifetime)));
        }
        if !self.upstream.is_empty() {
            add(format!("half_close_timeout {}", self.half_close_timeout.map_or("off".to_owned(), d)));
        }
        if self.max_connections_per_ip > 0 {
            add(format!("max_connections_per_ip {}", self.max_connections_per_ip));
        }
        for (key, nets) in [("allow", &self.allow), ("deny", &self.deny)] {
            match nets.len() {
                0 => {}
                1 => add(format!("{key} 1 network")),
                n => add(format!("{key} {n} networks")),
            }
        }
        if let Some(keepalive) = self.tcp_keepalive {
            add(format!("tcp_keepalive {}", d(keepalive)));
        }
        if let Some(version) = self.proxy_protocol {
            add(format!("proxy_protocol {}", if version == ProxyVersion::V1 { "v1" } else { "v2" }));
        }
        if let Some(timeout) = self.tcp_user_timeout {
            add(format!("tcp_user_timeout {}", d(timeout)));
        }
        if self.idle_close == IdleClose::Rst {
            add("idle_close rst".to_owned());
        }
        if let Some(notice) = &self.idle_notice {
            add(format!("idle_notice {} bytes", notice.len()));
        }
        line
    }

    /// The start of the `--check` line: the addresses, a relay's protocol and its timer, the
    /// idle and connect timeouts, and the connection limit.
    fn summary_head(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let (name, listen, idle, max) =
            (&self.name, &self.listen, d(self.idle_timeout), self.max_connections);
        if self.upstream.is_empty() {
            return format!("listener {name}: {listen} sink, idle_timeout {idle}, max_connections {max}");
        }
        let ups: Vec<String> = self.upstream.iter().map(Upstream::to_string).collect();
        let timers = match self.protocol {
            Protocol::Tcp => String::new(),
            Protocol::Postgres => {
                format!(", idle_in_transaction_timeout {}", d(self.idle_in_transaction_timeout))
            }
            Protocol::Redis => {
                let never = "never".to_owned();
                format!(", subscriber_idle_timeout {}", self.subscriber_idle_timeout.map_or(never, d))
            }
        };
        format!(
            "listener {name}: {listen} -> {} relay, protocol {}, idle_timeout {idle}{timers}, \
             connect_timeout {}, max_connections {max}",
            ups.join(", "),
            self.protocol.as_str(),
            d(self.connect_timeout)
        )
    }
}
