"""Clients, each run with a timeout: curl (pull, push, slow pull), wrk, ab (keep-alive and new
connection per request), h2load, skopeo. They return typed results (see parsers.py) or raise
BenchError."""

from __future__ import annotations

import argparse
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

from . import parsers
from .common import DIRECT, PASSWORDS, PULL_REPO, PUSH_REPO, XFER_USER, BenchError, basic
from .procs import Server, run


@dataclass
class Ctx:
    """Everything the workloads need: options, the temp dir, the servers, the test data."""

    args: argparse.Namespace
    d: str
    servers: dict[str, Server] = field(default_factory=dict)
    ca: str = ""
    cert_ec: str = ""
    key_ec: str = ""
    cert_rsa: str = ""
    key_rsa: str = ""
    htpasswd: str = ""
    gate_bin: str = ""
    token_gate: Server | None = None
    pull_digest: str = ""
    big4_digest: str = ""
    push_file: str = ""
    push_digest: str = ""
    uploads: list[tuple[str, str]] = field(default_factory=list)
    image_dir: str = ""          # OCI layout for skopeo
    image_bytes: int = 0

    def base_url(self, target: str) -> str:
        if target == DIRECT:
            return f"http://127.0.0.1:{self.servers['registry'].plain_port}"
        return f"https://127.0.0.1:{self.servers[target].tls_port}"



def curl_base(ctx: Ctx, target: str, proto: str, user: str | None = XFER_USER) -> list[str]:
    cmd = ["curl", "-sS", "--no-progress-meter"]
    if target == DIRECT:
        cmd.append("--http1.1")
    else:
        cmd += ["--cacert", ctx.ca, "--http1.1" if proto == "h1" else "--http2"]
        if user:
            cmd += ["-u", f"{user}:{PASSWORDS[user]}"]
    return cmd


def parse_headers(text: str) -> tuple[int | None, dict[str, str]]:
    return parsers.curl_headers(text)


def pull(ctx: Ctx, target: str, proto: str, digest: str, timeout: float, repo: str = PULL_REPO,
         limit_rate: str | None = None) -> tuple[int, float]:
    """GET a blob to /dev/null (at most `limit_rate`, curl's syntax, e.g. "4M"); returns
    (bytes, bytes per second)."""
    url = f"{ctx.base_url(target)}/v2/{repo}/blobs/{digest}"
    limit = ["--limit-rate", limit_rate] if limit_rate else []
    cmd = curl_base(ctx, target, proto) + limit + ["-o", "/dev/null", "-w",
                                           "%{http_code} %{size_download} %{speed_download} %{http_version}", url]
    rc, out, err = run(cmd, timeout)
    parts = out.split()
    if rc != 0 or len(parts) < 4 or parts[0] != "200":
        raise BenchError(f"pull via {target} {proto}: rc={rc} {out} {err.strip()[-300:]}")
    want = "1.1" if proto == "h1" or target == DIRECT else "2"
    if parts[3] != want:
        raise BenchError(f"pull via {target}: HTTP/{parts[3]}, wanted HTTP/{want}")
    return int(parts[1]), float(parts[2])


