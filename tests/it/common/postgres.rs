//! The test's own PostgreSQL cluster ([`Postgres`]) and its client tools, `psql` and `pgbench`.
//!
//! PostgreSQL refuses to run as root, and CI runs the tests as root: there `initdb` and the server
//! run as the `postgres` system user (its uid and gid set in the child: no wrapper process between
//! the test and the server it stops), in a temp directory owned by that user; any other user runs
//! them as itself. The clients run as the test's user and log in as `postgres`, which
//! `initdb --auth=trust -U postgres` lets in without a password over TCP and the Unix socket.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::User;

use super::services::{free_localhost_port, Server, START_TRIES};
use super::{
    ipv6_loopback_available, require, require_program, run_tool, Endpoint, ServiceAddrs, ToolRun,
    SERVICES_INSTALL,
};

/// Where Debian installs the server's versions, one directory each (`15/bin/postgres`).
const VERSIONS_DIR: &str = "/usr/lib/postgresql";
/// How long `initdb` and `psql` may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);

/// The test's own cluster: TCP on 127.0.0.1 (and ::1), its Unix socket in its temp directory,
/// a database [`Postgres::DATABASE`], and fsync off.
pub struct Postgres {
    pub addr: SocketAddr,
    /// The Unix socket, `.s.PGSQL.<port>` in the cluster's directory (what the daemon's upstream
    /// names).
    pub socket: PathBuf,
    bin: PathBuf,
    server: Server,
}

impl Postgres {
    /// The database the tests use.
    pub const DATABASE: &str = "idlereaper";

    /// The `bin` directory of the newest installed server version, if any.
    pub fn bin_dir() -> Option<PathBuf> {
        let versions = fs::read_dir(VERSIONS_DIR).ok()?.flatten();
        let mut found: Vec<(u32, PathBuf)> = versions
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("postgres").exists())
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    }

    /// Creates a cluster, starts its server and creates the test database; `None` (the test
    /// skipped, see [`require_program`]) if PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        Postgres::start_as(false)
    }

    /// [`Postgres::start`], with `ssl=on` and a self-signed certificate made for it with
    /// `openssl` (`None` if that is missing too).
    pub fn start_with_tls() -> Option<Postgres> {
        if !require_program(OPENSSL, "apt-get install openssl") {
            return None;
        }
        Postgres::start_as(true)
    }

    fn start_as(tls: bool) -> Option<Postgres> {
        let bin = Postgres::bin_dir().unwrap_or_else(|| Path::new(VERSIONS_DIR).join("<version>/bin"));
        let programs = ["postgres", "initdb", "pg_isready", "psql", "pgbench"];
        if !programs.iter().all(|p| require_program(&bin.join(p).to_string_lossy(), SERVICES_INSTALL)) {
            return None;
        }
        let user = if nix::unistd::geteuid().is_root() {
            let user = User::from_name("postgres").ok().flatten();
            if !require(
                "the postgres system user (root runs PostgreSQL as it)",
                user.is_some(),
                SERVICES_INSTALL,
            ) {
                return None;
            }
            user
        } else {
            None
        };
        let mut failures = Vec::new();
        for _ in 0..START_TRIES {
            match Postgres::try_start(&bin, user.as_ref(), tls) {
                Ok(pg) => return Some(pg),
                Err(log) => failures.push(log),
            }
        }
        panic!("postgres did not start in {START_TRIES} tries:\n{}", failures.join("\n"));
    }

    /// Starts a cluster, run by `user` (root's stand-in) or else by the test's own user; with
    /// `tls`, a certificate for it first.
    fn try_start(bin: &Path, user: Option<&User>, tls: bool) -> Result<Postgres, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(user) = user {
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .expect("chown the cluster's temp dir");
        }
        let data = dir.path().join("data");
        let as_postgres = |program: &str| {
            let mut command = Command::new(bin.join(program));
            if let Some(user) = user {
                command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            }
            command.current_dir(dir.path()).stdin(Stdio::null());
            command
        };
        let mut initdb = as_postgres("initdb");
        initdb.arg("-D").arg(&data).args(["--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        run_tool(initdb.arg("--locale=C"), dir.path(), TOOL_DEADLINE).assert_success("initdb");

        let ssl = match tls {
            true => certificate(dir.path(), user),
            false => Vec::new(),
        };
        let port = free_localhost_port();
        let listen = if ipv6_loopback_available() { "127.0.0.1,::1" } else { "127.0.0.1" };
        let log = dir.path().join("postgres.log");
        let log_file = fs::File::create(&log).unwrap();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-p", &port.to_string(), "-c", &format!("listen_addresses={listen}"), "-c", "fsync=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
            .args(&ssl)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("{}/postgres: {e}", bin.display()));
        let mut server = Server { name: "postgres", child, log, stop_signal: libc::SIGQUIT, dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let pg_isready = bin.join("pg_isready");
        server.wait_ready(|| {
            let mut probe = Command::new(&pg_isready);
            probe.args(["-q", "-t", "2", "-h", "127.0.0.1", "-p", &port.to_string()]);
            probe.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            probe.status().is_ok_and(|s| s.success())
        })?;
        let socket = server.dir.path().join(format!(".s.PGSQL.{port}"));
        let pg = Postgres { addr, socket, bin: bin.to_path_buf(), server };
        pg.psql_in("postgres", &format!("CREATE DATABASE {}", Postgres::DATABASE));
        Ok(pg)
    }

    /// Where this server answers.
    pub fn addrs(&self) -> ServiceAddrs {
        ServiceAddrs { tcp: self.addr, unix: self.socket.clone() }
    }

    /// The name a Unix socket in front of this server must have for `psql -h <dir> -p <port>`
    /// to find it: `.s.PGSQL.<port>`.
    pub fn socket_name(&self) -> String {
        format!(".s.PGSQL.{}", self.addr.port())
    }

    /// Runs `sql` straight over the Unix socket in the test database; its unaligned, tuples-only
    /// output (`psql -XAt`), or a panic if it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(Postgres::DATABASE, sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        let mut command = self.tool("psql");
        command
            .args(pg_target(&Endpoint::Unix(self.socket.clone())))
            .args(["-U", "postgres", "-d", database]);
        command.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        let run = run_tool(&mut command, self.dir(), TOOL_DEADLINE);
        run.assert_success(&format!("psql -c {sql:?}"));
        run.stdout
    }

    /// `psql -X -U postgres -d <test database>` to `to`, for the caller to complete and spawn.
    pub fn psql_command(&self, to: &Endpoint) -> Command {
        let mut command = self.tool("psql");
        command.args(pg_target(to)).args(["-X", "-U", "postgres", "-d", Postgres::DATABASE]);
        command
    }

    /// `pgbench <args>` on the test database at `to`, within `timeout`.
    pub fn pgbench(&self, to: &Endpoint, args: &[&str], timeout: Duration) -> ToolRun {
        let mut command = self.tool("pgbench");
        command.args(pg_target(to)).args(["-U", "postgres"]).args(args).arg(Postgres::DATABASE);
        run_tool(&mut command, self.dir(), timeout)
    }

    /// A directory for the output of the test's tools (removed with the cluster).
    pub fn dir(&self) -> &Path {
        self.server.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        command.stdin(Stdio::null()).env_remove("PGOPTIONS").env_remove("PGSERVICE");
        command
    }
}

