"""Results: samples per (row, target), medians over rounds, ratios to nginx and to the registry,
verdicts against the targets, and the markdown table. Pure except machine() and print_report()."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Union

from .common import (ALL_TARGETS, DIRECT, GATE, LABEL, NGX_OFF, NGX_ON, REPO, XFER_USER, BenchError,
                     log)

# A sample: a number, or a tuple (p50/p99 latency; (largest process, sum) for memory), or None.
Value = Union[float, int, tuple, None]


@dataclass
class RowSpec:
    """One line of the table. `better` is "up" or "down"; `target` is the text the verdict reads."""

    key: str
    title: str
    unit: str
    better: str
    target: str | None = None
    group: str | None = None


@dataclass
class Row(RowSpec):
    """A RowSpec with its medians per target, the samples, ratios and the verdict."""

    median: dict[str, Value] = field(default_factory=dict)
    samples: dict[str, list[Value]] = field(default_factory=dict)
    nginx_best: str | None = None
    ratio_nginx: float | None = None
    ratio_direct: float | None = None
    verdict: str | None = None


class Results:
    """Samples per (row key, target), in the order the rows were declared."""

    def __init__(self) -> None:
        self.rows: dict[str, RowSpec] = {}
        self.order: list[str] = []
        self.samples: dict[tuple[str, str], list[Value]] = {}
        self.errors: list[str] = []

    def row(self, key: str, title: str, unit: str, better: str, target_text: str | None = None,
            group: str | None = None) -> None:
        if key not in self.rows:
            self.rows[key] = RowSpec(key, title, unit, better, target_text, group)
            self.order.append(key)

    def add(self, key: str, target: str, value: Value) -> None:
        self.samples.setdefault((key, target), []).append(value)

    def err(self, what: str, e: object) -> None:
        msg = f"{what}: {e}"
        self.errors.append(msg)
        log("ERROR " + msg)

    def median(self, key: str, target: str) -> Value:
        return median(self.samples.get((key, target), []))


def median(vals: list[Value]) -> Value:
    """Median of the non-None samples; tuples are taken column by column."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    if isinstance(vals[0], (list, tuple)):
        cols = [[v[i] for v in vals if v[i] is not None] for i in range(len(vals[0]))]
        return tuple(statistics.median(c) if c else None for c in cols)
    return statistics.median(vals)


def scalar(v: Value) -> float | None:
    """The number a ratio uses: p99 for latency, the sum of processes for memory."""
    if isinstance(v, (tuple, list)):
        return v[1]
    return v


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or not b:
        return None
    return a / b


def summarize(res: Results) -> list[Row]:
    """Rows with medians, ratios and verdicts, in display order. The nginx reference is the
    better of buffering on / off per row (higher for "up" rows, lower for "down" rows)."""
    out: list[Row] = []
    by_key: dict[str, Row] = {}
    for key in res.order:
        row = Row(**asdict(res.rows[key]))
        med = {t: res.median(key, t) for t in ALL_TARGETS}
        row.median = med
        row.samples = {t: res.samples[(key, t)] for t in ALL_TARGETS if res.samples.get((key, t))}
        up = row.better == "up"
        ngx = [(t, scalar(med[t])) for t in (NGX_ON, NGX_OFF) if scalar(med[t]) is not None]
        g = scalar(med[GATE])
        if ngx:
            best_t, best = (max if up else min)(ngx, key=lambda x: x[1])
            row.nginx_best = best_t
            row.ratio_nginx = ratio(g, best)
        row.ratio_direct = ratio(g, scalar(med[DIRECT]))
        out.append(row)
        by_key[key] = row
    for row in out:
        row.verdict = verdict(row, by_key)
    return out


_CLAUSE = re.compile(r"^(≥|≤) (?:([\d.]+)(×|%) )?(?:of )?(nginx|direct)")


def _clause(clause: str, rn: float | None, rd: float | None) -> str | None:
    m = _CLAUSE.match(clause.strip())
    if not m:
        return None
    op, num, kind, ref = m.groups()
    want = 1.0 if num is None else (float(num) / 100 if kind == "%" else float(num))
    r = rn if ref == "nginx" else rd
    if r is None:
        return None
    ok = r >= want if op == "≥" else r <= want
    if ok:
        return "met"
    got = f"{r:.0%} of {ref}" if kind == "%" else f"{r:.2f}× {ref}"
    return f"MISSED ({got}; off by {abs(r - want) / want:.0%})"


def verdict(row: Row, by_key: dict[str, Row]) -> str | None:
    """'met' / 'MISSED (...)' for rows with a target, else None (or a plain comparison)."""
    t, k = row.target, row.key
    g = row.median.get(GATE)
    if not t or g is None:
        return None
    if _CLAUSE.match(t):
        parts = [p for p in (_clause(c, row.ratio_nginx, row.ratio_direct) for c in t.split(",")) if p]
        return ", ".join(parts) or None
    m = re.match(r"^≤ ([\d.]+) MiB$", t)
    if m:
        v, lim = scalar(g), float(m.group(1))
        return "met" if v <= lim else f"MISSED ({v:.1f} MiB; {v - lim:+.1f} MiB)"
    if t == "0":
        return "met" if g == 0 else f"MISSED ({g:g} failures)"
    if t.startswith("no growth"):
        small = by_key.get(k.replace("rss.pull4.", "rss.pull."))
        if small and small.median.get(GATE) is not None:
            a, b = scalar(small.median[GATE]), scalar(g)
            grow = b - a
            return "met" if grow <= max(2.0, 0.1 * a) else f"MISSED (+{grow:.1f} MiB)"
        return None
    if t == "≤ HTTP/1.1":  # an HTTP/2 row compared with its HTTP/1.1 twin, gate only
        twin = by_key.get(k.replace(".h2.", ".h1."))
        if twin and twin.median.get(GATE):
            r = scalar(g) / scalar(twin.median[GATE])
            return "met" if r <= 1.0 else f"MISSED ({r:.2f}× HTTP/1.1)"
        return None
    if t == "vs basic gate":
        base = by_key.get(k.replace("token.head", "auth.head"))
        if base and base.median.get(GATE) and k.endswith(".rps"):
            return f"{scalar(g) / scalar(base.median[GATE]):.2f}× basic"
        return None
    return None


