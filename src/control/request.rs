//! The control protocol's requests: one line of words, as `idlereaperctl`'s arguments are
//! written (`show conns --listener pg --idle-over 5m --json`). Parsing is strict: an unknown
//! word is an error that names it, so a typo never means "everything".

use crate::worker::{ClientMatch, Query, Selector};

/// What a control client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The open connections `query` chooses, soonest to be reaped first.
    ShowConns { query: Query, json: bool },
    /// The listeners in force, with their counters.
    ShowListeners { json: bool },
    /// The daemon: version, pid, uptime, configuration, workers, the last reload and upgrade.
    ShowInfo { json: bool },
    /// The configuration in force, as TOML (or JSON).
    ShowConfig { json: bool },
    /// Close connections at once.
    Kill(Selector),
    /// Reload the configuration file, and say how it went.
    Reload,
    /// Upgrade in place (as SIGUSR2), and say how it went.
    Upgrade,
    /// Take an upstream address out of a listener's choice for new connections (`disable`), or
    /// put it back (`enable`).
    Upstream { listener: String, address: String, disable: bool },
    /// Whether the daemon answers: `pong`.
    Ping,
    /// The commands.
    Help,
}

/// What `help` answers.
pub const HELP: &str = "\
show conns [--listener NAME] [--idle-over DURATION] [--limit N] [--json]
show listeners [--json]
show info [--json]
show config [--json]
kill ID... | kill --client IP[:PORT] | kill --listener NAME
upstream disable|enable LISTENER ADDRESS
reload
upgrade
ping
help
";

/// What `show` shows.
const SUBJECTS: &str = "conns, listeners, info, config";

/// Reads one request line (without its newline).
pub fn parse(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["show", "conns", rest @ ..] => {
            let (mut query, mut json) = (Query::default(), false);
            let mut rest = rest.iter();
            while let Some(&word) = rest.next() {
                match word {
                    "--json" => json = true,
                    "--listener" => query.listener = Some(value(word, rest.next())?.to_owned()),
                    "--idle-over" => {
                        let text = value(word, rest.next())?;
                        query.idle_over = humantime::parse_duration(text)
                            .map_err(|e| format!("--idle-over {text:?}: {e} (write \"30s\", \"5m\")"))?;
                    }
                    "--limit" => {
                        let text = value(word, rest.next())?;
                        match text.parse::<usize>() {
                            Ok(n) if n > 0 => query.limit = Some(n),
                            _ => return Err(format!("--limit {text:?}: expected a count of at least 1")),
                        }
                    }
                    other => return Err(format!("show conns: unknown option {other:?}")),
                }
            }
            Ok(Request::ShowConns { query, json })
        }
        ["show", subject @ ("listeners" | "info" | "config"), rest @ ..] => {
            let json = match rest {
                [] => false,
                ["--json"] => true,
                [other, ..] => return Err(format!("show {subject}: unknown option {other:?}")),
            };
            Ok(match *subject {
                "listeners" => Request::ShowListeners { json },
                "info" => Request::ShowInfo { json },
                _ => Request::ShowConfig { json },
            })
        }
        ["show", other, ..] => Err(format!("show: unknown subject {other:?} ({SUBJECTS})")),
        ["show"] => Err(format!("show: what? ({SUBJECTS})")),
        ["kill", "--client", address] => {
            let matched = match (address.parse(), address.parse()) {
                (Ok(addr), _) => ClientMatch::Exact(addr),
                (_, Ok(ip)) => ClientMatch::Address(ip),
                _ => return Err(format!("kill --client {address:?}: expected IP or IP:port")),
            };
            Ok(Request::Kill(Selector::Client(matched)))
        }
        ["kill", "--listener", name] => Ok(Request::Kill(Selector::Listener((*name).to_owned()))),
        ["kill"] => Err("kill: which? (IDs, --client IP[:PORT] or --listener NAME)".to_owned()),
        ["kill", ids @ ..] => {
            let ids = ids
                .iter()
                .map(|id| id.parse::<u64>().map_err(|_| format!("kill: {id:?} is not a connection id")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Request::Kill(Selector::Ids(ids)))
        }
        ["upstream", action @ ("disable" | "enable"), listener, address] => Ok(Request::Upstream {
            listener: (*listener).to_owned(),
            address: (*address).to_owned(),
            disable: *action == "disable",
        }),
        ["upstream", ..] => Err("upstream: disable|enable LISTENER ADDRESS".to_owned()),
        ["reload"] => Ok(Request::Reload),
        ["upgrade"] => Ok(Request::Upgrade),
        ["ping"] => Ok(Request::Ping),
        ["help"] => Ok(Request::Help),
        [command @ ("reload" | "upgrade" | "ping" | "help"), ..] => {
            Err(format!("{command} takes nothing after it"))
        }
        [] => Err("empty request (try \"help\")".to_owned()),
        [other, ..] => {
            let shown: String = other.chars().take(40).collect();
            Err(format!("unknown command {shown:?} (try \"help\")"))
        }
    }
}

