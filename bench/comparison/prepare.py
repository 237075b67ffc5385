"""What must be there before a run of bench/compare.py, and what the machine is.

`install` adds what is missing (haproxy, nginx, libnginx-mod-stream, iperf3, matplotlib; for the
real-client scenarios postgresql and redis-server, redis-tools) unless INSTALL=0. The packages
may start their services (ports 80/8404, PostgreSQL's 5432, redis's 6379): harmless, and not
ours to stop; the run starts its own servers on its own ports. `build` makes the release
binaries (unless BUILD=0) and copies them into the run (a rebuild during the run cannot change
what is measured). `descriptors` raises the limit to the hard one: each relayed connection is two
descriptors in the relay. `machine_txt` writes machine.txt: machine, versions, commit, sizes.
"""

import os
import platform
import resource
import shutil
import subprocess
import sys

from rig.machine import pg_bin

from .settings import BadSetting

PG_PROGRAMS = ("initdb", "postgres", "pgbench", "pg_isready")


class Missing(Exception):
    """Something the run needs is not there; the message says what."""


def complete_pg_bin():
    """rig's PostgreSQL programs directory when it has all four programs used here, else None."""
    b = pg_bin()
    return b if b and all(os.access(f"{b}/{p}", os.X_OK) for p in PG_PROGRAMS) else None


def missing_packages(s):
    need = [p for p in ("haproxy", "nginx", "iperf3") if not shutil.which(p)]
    if not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        need.append("libnginx-mod-stream")
    if s.needs_postgres() and not complete_pg_bin():
        need.append("postgresql")
    if s.needs_redis():
        if not shutil.which("redis-server"):
            need.append("redis-server")
        if not (shutil.which("redis-benchmark") and shutil.which("redis-cli")):
            need.append("redis-tools")
    return need


def apt(run, args, limit_s):
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Bounded: another apt-get holding the dpkg lock is waited for up to 2 minutes.
    argv = ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args]
    with open(run.path("logs", "apt.log"), "ab") as log:
        try:
            return subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, timeout=limit_s
            ).returncode
        except subprocess.TimeoutExpired:
            return 124


def install(run):
    s = run.settings
    need = missing_packages(s)
    if need:
        if s.install != "1":
            raise Missing(f"missing {' '.join(need)} and INSTALL=0")
        run.say(f"installing {' '.join(need)}")
        apt(run, ["update", "-qq"], 600)
        if apt(run, ["install", "-y", "-qq", "--no-install-recommends", *need], 900) != 0:
            raise Missing(f"apt-get install {' '.join(need)} failed (see {run.path('logs', 'apt.log')})")
    if s.needs_postgres():
        run.pg_bin = complete_pg_bin()
        if not run.pg_bin:
            raise Missing(f"PostgreSQL's {', '.join(PG_PROGRAMS)} missing under /usr/lib/postgresql/*/bin")
        if os.geteuid() == 0 and not has_user("postgres"):
            raise Missing("no 'postgres' user to run PostgreSQL as (it refuses to run as root)")
    if s.needs_redis():
        for b in ("redis-server", "redis-benchmark", "redis-cli"):
            if not shutil.which(b):
                raise Missing(f"{b} is missing (packages redis-server, redis-tools)")
    run.python = matplotlib_python(run)