def fmt(v: Value, unit: str, single: bool = False) -> str:
    if v is None:
        return "—"
    if isinstance(v, tuple):
        if unit == "MiB":  # (largest process, sum): show the sum, the largest in parentheses
            return f"{v[1]:.1f}" if single else f"{v[1]:.1f} ({v[0]:.1f})"
        return "/".join(fmt(x, "ms") for x in v)
    if unit == "count":
        return f"{v:g}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3f}"


def ratio_text(r: float | None) -> str:
    return "—" if r is None else (f"{r:.2f}×" if r < 100 else f"{r:.0f}×")


def table(rows: list[Row]) -> str:
    head = ["Workload", "Unit", LABEL[GATE], LABEL[NGX_ON], LABEL[NGX_OFF], LABEL[DIRECT],
            "gate / nginx best", "gate / direct", "Target", "Result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 6 + ["---"] * 2) + "|"]
    for r in rows:
        m = r.median
        if all(m.get(t) is None for t in ALL_TARGETS):
            continue
        unit = r.unit + (" ↑" if r.better == "up" else " ↓")
        cells = [r.title, unit] + [fmt(m.get(t), r.unit, single=(t == GATE))
                                   for t in (GATE, NGX_ON, NGX_OFF, DIRECT)]
        cells += [ratio_text(r.ratio_nginx), ratio_text(r.ratio_direct), r.target or "", r.verdict or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(info: dict[str, Any], args: dict[str, Any], rows: list[Row], errors: list[str]) -> dict[str, Any]:
    return {"machine": info, "args": args, "rows": [asdict(r) for r in rows], "errors": errors}


# --------------------------------------------------------------------------------------------
# Machine description (runs commands).

def first_line(cmd: list[str]) -> str:
    try:
        from .procs import run
        rc, out, err = run(cmd, 20)
        return (out + err).strip().splitlines()[0]
    except (BenchError, OSError, IndexError):
        return "?"


def machine(binary: str) -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = status_line("/proc/meminfo", "MemTotal")
    git = lambda *a: first_line(["git", "-C", REPO] + list(a))
    from .procs import run
    dirty = run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], 20)[1].strip()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": os.uname().release,
        "nginx": first_line(["nginx", "-v"]),
        "registry": first_line(["/usr/bin/docker-registry", "--version"]),
        "curl": first_line(["curl", "--version"]),
        "wrk": first_line(["wrk", "--version"]),
        "h2load": first_line(["h2load", "--version"]),
        "openssl": first_line(["openssl", "version"]),
        "skopeo": first_line(["skopeo", "--version"]),
        "python": sys.version.split()[0],
        "gate_commit": git("rev-parse", "HEAD") + (" (with uncommitted changes)" if dirty else ""),
        "gate_binary": binary,
        "gate_binary_sha256": hashlib.sha256(open(binary, "rb").read()).hexdigest()[:16],
        "gate_version": first_line([binary, "--version"]),
    }


def status_line(path: str, key: str) -> str:
    with open(path) as f:
        for line in f:
            if line.startswith(key):
                return " ".join(line.split(":", 1)[1].split())
    return "?"


def uptime() -> str:
    return first_line(["uptime"])


def print_report(info: dict[str, Any], a: Any, rows: list[Row], errors: list[str], argv: list[str]) -> None:
    cmd = "bench/run " + " ".join(argv)
    print(f"# registry-gate benchmark — {info['date']}\n")
    print(f"Command: `{cmd}`  ")
    print(f"Rounds: {a.rounds}, load runs {a.duration} s, 32 connections (handshake runs: 16, no keep-alive); "
          "medians over rounds.  ")
    for k in ("nproc", "cpu", "memory", "kernel", "nginx", "registry", "curl", "wrk", "h2load", "openssl",
              "skopeo", "gate_commit", "gate_version", "gate_binary_sha256", "uptime_before", "uptime_after",
              "bench_seconds"):
        print(f"{k}: {info.get(k)}  ")
    print()
    print(table(rows))
    print()
    print("↑ higher is better, ↓ lower is better. Ratios compare the gate with the better nginx\n"
          "(buffering on or off) per row. Peak RSS: VmHWM; nginx cells show master + workers summed,\n"
          "the largest single process in parentheses. Latency rows: p50/p99 in ms; their ratio uses p99.\n"
          "CPU: utime + stime from /proc/PID/stat (nginx: master + workers), 10 ms resolution.\n"
          "Handshake rows (8.) compare with one nginx (buffering off) holding the same certificate.\n"
          f"Transfers authenticate as `{XFER_USER}` (bcrypt cost 5). MB = 10^6 bytes.")
    if errors:
        print(f"\nErrors ({len(errors)}):")
        for e in errors:
            print(f"- {e}")
