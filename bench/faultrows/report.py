"""The fault table as Markdown: the table alone (printed after a run) and RELIABILITY.md (the
table, how each row is made, the exceptions, the machine and the command)."""

import time

COLUMN = {"idlereaper": "idlereaper", "haproxy": "HAProxy 2.6", "nginx": "nginx 1.22 (stream)"}


def _cell(results, row, kind):
    for r in results:
        if r["row"] == row.key and r["kind"] == kind:
            mark = ""
            if r["label"] == "known loss":
                mark = " **(known loss, see below)**"
            elif r["failed"]:
                mark = " **(FAILED)**"
            elif row.exception and kind == "idlereaper":
                mark = " (an exception, see below)"
            return r["text"].replace("|", "/") + mark
    if kind not in row.kinds:
        return row.peer_notes.get(kind, "does not apply")
    return "not run"


def table(rows, results, kinds):
    ran = {r["row"] for r in results}
    lines = ["| fault | " + " | ".join(COLUMN[k] for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    for row in rows:
        if row.key not in ran:
            continue
        lines.append(f"| {row.title} | " + " | ".join(_cell(results, row, k) for k in kinds) + " |")
    return "\n".join(lines)


def write(path, rows, results, kinds, about, args, elapsed):
    ran = [row for row in rows if any(r["row"] == row.key for r in results)]
    command = "flock /tmp/idlereaper-heavy.lock python3 bench/faults.py --write RELIABILITY.md"
    if args.short:
        command = command.replace("faults.py", "faults.py --short")
    out = [
        "# Reliability: idlereaper, HAProxy and nginx through the same faults",
        "",
        "What each fault costs a relay in front of a service: the bytes and connections lost, the",
        "connections closed early, and how long it took to notice. Every relay runs the same",
        "listeners, in front of the same upstreams, with the same timeouts, one thread each, inside",
        "network namespaces the run makes (a client host, a relay host and a server host joined by",
        "veth links). idlereaper's cells are judged (0 bytes lost, 0 closed early, the fault noticed",
        "within its bound); HAProxy's and nginx's are reported as measured.",
        "",
        f"Reproduce (as root, Debian 12, with haproxy, nginx, libnginx-mod-stream, postgresql, iptables "
        f"and iproute2 installed; about {max(1, round(elapsed / 60))} min):",
        "",
        "```sh",
        command,
        "```",
        "",
        "`python3 bench/faults.py --short` runs every row at a small size in a few minutes; CI runs",
        "it (`.ci/run`) and fails when an idlereaper cell fails.",
        "",
        "Reading a cell: *held* connections are idle ones opened before the fault and checked with a",
        "one-byte echo after it; *streams* carry seeded data both ways and are checked by SHA-256;",
        "*told by reset* means the peer still there saw ECONNRESET (it knows bytes may be lost),",
        "*told by FIN* an orderly end of stream, which a client that does not count its bytes takes",
        "for a complete answer; *closed early* means before the relay's own deadline.",
        "",
        "## The table",
        "",
        table(rows, results, kinds),
        "",
        "## How each row is made",
        "",
    ]
    # Rows that share a method (the loss rates, the vanished peers) are described once.
    groups = []
    for row in ran:
        if groups and groups[-1][0].method == row.method:
            groups[-1].append(row)
        else:
            groups.append([row])
    for group in groups:
        out.append(f"- **{'; '.join(r.title for r in group)}.** {group[0].method}")
        notes = {k: v for r in group for k, v in r.peer_notes.items()}
        for kind, note in notes.items():
            out.append(f"  {COLUMN[kind]}: {note}")
    known = [row for row in ran if row.known_loss]
    failed = [r for r in results if r["failed"]]
    inherent = [row for row in ran if row.exception and "idlereaper" in row.kinds]
    if known or failed or inherent:
        out += ["", "## Exceptions", ""]
        out += [
            "Where an idlereaper cell does not read 0 bytes lost and 0 closed early, this says why,",
            "and what it is judged on instead.",
            "",
        ]
        for text in dict.fromkeys(row.exception for row in inherent):  # rows that share one, once
            titles = "; ".join(row.title for row in inherent if row.exception == text)
            out.append(f"- **{titles}** (every relay): {text}")
        for row in known:
            out.append(f"- **{row.title}** (idlereaper): {row.known_loss}")
        for r in failed:
            title = next(row.title for row in rows if row.key == r["row"])
            out.append(f"- **{title}** (idlereaper) FAILED: {r['why'] or r['text']}")
    out += ["", "## The machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in about]
    out += [
        f"| run | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed / 60:.0f} minutes, "
        f"{'short' if args.short else 'full'} sizes, {args.profile} build |",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(out))
