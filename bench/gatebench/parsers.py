"""Parsers for the clients' outputs: curl (-D - headers, -w fields), wrk, ab, h2load, skopeo.

Pure functions of text, so bench/tests can check them on saved outputs. Each raises
ParseError when the output does not have what the bench needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class ParseError(ValueError):
    """A client's output lacks what the bench needs."""


@dataclass
class Load:
    """One load run's result."""

    rps: float
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    detail: str = ""
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"rps": self.rps, "requests": self.requests, "p50_ms": self.p50_ms,
                                "p99_ms": self.p99_ms, "errors": self.errors}
        if self.detail:
            d["detail"] = self.detail
        return d


def curl_headers(text: str) -> tuple[int | None, dict[str, str]]:
    """The last response's status and headers (lower-case names) from `curl -D -` output."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    status: int | None = None
    headers: dict[str, str] = {}
    for block in blocks:
        lines = block.splitlines()
        if not lines or not lines[0].startswith("HTTP/"):
            continue
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
    return status, headers


def nghttp_headers(text: str) -> tuple[int | None, dict[str, str]]:
    """The response's status and headers from `nghttp -v` output: the `recv (stream_id=N)
    name: value` lines of the last stream that received a `:status`."""
    streams: dict[int, dict[str, str]] = {}
    for m in re.finditer(r"^\[\s*[\d.]+\] recv \(stream_id=(\d+)\) ([^:\s][^:]*|:status): (.*)$", text, re.M):
        streams.setdefault(int(m.group(1)), {})[m.group(2).strip().lower()] = m.group(3).strip()
    answered = [sid for sid, h in streams.items() if ":status" in h]
    if not answered:
        return None, {}
    headers = streams[max(answered)]
    status = int(headers.pop(":status"))
    return status, headers


def curl_write_out(text: str, names: list[str]) -> dict[str, str]:
    """The fields of a one-line `curl -w` format (space separated, in `names` order), read from
    the last non-empty line of `text` (after any `-D -` headers)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise ParseError("curl printed nothing")
    parts = lines[-1].split()
    if len(parts) < len(names):
        raise ParseError(f"curl -w: wanted {names}, got {lines[-1]!r}")
    return dict(zip(names, parts))


def lat_ms(text: str) -> float | None:
    """A wrk latency ("812.00us", "1.20ms", "2.01s", "1.5m") in milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]


def wrk(out: str, expect_2xx: bool = True) -> Load:
    """wrk 4.x with --latency."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not m or not total:
        raise ParseError(f"wrk output not understood:\n{out}")
    n = int(total.group(1))
    pcts: dict[str, float | None] = {}
    for pct in ("50", "99"):
        pm = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        pcts[pct] = lat_ms(pm.group(1)) if pm else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    bad = int(non2xx.group(1)) if non2xx else 0
    if expect_2xx:
        errors += bad
    elif bad != n:
        errors += n - bad
    return Load(rps=float(m.group(1)), requests=n, errors=errors, p50_ms=pcts["50"], p99_ms=pcts["99"])


def ab(out: str, expect_status: int, pct_csv: str = "", gp_tsv: str = "") -> Load:
    """ApacheBench's report, its `-e` percentile CSV and its `-g` per-request TSV.

    `extra["keep_alive"]` holds the keep-alive request count (-1 when ab printed none)."""
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    done = re.search(r"Complete requests:\s+(\d+)", out)
    if not m or not done:
        raise ParseError(f"ab output not understood: {out[-300:]}")
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    keep = re.search(r"Keep-Alive requests:\s+(\d+)", out)
    n = int(done.group(1))
    errors = int(failed.group(1)) if failed else 0
    bad = int(non2xx.group(1)) if non2xx else 0
    # With -t, ab may count a few answers that arrive after the last "complete" request.
    errors += bad if expect_status < 300 else max(0, n - bad)
    pct: dict[int, float] = {}
    for line in pct_csv.splitlines():
        parts = line.strip().split(",")
        if len(parts) == 2 and parts[0].isdigit():
            pct[int(parts[0])] = float(parts[1])
    if n < 200 and gp_tsv:
        # ab's -e table indexes past the last request when there are fewer than ~100; use the
        # per-request times (whole ms) instead.
        times = sorted(float(c[4]) for c in (line.split("\t") for line in gp_tsv.splitlines())
                       if len(c) >= 5 and c[4].strip().isdigit())
        if times:
            pct = {p: times[min(len(times) - 1, int(round(p / 100 * (len(times) - 1))))] for p in (50, 99)}
    return Load(rps=float(m.group(1)), requests=n, errors=errors, p50_ms=pct.get(50),
                p99_ms=pct.get(99), extra={"keep_alive": int(keep.group(1)) if keep else -1})


def h2load(out: str, log: str, expect_status: int) -> Load:
    """h2load's report and its --log-file (status and microseconds per request)."""
    if "Application protocol: h2" not in out:
        raise ParseError(f"h2load did not negotiate h2:\n{out[-500:]}")
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not m or not req or not codes:
        raise ParseError(f"h2load output not understood:\n{out}")
    durations: list[float] = []
    statuses: dict[int, int] = {}
    for line in log.splitlines():
        cols = line.split("\t")
        if len(cols) >= 3:
            durations.append(int(cols[2]) / 1000)
            statuses[int(cols[1])] = statuses.get(int(cols[1]), 0) + 1
    durations.sort()

    def pct(p: int) -> float | None:
        if not durations:
            return None
        return durations[min(len(durations) - 1, int(round(p / 100 * (len(durations) - 1))))]

    unexpected = {k: v for k, v in statuses.items() if k != expect_status}
    return Load(rps=float(m.group(1)), requests=int(req.group(3)), p50_ms=pct(50), p99_ms=pct(99),
                errors=int(req.group(6)) + int(req.group(7)) + sum(unexpected.values()),
                detail=f"h2load: {req.group(0)}; other statuses in the log (-1: stream failed): {unexpected}")


@dataclass
class SkopeoCopy:
    """What `skopeo copy` reported: blobs copied, blobs skipped (already present), manifest."""

    copied: int
    skipped: int
    manifest_written: bool


def skopeo_copy(out: str) -> SkopeoCopy:
    """skopeo 1.x `copy` progress lines ("Copying blob sha256:…", "… skipped: already exists")."""
    copied = skipped = 0
    for line in out.splitlines():
        if re.match(r"\s*Copying blob ", line):
            if "skipped" in line or "already exists" in line:
                skipped += 1
            else:
                copied += 1
    written = bool(re.search(r"^\s*(Writing manifest to image destination|Storing signatures)", out, re.M))
    if not written and not copied and not skipped:
        raise ParseError(f"skopeo copy output not understood:\n{out[-500:]}")
    return SkopeoCopy(copied=copied, skipped=skipped, manifest_written=written)