fn value<'a>(option: &str, next: Option<&&'a str>) -> Result<&'a str, String> {
    next.copied().ok_or_else(|| format!("{option} needs a value"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_command_reads_and_mistakes_are_named() {
        assert_eq!(
            parse("show conns --listener pg --idle-over 5m --limit 20 --json"),
            Ok(Request::ShowConns {
                query: Query {
                    listener: Some("pg".into()),
                    idle_over: Duration::from_secs(300),
                    limit: Some(20)
                },
                json: true
            })
        );
        assert_eq!(parse("show conns"), Ok(Request::ShowConns { query: Query::default(), json: false }));
        assert_eq!(parse("  show   listeners --json "), Ok(Request::ShowListeners { json: true }));
        assert_eq!(parse("show info"), Ok(Request::ShowInfo { json: false }));
        assert_eq!(parse("show config --json"), Ok(Request::ShowConfig { json: true }));
        assert_eq!(parse("kill 3 17"), Ok(Request::Kill(Selector::Ids(vec![3, 17]))));
        assert_eq!(
            parse("kill --client 127.0.0.1:4000"),
            Ok(Request::Kill(Selector::Client(ClientMatch::Exact("127.0.0.1:4000".parse().unwrap()))))
        );
        assert_eq!(
            parse("kill --client ::1"),
            Ok(Request::Kill(Selector::Client(ClientMatch::Address("::1".parse().unwrap()))))
        );
        assert_eq!(parse("kill --listener pg"), Ok(Request::Kill(Selector::Listener("pg".into()))));
        assert_eq!(
            parse("upstream disable pg 10.0.9.5:5432"),
            Ok(Request::Upstream { listener: "pg".into(), address: "10.0.9.5:5432".into(), disable: true })
        );
        assert_eq!(
            parse("upstream enable pg unix:/run/pg.sock"),
            Ok(Request::Upstream {
                listener: "pg".into(),
                address: "unix:/run/pg.sock".into(),
                disable: false
            })
        );
        assert_eq!(parse("reload"), Ok(Request::Reload));
        assert_eq!(parse("upgrade"), Ok(Request::Upgrade));
        assert_eq!(parse("ping"), Ok(Request::Ping));
        for (line, says) in [
            ("", "empty"),
            ("show conns --json --bogus", "--bogus"),
            ("show conns --listener", "needs a value"),
            ("show conns --idle-over soon", "--idle-over"),
            ("show conns --limit 0", "at least 1"),
            ("show conns --limit many", "at least 1"),
            ("show conns --limit", "needs a value"),
            ("show sessions", "sessions"),
            ("show info --yaml", "show info: unknown option \"--yaml\""),
            ("kill 3 x", "\"x\" is not a connection id"),
            ("kill --client somewhere", "expected IP"),
            ("reboot", "unknown command \"reboot\""),
            ("reload now", "reload takes nothing after it"),
            ("upstream drain pg 10.0.9.5:5432", "disable|enable LISTENER ADDRESS"),
            ("upstream disable pg", "disable|enable LISTENER ADDRESS"),
            ("upstream enable pg a b", "disable|enable LISTENER ADDRESS"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(says), "{line:?}: {e}");
        }
    }
}
