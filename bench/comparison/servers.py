"""The real clients' servers: one PostgreSQL (bench/rig/postgres.py: initdb in a temporary
directory, run as the `postgres` user, fsync off: a benchmark, not a database) filled by
`pgbench -i`, and one redis-server without persistence (bench/rig/redis_server.py) holding the
key redis-benchmark's GETs read; on fixed loopback ports, shared by every relay and by "direct".
No system service is used."""

from rig.postgres import Postgres
from rig.redis_server import RedisServer

from .relays import PG_PORT, REDIS_PORT

# Appended after what rig/postgres.py writes: the last setting wins.
POSTGRESQL_CONF = f"""# bench/compare.py: appended to the postgresql.conf that initdb wrote (the rest: defaults).
listen_addresses = '127.0.0.1'
port = {PG_PORT}
unix_socket_directories = ''    # TCP on loopback only
max_connections = 200           # 8 clients; with -C, ended backends may linger a moment
# A benchmark, not a database: nothing is flushed to disk (pgbench -S only reads anyway).
fsync = off
synchronous_commit = off
full_page_writes = off
"""


class Servers:
    def __init__(self, run):
        self.run = run
        self.pg = None
        self.redis = None

    def start_postgres(self):
        """A fresh cluster on 127.0.0.1:PG_PORT, filled by pgbench -i; False (reported) on failure."""
        run, scale = self.run, self.run.settings.pgbench_scale
        try:
            self.pg = Postgres(run.procs, "127.0.0.1", PG_PORT)
            self.pg.init()
            with open(run.path("configs", "postgresql.conf"), "w") as f:
                f.write(POSTGRESQL_CONF)
            with open(f"{self.pg.data}/postgresql.conf", "a") as f:
                f.write(POSTGRESQL_CONF)
            self.pg.start()
        except RuntimeError as e:
            run.fail(f"PostgreSQL did not start on 127.0.0.1:{PG_PORT}: {str(e)[-300:]}".replace("\n", " "))
            return False
        argv = [
            self.pg.client("pgbench"),
            "-i",
            "-s",
            str(scale),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(PG_PORT),
        ]
        status, _ = run.tool("pgbench-init", [*argv, "-U", "postgres", "postgres"], 300)
        if status != 0:
            run.fail(f"PostgreSQL: pgbench -i -s {scale} failed: {run.err_tail('pgbench-init')}")
            return False
        return True

    def start_redis(self):
        """redis-server on 127.0.0.1:REDIS_PORT and the one key that redis-benchmark's GETs read
        (without -r every GET asks for the same key, this one); False (reported) on failure."""
        run = self.run
        self.redis = RedisServer(run.procs, "127.0.0.1", REDIS_PORT)
        with open(run.path("configs", "redis-server.txt"), "w") as f:
            f.write(" ".join(self.redis.argv()) + "\n")
        try:
            self.redis.start()
        except RuntimeError as e:
            run.fail(str(e).replace("\n", " "))
            return False
        if self.redis.cli("set", "key:__rand_int__", "xxx") != "OK":
            run.fail("redis-server: SET of the benchmark's key failed")
            return False
        return True

    def pgbench(self):
        return self.pg.client("pgbench")

    def close(self):
        """PostgreSQL gets a fast shutdown (INT ends its sessions; TERM would wait for them)."""
        if self.pg is not None:
            self.pg.close()
            self.pg = None
        if self.redis is not None:
            self.redis.close()
            self.redis = None
