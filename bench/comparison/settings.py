"""The knobs of bench/compare.py, from the environment, with SCALE's sizes; checked before
anything runs (a bad value: a message and exit status 2)."""

import os
import re
from dataclasses import dataclass

ALL_SCENARIOS = "hold reap bulk pingpong churn pgbench redis upgrade protocols"
ALL_RELAYS = "idlereaper haproxy nginx"
KNOWN_RELAYS = ("idlereaper", "haproxy", "nginx", "haproxy-auto")

# Sizes per SCALE; any of them may be set in the environment instead.
SIZES = {
    "full": {
        "REPS": "3",
        "HOLD_N": "9000",
        "HOLD_SECS": "30",
        "HOLD_CURVE": "1000 3000",
        "HOLD_CURVE_SECS": "5",
        "REAP_CONNS": "2000",
        "BULK_SECS": "10",
        "CHURN_SECS": "10",
        "PING_COUNT": "20000",
        "PGBENCH_SECS": "10",
        "REDIS_N_P16": "2000000",
        "REDIS_N_P1": "300000",
        "UPGRADE_CONNS": "9000",
        "UPGRADE_WAIT": "10",
        "PROTO_HOLD_N": "5000",
        "PROTO_HOLD_SECS": "5",
        "PROTO_HOLD_REPS": "2",
        "BIGVALUE_MB": "100",
    },
    "smoke": {
        "REPS": "1",
        "HOLD_N": "50",
        "HOLD_SECS": "2",
        "HOLD_CURVE": "20",
        "HOLD_CURVE_SECS": "1",
        "REAP_CONNS": "50",
        "BULK_SECS": "2",
        "CHURN_SECS": "2",
        "PING_COUNT": "1000",
        "PGBENCH_SECS": "2",
        "REDIS_N_P16": "20000",
        "REDIS_N_P1": "5000",
        "UPGRADE_CONNS": "500",
        "UPGRADE_WAIT": "2",
        "PROTO_HOLD_N": "50",
        "PROTO_HOLD_SECS": "1",
        "PROTO_HOLD_REPS": "1",
        "BIGVALUE_MB": "10",
    },
}
# The same at every scale. pgbench -i -s 10 takes about a second here; smoke runs use it too.
COMMON = {
    "REAP_TIMEOUT": "2s",
    "CHURN_THREADS": "4",
    "INSTALL": "1",
    "BUILD": "1",
    "PUBLISH": "auto",
    "PUBLISH_DIR": "",
    "PGBENCH_SCALE": "10",
    "BIGVALUE_ROUNDS": "3",
}
# The idle timeout of the listeners other than reap's: longer than any scenario.
LONG_TIMEOUT = "10m"
INTEGERS = (
    "REPS HOLD_N HOLD_SECS HOLD_CURVE_SECS REAP_CONNS BULK_SECS CHURN_SECS PING_COUNT PGBENCH_SECS "
    "REDIS_N_P16 REDIS_N_P1 UPGRADE_CONNS PROTO_HOLD_N PROTO_HOLD_SECS PROTO_HOLD_REPS BIGVALUE_MB "
    "UPGRADE_WAIT CHURN_THREADS PGBENCH_SCALE BIGVALUE_ROUNDS"
).split()


class BadSetting(Exception):
    """A knob with a value compare.py cannot use; the message says which and why."""


@dataclass
class Settings:
    """The knobs: `settings.hold_n` is HOLD_N (a number for the sizes and counts, text for the
    others: REAP_TIMEOUT, PUBLISH…)."""

    scale: str
    relays: list  # in the order given
    scenarios: list
    workers: str  # "" when unset
    only: str  # ONLY as given ("" when unset)
    values: dict  # every other knob, as text

    def __getattr__(self, name):
        values = self.__dict__.get("values", {})
        key = name.upper()
        if key in values:
            return int(values[key]) if key in INTEGERS else values[key]
        raise AttributeError(name)

    @property
    def threads(self):
        """Threads (HAProxy) or worker processes (nginx) of the peers: WORKERS, or 1."""
        return int(self.workers or 1)

    @property
    def hold_curve(self):
        return [int(n) for n in self.values["HOLD_CURVE"].split()]

    def has(self, scenario):
        return scenario in self.scenarios

    def needs_postgres(self):
        return self.has("pgbench") or self.has("protocols")

    def needs_redis(self):
        return self.has("redis") or self.has("protocols")


def from_env(env=None):
    env = os.environ if env is None else env
    scale = env.get("SCALE") or "full"
    if scale not in SIZES:
        raise BadSetting(f"SCALE must be full or smoke, not '{scale}'")
    values = {}
    for key, default in {**SIZES[scale], **COMMON}.items():
        # HOLD_CURVE may be set empty (no curve); the others fall back when empty.
        values[key] = env.get(key, default) if key == "HOLD_CURVE" else (env.get(key) or default)
    for key in INTEGERS:
        if not re.fullmatch(r"[0-9]+", values[key]):
            raise BadSetting(f"{key} must be a whole number (got '{values[key]}')")
    for n in values["HOLD_CURVE"].split():
        if not n.isdigit():
            raise BadSetting(f"HOLD_CURVE must be numbers of connections (got '{values['HOLD_CURVE']}')")
    # PUBLISH_DIR names the directory under bench/results/ that publishing replaces: a plain name.
    if values["PUBLISH_DIR"] and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", values["PUBLISH_DIR"]):
        raise BadSetting(f"PUBLISH_DIR must be a plain directory name, not '{values['PUBLISH_DIR']}'")
    workers = env.get("WORKERS") or ""
    if workers and not re.fullmatch(r"[1-9][0-9]*", workers):
        raise BadSetting(f"WORKERS must be a positive integer (got '{workers}')")
    default_relays = ALL_RELAYS + (" haproxy-auto" if scale == "full" and not workers else "")
    only = env.get("ONLY") or ""
    relays = (only or default_relays).replace(",", " ").split()
    for r in relays:
        if r not in KNOWN_RELAYS:
            raise BadSetting(f"unknown relay '{r}' in ONLY ({' '.join(KNOWN_RELAYS)})")
    scenarios = (env.get("SCENARIOS") or ALL_SCENARIOS).split()
    for s in scenarios:
        if s not in ALL_SCENARIOS.split():
            raise BadSetting(f"unknown scenario '{s}' ({ALL_SCENARIOS})")
    return Settings(scale, relays, scenarios, workers, only, values)