def push(ctx: Ctx, target: str, proto: str, path: str | None, digest: str, timeout: float, repo: str = PUSH_REPO,
         stdin_feed: Callable[[list[str], float], tuple[int, str, str]] | None = None) -> float:
    """POST + one PATCH with the whole body (chunked on HTTP/1.1, no length on h2) + PUT.

    Returns the seconds spent in PATCH + PUT (curl's time_total for each)."""
    base = curl_base(ctx, target, proto)
    url = f"{ctx.base_url(target)}/v2/{repo}/blobs/uploads/"
    rc, out, err = run(base + ["-X", "POST", "-D", "-", "-o", "/dev/null", url], 60)
    status, h = parse_headers(out)
    if rc != 0 or status != 202 or "location" not in h:
        raise BenchError(f"POST via {target}: rc={rc} status={status} {err.strip()[-300:]}")
    loc = urllib.parse.urljoin(url, h["location"])
    if proto == "h2" and target != DIRECT and path is not None:
        # HTTP/2 PATCH with nghttp: curl 7.88 busy-loops (poll for POLLOUT, nothing to write)
        # while its HTTP/2 send window is closed, and 50 of them take both cores from the
        # registry. nghttp sends the file with its Content-Length.
        user = XFER_USER
        patch = ["nghttp", "-v", "-n", "-H", ":method: PATCH", "-H", f"authorization: {basic(user)}",
                 "-H", "content-type: application/octet-stream", "-d", path, loc]
        t0 = time.monotonic()
        rc, out, err = run(patch, timeout)
        t_patch = time.monotonic() - t0
        status, h = parsers.nghttp_headers(out)
    else:
        # -T - reads stdin: no Content-Length, so HTTP/1.1 sends Transfer-Encoding: chunked.
        patch = base + ["-X", "PATCH", "-T", "-", "-H", "Content-Type: application/octet-stream",
                        "-H", "Expect:", "-D", "-", "-o", "/dev/null", "-w", "\n%{time_total}", loc]
        if proto == "h1" or target == DIRECT:
            patch[patch.index("-T"):patch.index("-T")] = ["-H", "Transfer-Encoding: chunked"]
        if stdin_feed is None:
            with open(path, "rb") as f:
                rc, out, err = run(patch, timeout, stdin=f)
        else:
            rc, out, err = stdin_feed(patch, timeout)
        status, h = parse_headers(out)
        t_patch = float(out.strip().splitlines()[-1]) if rc == 0 and out.strip() else 0.0
    if rc != 0 or status != 202 or "location" not in h:
        raise BenchError(f"PATCH via {target} {proto}: rc={rc} status={status} {err.strip()[-300:]}")
    loc = urllib.parse.urljoin(loc, h["location"])
    sep = "&" if "?" in loc else "?"
    put = base + ["-T", "/dev/null", "-D", "-", "-o", "/dev/null", "-w", "\n%{time_total}",
                  f"{loc}{sep}digest={urllib.parse.quote(digest)}"]
    rc, out, err = run(put, timeout)
    status, h = parse_headers(out)
    if rc != 0 or status != 201:
        raise BenchError(f"PUT via {target} {proto}: rc={rc} status={status} {err.strip()[-300:]}")
    if h.get("docker-content-digest") != digest:
        raise BenchError(f"PUT via {target}: digest {h.get('docker-content-digest')} != {digest}")
    return t_patch + float(out.strip().splitlines()[-1])