/// Where `openssl` is.
const OPENSSL: &str = "/usr/bin/openssl";

/// A self-signed certificate and its key in `dir`, readable by `user` (the server's) only, and
/// the server options that turn TLS on with them.
fn certificate(dir: &Path, user: Option<&User>) -> Vec<String> {
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    let mut openssl = Command::new(OPENSSL);
    openssl.args([
        "req",
        "-new",
        "-x509",
        "-days",
        "2",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-newkey",
        "rsa:2048",
    ]);
    openssl.arg("-keyout").arg(&key).arg("-out").arg(&crt);
    run_tool(&mut openssl, dir, TOOL_DEADLINE).assert_success("openssl req");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod the key");
    if let Some(user) = user {
        for file in [&crt, &key] {
            nix::unistd::chown(file, Some(user.uid), Some(user.gid)).expect("chown the certificate");
        }
    }
    let option = |name: &str, path: &Path| ["-c".to_owned(), format!("{name}={}", path.display())];
    let mut args = vec!["-c".to_owned(), "ssl=on".to_owned()];
    args.extend(option("ssl_cert_file", &crt));
    args.extend(option("ssl_key_file", &key));
    args
}

/// The `-h <host> -p <port>` that make `psql` or `pgbench` connect to `to`. A Unix socket must
/// be named `.s.PGSQL.<port>`: the tools take its directory and the port.
pub fn pg_target(to: &Endpoint) -> [String; 4] {
    let (host, port) = match to {
        Endpoint::Tcp(addr) => (addr.ip().to_string(), addr.port().to_string()),
        Endpoint::Unix(path) => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let port = name.strip_prefix(".s.PGSQL.").unwrap_or_else(|| {
                panic!("{}: a PostgreSQL socket is named .s.PGSQL.<port>", path.display())
            });
            (path.parent().unwrap().display().to_string(), port.to_string())
        }
    };
    ["-h".into(), host, "-p".into(), port]
}

/// What `pgbench` reports after a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PgbenchSummary {
    /// `number of transactions actually processed: N`.
    pub processed: u64,
    /// `number of failed transactions: N (x%)` (PostgreSQL 15 and later).
    pub failed: Option<u64>,
    /// `tps = X (...)`.
    pub tps: f64,
}

impl PgbenchSummary {
    /// Parses pgbench's stdout; `None` if a line it always prints is missing.
    pub fn parse(stdout: &str) -> Option<PgbenchSummary> {
        let after = |prefix: &str| stdout.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim));
        let first_word = |s: &str| s.split(['/', ' ']).next().unwrap_or_default().to_string();
        let processed = first_word(after("number of transactions actually processed:")?).parse().ok()?;
        let failed = after("number of failed transactions:").and_then(|s| first_word(s).parse().ok());
        let tps = first_word(after("tps =")?).parse().ok()?;
        Some(PgbenchSummary { processed, failed, tps })
    }
}