def has_user(name):
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def imports_matplotlib(python):
    try:
        return (
            subprocess.run([python, "-c", "import matplotlib"], capture_output=True, timeout=60).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def matplotlib_python(run):
    """The interpreter report.py runs with: one that imports matplotlib (installed if missing)."""
    py = sys.executable
    if imports_matplotlib(py):
        return py
    if run.settings.install == "1":
        run.say("installing matplotlib")
        with open(run.path("logs", "pip.log"), "ab") as log:
            pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"]
            subprocess.run(pip, stdout=log, stderr=log, timeout=900, check=False)
        if not imports_matplotlib(py):
            apt(run, ["install", "-y", "-qq", "python3-matplotlib"], 900)
            py = "/usr/bin/python3"
    if not imports_matplotlib(py):
        raise Missing(f"matplotlib is not importable by {py} (see {run.path('logs', 'pip.log')})")
    return py


def build(run):
    if run.settings.build == "1":
        run.say("cargo build --release")
        with open(run.path("logs", "build.log"), "wb") as log:
            done = subprocess.run(
                ["cargo", "build", "--release", "--bins"], cwd=run.root, stdout=log, stderr=log
            )
        if done.returncode != 0:
            with open(run.path("logs", "build.log"), errors="replace") as f:
                sys.stderr.write("".join(f.readlines()[-30:]))
            raise Missing("build failed")
    for b in ("idlereaper", "loadgen"):
        shutil.copy2(os.path.join(run.root, "target", "release", b), run.path("bin", b))


def descriptors(s):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for key, n in (
        ("HOLD_N", s.hold_n),
        *((("UPGRADE_CONNS", s.upgrade_conns),) if s.has("upgrade") else ()),
    ):
        if n * 2 + 200 > hard:
            raise BadSetting(f"{key}={n} needs {n * 2 + 200} descriptors, the limit is {hard}")
    return hard


def first_line(argv):
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).decode(errors="replace").splitlines()
    return lines[0] if lines else ""


def cpuinfo(key):
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return ""


def sysctl(key):
    try:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return "?"


def machine_txt(run, stamp, fd_limit):
    s, v = run.settings, run.settings.values
    with open("/proc/meminfo") as f:
        mem = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except OSError:
        debian = "?"
    git = ["git", "-C", run.root]
    dirty = (
        subprocess.run(
            [*git, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
            capture_output=True,
            timeout=60,
        )
        .stdout.decode()
        .splitlines()
    )
    redis = first_line(["redis-server", "-v"]).split(" v=")[-1].split()[0] if s.needs_redis() else ""
    lines = [
        f"date_utc={stamp}",
        f'scale={s.scale} reps={s.reps} workers={s.workers or "unset"} relays="{" ".join(s.relays)}" '
        f'scenarios="{" ".join(s.scenarios)}"',
        f'hold_n={s.hold_n} hold_secs={s.hold_secs} hold_curve="{v["HOLD_CURVE"]}" hold_curve_secs={s.hold_curve_secs}',
        f"reap_conns={s.reap_conns} reap_timeout={s.reap_timeout} bulk_secs={s.bulk_secs} churn_secs={s.churn_secs} "
        f"churn_threads={s.churn_threads} ping_count={s.ping_count}",
        f"upgrade_conns={s.upgrade_conns} upgrade_wait={s.upgrade_wait}",
        f"nproc={len(os.sched_getaffinity(0))}",
        f"cpu={cpuinfo('model name')}",
        f"cpu_mhz={cpuinfo('cpu MHz')}",
        f"cpu_cache={cpuinfo('cache size')}",
        f"virtual_machine={'yes' if 'hypervisor' in cpuinfo('flags').split() else 'no'}",
        f"kernel={platform.release()}",
        f"mem_total={mem / 1048576:.1f} GiB",
        f"debian={debian}",
        f"fd_limit={fd_limit}",
        f"haproxy={first_line(['haproxy', '-v'])}",
        f"nginx={first_line(['nginx', '-v'])}",
        f"iperf3={first_line(['iperf3', '-v'])}",
        *(
            [
                f"postgres={first_line([run.pg_bin + '/postgres', '-V'])}",
                f"pgbench_secs={s.pgbench_secs} pgbench_scale={s.pgbench_scale}",
            ]
            if s.needs_postgres()
            else []
        ),
        *(
            [f"redis={redis}", f"redis_n_p16={s.redis_n_p16} redis_n_p1={s.redis_n_p1}"]
            if s.needs_redis()
            else []
        ),
        f"rustc={first_line(['rustc', '-V'])}",
        f"python={first_line([run.python, '--version'])} matplotlib="
        f"{first_line([run.python, '-c', 'import matplotlib; print(matplotlib.__version__)'])}",
        f"commit={first_line([*git, 'rev-parse', '--short', 'HEAD'])}",
        f"src_dirty_files={len(dirty)}",
        f"sysctl_tcp_tw_reuse={sysctl('net.ipv4.tcp_tw_reuse')}",
        f"sysctl_somaxconn={sysctl('net.core.somaxconn')}",
    ]
    with open(run.path("machine.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
