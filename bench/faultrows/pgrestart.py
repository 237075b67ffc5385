"""PostgreSQL restarted under sessions that run through the relay: every session must hear the
server's own goodbye (FATAL 57P01, `terminating connection due to administrator command`)
rather than a bare end of stream, and new sessions must get through as soon as the server is
back."""

import subprocess
import time

from rig import netns
from rig import procs as P
from rig.postgres import Postgres

from .common import Cell, Row, fmt_s

PG_PORT = 5432  # inside the server namespace: nothing else listens there
GOODBYE = "terminating connection due to administrator command"


def _cluster(ctx):
    """One cluster for the run, on the server host, made on first use."""
    pg = getattr(ctx, "postgres", None)
    if pg is None:
        pg = Postgres(ctx.procs, netns.SERVER, PG_PORT, ctx.hosts.server.name)
        ctx.run_scope.callback(pg.close)
        pg.init().start()
        ctx.postgres = pg
        ctx.procs.run(
            "pgbench-init",
            [
                pg.client("pgbench"),
                "-i",
                "-s",
                "1",
                "-q",
                "-h",
                netns.SERVER,
                "-p",
                str(PG_PORT),
                "-U",
                "postgres",
                "postgres",
            ],
            120,
            netns=ctx.hosts.server.name,
        )
    elif pg.proc is None:
        pg.start()
    return pg


def _log(ctx, name):
    with open(ctx.procs.log_path(name), errors="replace") as f:
        return f.read()


def run(ctx, kind):
    s = ctx.size
    pg = _cluster(ctx)
    lst = ctx.listener(kind, 0, "pg", 60.0)
    lst.upstream = f"{netns.SERVER}:{PG_PORT}"
    ctx.relay(kind, [lst], "pg")
    host, port = lst.listen.rsplit(":", 1)
    conn = ["-X", "-h", host, "-p", port, "-U", "postgres", "-d", "postgres"]
    cn = ctx.hosts.client.name
    psql = pg.client("psql")
    busy, idle = [], []
    for i in range(s["pg_sessions"]):
        busy.append(
            ctx.procs.start(f"{kind}-psql-busy-{i}", [psql, *conn, "-c", "select pg_sleep(60)"], netns=cn)
        )
        with open(ctx.procs.log_path(f"{kind}-psql-idle-{i}.out"), "wb") as out:
            p = ctx.procs.start(
                f"{kind}-psql-idle-{i}", [psql, *conn], netns=cn, stdin=subprocess.PIPE, stdout=out
            )
        p.stdin.write(b"select 1 as ready;\n")
        p.stdin.flush()
        idle.append(p)
    clients = s["pgbench_clients"]
    bench = ctx.procs.start(
        f"{kind}-pgbench",
        [
            pg.client("pgbench"),
            "-S",
            "-c",
            str(clients),
            "-j",
            "1",
            "-T",
            "60",
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "postgres",
        ],
        netns=cn,
    )
    for p in busy + idle + [bench]:
        ctx.scope.callback(ctx.procs.stop, p, 2.0)
    ready = P.wait_until(
        lambda: all("(1 row)" in _log(ctx, f"{kind}-psql-idle-{i}.out") for i in range(len(idle))), 15
    )
    if not ready:
        raise RuntimeError("the idle psql sessions did not answer through the relay")
    time.sleep(1.5)  # the busy sessions sleep inside the server; pgbench runs

    pg.stop()
    pg.start()
    up = time.monotonic()
    back = P.wait_until(
        lambda: (
            ctx.procs.run(f"{kind}-psql-probe", [psql, *conn, "-c", "select 1"], 10, netns=cn, check=False)[0]
            == 0
        ),
        20,
        0.1,
    )
    back_s = time.monotonic() - up if back else None
    for p in idle:
        try:
            p.stdin.write(b"select 2;\n")
            p.stdin.close()
        except OSError:
            pass
    for p in busy + idle + [bench]:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ctx.procs.stop(p, 1.0)
    told = sum(
        GOODBYE in _log(ctx, f"{kind}-psql-{w}-{i}") for w in ("busy", "idle") for i in range(len(busy))
    )
    told += min(clients, _log(ctx, f"{kind}-pgbench").count(GOODBYE))
    total = 2 * len(busy) + clients
    text = f"{told}/{total} sessions told by PostgreSQL (57P01); "
    text += (
        f"new sessions {fmt_s(back_s)} after it was back"
        if back_s is not None
        else "no new session within 20 s"
    )
    data = {"told": told, "sessions": total, "back_s": back_s}
    if kind != "idlereaper":
        return Cell(text, None, "", data)
    ok = told == total and back_s is not None and back_s < 5
    return Cell(text, ok, "" if ok else "a session missed the server's FATAL, or no new session", data)


def rows():
    return [
        Row(
            "pg-restart",
            "upstream restarted mid-session (PostgreSQL)",
            run,
            "A PostgreSQL cluster of the run's own (initdb, fsync off) on the server host; through the "
            "relay: psql sessions inside `select pg_sleep(60)`, psql sessions idle between two "
            "statements, and `pgbench -S` clients (2 of each in the short run, 4 in the full). The "
            "server is restarted (fast shutdown: it tells every session FATAL 57P01, then closes). A "
            "session counts as told when its client printed PostgreSQL's own message; a relay that "
            "dropped the last bytes before the close would leave only `server closed the connection "
            "unexpectedly`. Then a new `psql -c 'select 1'` through the relay every 0.1 s: the figure "
            "is from the server accepting again to the first session through the relay.",
        )
    ]