def wrk(ctx: Ctx, url: str, method: str, auth: str | None, duration: int, expect_2xx: bool = True) -> parsers.Load:
    script = f"{ctx.d}/wrk-{threading.get_ident()}.lua"
    with open(script, "w") as f:
        f.write(f'wrk.method = "{method}"\n')
        if auth:
            f.write(f'wrk.headers["Authorization"] = "{auth}"\n')
    cmd = ["wrk", "-c32", "-t2", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", script, url]
    rc, out, err = run(cmd, duration + 60)
    if rc != 0:
        raise BenchError(f"wrk {url}: rc={rc} {err.strip()[-300:]}")
    try:
        return parsers.wrk(out, expect_2xx)
    except parsers.ParseError as e:
        raise BenchError(str(e))


def ab(ctx: Ctx, url: str, method: str, auth: str | None, duration: int, expect_status: int) -> parsers.Load:
    """HTTP/1.x HEAD load with ApacheBench: wrk 4.1 (and h2load --h1) wait for a body after a
    HEAD answer with Content-Length and stall. ab speaks HTTP/1.0 with keep-alive (-k)."""
    assert method == "HEAD"
    pct_file = f"{ctx.d}/ab-{threading.get_ident()}.csv"
    gp_file = f"{ctx.d}/ab-{threading.get_ident()}.tsv"
    cmd = ["ab", "-q", "-k", "-i", "-c32", "-t", str(duration), "-n", "5000000", "-s", "30",
           "-e", pct_file, "-g", gp_file]
    if auth:
        cmd += ["-H", f"Authorization: {auth}"]
    cmd.append(url)
    rc, out, err = run(cmd, duration + 60)
    if rc != 0:
        raise BenchError(f"ab {url}: rc={rc} {out[-300:]} {err.strip()[-300:]}")
    try:
        r = parsers.ab(out, expect_status, open(pct_file).read(), open(gp_file).read())
    except (parsers.ParseError, OSError) as e:
        raise BenchError(f"ab {url}: {e}")
    if 0 <= r.extra["keep_alive"] < r.requests * 0.99:
        raise BenchError(f"ab {url}: only {r.extra['keep_alive']} of {r.requests} requests used keep-alive")
    return r


def h2load(ctx: Ctx, url: str, method: str, auth: str | None, duration: int, expect_status: int) -> parsers.Load:
    logf = f"{ctx.d}/h2load-{threading.get_ident()}.log"
    if os.path.exists(logf):
        os.unlink(logf)
    cmd = ["h2load", "-c32", "-t2", "-m1", "-D", str(duration), "--warm-up-time", "1",
           "--log-file", logf]
    if auth:
        cmd += ["-H", f"authorization: {auth}"]
    if method != "GET":
        cmd += ["-H", f":method: {method}"]
    cmd.append(url)
    rc, out, err = run(cmd, duration + 60)
    if rc != 0:
        raise BenchError(f"h2load {url}: rc={rc} {out[-300:]} {err.strip()[-300:]}")
    try:
        return parsers.h2load(out, open(logf).read(), expect_status)
    except (parsers.ParseError, OSError) as e:
        raise BenchError(str(e))



def ab_newconn(url: str, auth: str | None, duration: int, expect_status: int,
               concurrency: int = 16, head: bool = False) -> parsers.Load:
    """GET (or HEAD) load with ApacheBench *without* -k: every request opens a new TLS
    connection, so the run is bound by the handshake (what a client without connection reuse
    costs)."""
    cmd = ["ab", "-q", f"-c{concurrency}", "-t", str(duration), "-n", "2000000", "-s", "30"]
    if head:
        cmd.append("-i")
    if auth:
        cmd += ["-H", f"Authorization: {auth}"]
    cmd.append(url)
    rc, out, err = run(cmd, duration + 60)
    if rc != 0:
        raise BenchError(f"ab (new connections) {url}: rc={rc} {out[-300:]} {err.strip()[-300:]}")
    try:
        return parsers.ab(out, expect_status)
    except parsers.ParseError as e:
        raise BenchError(f"ab {url}: {e}")


@dataclass
class SkopeoRun:
    """One `skopeo copy`: wall-clock seconds and what skopeo reported."""

    seconds: float
    copy: parsers.SkopeoCopy


def skopeo_copy(src: str, dst: str, timeout: float, cert_dir: str | None = None,
                src_creds: str | None = None, dst_creds: str | None = None) -> SkopeoRun:
    """`skopeo copy SRC DST`; registries are verified with the CA in `cert_dir` (ca.crt)."""
    cmd = ["skopeo", "copy", "--retry-times", "0"] + skopeo_side("src", src, cert_dir, src_creds) \
        + skopeo_side("dest", dst, cert_dir, dst_creds)
    cmd += [src, dst]
    t0 = time.monotonic()
    rc, out, err = run(cmd, timeout)
    secs = time.monotonic() - t0
    if rc != 0:
        raise BenchError(f"skopeo copy {src} {dst}: rc={rc} {err.strip()[-400:]}")
    try:
        return SkopeoRun(seconds=secs, copy=parsers.skopeo_copy(out + err))
    except parsers.ParseError as e:
        raise BenchError(str(e))


def skopeo_side(side: str, ref: str, cert_dir: str | None, user_pass: str | None) -> list[str]:
    """skopeo options for one side of a copy: TLS verified with `cert_dir`, or plain HTTP (no
    `cert_dir`: the registry itself); credentials when given."""
    if not ref.startswith("docker://"):
        return []
    opts = [f"--{side}-cert-dir", cert_dir] if cert_dir else [f"--{side}-tls-verify=false"]
    return opts + ([f"--{side}-creds", user_pass] if user_pass else [])


def creds(user: str) -> str:
    return f"{user}:{PASSWORDS[user]}"
