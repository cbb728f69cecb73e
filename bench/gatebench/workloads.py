"""Workloads. Each visits gate, nginx buf on, nginx buf off (and the registry directly where that
makes sense) one after another, once per round, and records its samples in a Results. Each
declares its rows (title, unit, target) first, so that a failed run still shows the row."""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
import urllib.parse
from typing import Callable

from . import parsers
from .clients import Ctx, ab, ab_newconn, creds, curl_base, h2load, pull, push, skopeo_copy, wrk
from .common import (DIRECT, GATE, GIB, IMAGE_REPO, MIB, NGX_OFF, PASSWORDS, PROXIES, PULL_REPO,
                     TOKEN_SERVICE, UPLOAD_REPO, XFER_USER, BenchError, basic, fmt_size, log, pname)
from .procs import Server, run, start_gate, start_nginx
from .report import Results

Workload = Callable[[Ctx, Results, int], None]


def w_pull(ctx: Ctx, res: Results, rnd: int) -> None:
    a = ctx.args
    size = a.pull_mib * MIB
    for proto in ("h1", "h2"):
        res.row(f"pull.{proto}", f"1. pull {fmt_size(size)} blob over TLS, {pname(proto)}", "MB/s", "up",
                "≥ 1.5× nginx best", group="1. Pull")
    for proto in ("h1", "h2"):
        res.row(f"cpu.{proto}", f"6. CPU per GiB pulled, {pname(proto)}", "s/GiB", "down", "≤ nginx best",
                group="6. CPU")
    for proto in ("h1", "h2"):
        res.row(f"rss.pull.{proto}", f"5. peak RSS, pull {fmt_size(size)}, {pname(proto)}", "MiB", "down",
                "≤ 32 MiB", group="5. Memory")
    try:
        _, bps = pull(ctx, DIRECT, "h1", ctx.pull_digest, a.xfer_timeout)
        for proto in ("h1", "h2"):  # the ceiling: the registry over plain HTTP/1.1, no proxy
            res.add(f"pull.{proto}", DIRECT, bps / 1e6)
    except BenchError as e:
        res.err(f"round {rnd} pull direct", e)
    for proto in ("h1", "h2"):
        for t in PROXIES:
            srv = ctx.servers[t]
            try:
                srv.reset_peak()
                c0 = srv.cpu_seconds()
                n, bps = pull(ctx, t, proto, ctx.pull_digest, a.xfer_timeout)
                c1 = srv.cpu_seconds()
                res.add(f"pull.{proto}", t, bps / 1e6)
                res.add(f"cpu.{proto}", t, (c1 - c0) / (n / GIB))
                res.add(f"rss.pull.{proto}", t, srv.peak_rss_mib())
            except BenchError as e:
                res.err(f"round {rnd} pull {t} {proto}", e)


def w_pull_big(ctx: Ctx, res: Results, rnd: int) -> None:
    a = ctx.args
    size = a.pull_mib * MIB * 4
    for proto in ("h1", "h2"):
        res.row(f"rss.pull4.{proto}", f"5. peak RSS, pull {fmt_size(size)}, {pname(proto)}", "MiB", "down",
                "no growth vs 1×", group="5. Memory")
        res.row(f"pull4.{proto}", f"5. pull {fmt_size(size)} blob over TLS, {pname(proto)}", "MB/s", "up",
                group="5. Memory")
    for proto in ("h1", "h2"):
        for t in PROXIES:
            srv = ctx.servers[t]
            try:
                srv.reset_peak()
                n, bps = pull(ctx, t, proto, ctx.big4_digest, a.xfer_timeout * 4)
                res.add(f"rss.pull4.{proto}", t, srv.peak_rss_mib())
                res.add(f"pull4.{proto}", t, bps / 1e6)
            except BenchError as e:
                res.err(f"round {rnd} pull4 {t} {proto}", e)


def w_push(ctx: Ctx, res: Results, rnd: int) -> None:
    a = ctx.args
    size = a.push_mib * MIB
    for proto in ("h1", "h2"):
        res.row(f"push.{proto}", f"2. push {fmt_size(size)} (one PATCH + PUT) over TLS, {pname(proto)}",
                "MB/s", "up", "≥ 95% of direct", group="2. Push")
    try:
        s = push(ctx, DIRECT, "h1", ctx.push_file, ctx.push_digest, a.xfer_timeout)
        for proto in ("h1", "h2"):  # the registry over plain HTTP/1.1, no proxy
            res.add(f"push.{proto}", DIRECT, size / s / 1e6)
    except BenchError as e:
        res.err(f"round {rnd} push direct", e)
    for proto in ("h1", "h2"):
        for t in PROXIES:
            try:
                s = push(ctx, t, proto, ctx.push_file, ctx.push_digest, a.xfer_timeout)
                res.add(f"push.{proto}", t, size / s / 1e6)
            except BenchError as e:
                res.err(f"round {rnd} push {t} {proto}", e)


def load_run(ctx: Ctx, target: str, proto: str, path: str, method: str, auth: str | None,
             expect: int) -> parsers.Load:
    url = f"{ctx.base_url(target)}{path}"
    if proto == "h1" and method == "HEAD":
        return ab(ctx, url, method, auth, ctx.args.duration, expect)
    if proto == "h1":
        return wrk(ctx, url, method, auth, ctx.args.duration, expect_2xx=(expect < 300))
    return h2load(ctx, url, method, auth, ctx.args.duration, expect)


def warm(ctx: Ctx, target: str, proto: str, path: str, method: str, user: str) -> None:
    cmd = curl_base(ctx, target, proto, user) + ["-o", "/dev/null", "-w", "%{http_code}"]
    if method == "HEAD":
        cmd.append("-I")
    run(cmd + [f"{ctx.base_url(target)}{path}"], 30)


def add_load(res: Results, key: str, target: str, r: parsers.Load) -> None:
    if r.requests == 0:  # e.g. bcrypt cost 10 through nginx in a 2 s run: no sample, an error
        res.err(key, f"{target}: no request completed within the run")
        return
    res.add(f"{key}.rps", target, r.rps)
    res.add(f"{key}.lat", target, (r.p50_ms, r.p99_ms))
    if r.errors:
        res.err(key, f"{target}: {r.errors} unexpected answers or socket errors of {r.requests}"
                     + (f" ({r.detail})" if r.detail else ""))


def w_auth(ctx: Ctx, res: Results, rnd: int) -> None:
    head_path = f"/v2/{PULL_REPO}/blobs/{ctx.pull_digest}"
    reqs = [("get", "GET /v2/", "/v2/", "GET"), ("head", "HEAD blob", head_path, "HEAD")]
    for rk, rname, path, method in reqs:
        for user in ctx.args.auth_users:
            for proto in ("h1", "h2"):
                key = f"auth.{rk}.{user}.{proto}"
                tgt = "≥ 30× nginx, ≥ 80% direct" if user == "c10" else None
                res.row(f"{key}.rps", f"3. {rname}, {user}, {pname(proto)}", "req/s", "up", tgt,
                        group="3. Authenticated requests")
                res.row(f"{key}.lat", f"3. {rname}, {user}, {pname(proto)}", "p50/p99 ms", "down",
                        group="3. Authenticated requests")
    for rk, rname, path, method in reqs:
        # The registry's own rate, no auth, plain HTTP/1.1 (the same value in every row).
        try:
            r = load_run(ctx, DIRECT, "h1", path, method, None, 200)
            for user in ctx.args.auth_users:
                for proto in ("h1", "h2"):
                    add_load(res, f"auth.{rk}.{user}.{proto}", DIRECT, r)
        except BenchError as e:
            res.err(f"round {rnd} {rname} direct", e)
        for user in ctx.args.auth_users:
            for proto in ("h1", "h2"):
                key = f"auth.{rk}.{user}.{proto}"
                for t in PROXIES:
                    try:
                        warm(ctx, t, proto, path, method, user)
                        r = load_run(ctx, t, proto, path, method, basic(user), 200)
                        add_load(res, key, t, r)
                    except BenchError as e:
                        res.err(f"round {rnd} {rname} {user} {t} {proto}", e)


def w_401(ctx: Ctx, res: Results, rnd: int) -> None:
    for proto in ("h1", "h2"):
        key = f"unauth.{proto}"
        res.row(f"{key}.rps", f"4. 401: GET /v2/ without credentials, {pname(proto)}", "req/s", "up",
                "≥ 1.0× nginx", group="4. 401 path")
        res.row(f"{key}.lat", f"4. 401: GET /v2/ without credentials, {pname(proto)}", "p50/p99 ms", "down",
                group="4. 401 path")
        for t in PROXIES:
            try:
                r = load_run(ctx, t, proto, "/v2/", "GET", None, 401)
                add_load(res, key, t, r)
            except BenchError as e:
                res.err(f"round {rnd} 401 {t} {proto}", e)


def fresh(ctx: Ctx, t: str) -> Server:
    """Restarts a proxy so that its peak RSS starts from a new process."""
    ctx.servers[t].stop()
    ctx.servers[t] = ctx.servers[t].restart()
    return ctx.servers[t]


def w_concurrent(ctx: Ctx, res: Results, rnd: int) -> None:
    """N concurrent uploads (POST, PATCH from stdin, PUT) plus one pull, over HTTP/1.1 and over
    HTTP/2; every proxy is restarted before each protocol, so each peak is its own."""
    a = ctx.args
    n, size = a.uploads, a.upload_mib * MIB
    for proto in ("h1", "h2"):
        title = f"5. {n} concurrent {fmt_size(size)} uploads + {fmt_size(a.pull_mib * MIB)} pull, {pname(proto)}"
        # The two protocols' batches use different upload clients, so their times compare the
        # clients' CPU as much as the proxy's: both are reported.
        clients = "curl" if proto == "h1" else "curl, nghttp for the PATCHes through a proxy"
        k = f"conc.{proto}"
        res.row(f"{k}.time", title + ": total time", "s", "down", "≤ HTTP/1.1" if proto == "h2" else None,
                group="5. Memory")
        res.row(f"{k}.fail", title + ": failed uploads/pulls", "count", "down", "0", group="5. Memory")
        res.row(f"{k}.rss", title + ": peak RSS", "MiB", "down", "≤ 32 MiB", group="5. Memory")
        res.row(f"{k}.kept", title + ": RSS 2 s after (kept by the process)", "MiB", "down", group="5. Memory")
        res.row(f"{k}.cpu", title + ": proxy CPU", "s", "down", "≤ nginx best", group="5. Memory")
        res.row(f"{k}.ccpu", title + f": clients' CPU ({clients})", "s", "down", group="5. Memory")
        res.row(f"{k}.rcpu", title + ": registry CPU", "s", "down", group="5. Memory")
    for proto in ("h1", "h2"):
        k = f"conc.{proto}"
        for t in ([DIRECT] if proto == "h1" else []) + PROXIES:
            try:
                srv = fresh(ctx, t) if t != DIRECT else None
                if srv:
                    srv.reset_peak()
                    c0 = srv.cpu_seconds()
                registry = ctx.servers["registry"]
                r0 = registry.cpu_seconds()
                total, failures, clients_cpu = concurrent_uploads(ctx, t, proto)
                res.add(f"{k}.time", t, total)
                res.add(f"{k}.fail", t, failures)
                res.add(f"{k}.ccpu", t, clients_cpu)
                res.add(f"{k}.rcpu", t, registry.cpu_seconds() - r0)
                if srv:
                    res.add(f"{k}.cpu", t, srv.cpu_seconds() - c0)
                    res.add(f"{k}.rss", t, srv.peak_rss_mib())
                    time.sleep(2)
                    res.add(f"{k}.kept", t, srv.rss_mib())
            except BenchError as e:
                res.err(f"round {rnd} concurrent {t} {proto}", e)


def w_slow(ctx: Ctx, res: Results, rnd: int) -> None:
    """N concurrent slow pulls (curl --limit-rate 4M) of the N upload blobs: a proxy that reads
    ahead of a slow client holds the difference in memory."""
    a = ctx.args
    n, size = len(ctx.uploads), a.upload_mib * MIB
    for proto in ("h1", "h2"):
        title = f"5. {n} concurrent slow pulls (4 MB/s each) of {fmt_size(size)}, {pname(proto)}"
        res.row(f"slow.{proto}.rss", title + ": peak RSS", "MiB", "down", "≤ 32 MiB", group="5. Memory")
        res.row(f"slow.{proto}.fail", title + ": failed pulls", "count", "down", "0", group="5. Memory")
    for proto in ("h1", "h2"):
        for t in PROXIES:
            try:
                srv = fresh(ctx, t)
                srv.reset_peak()
                fails = 0
                timeout = 60 + size / 3_000_000
                with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
                    futs = [pool.submit(pull, ctx, t, proto, dg, timeout, UPLOAD_REPO, "4M")
                            for _, dg in ctx.uploads]
                    for f in concurrent.futures.as_completed(futs, timeout=timeout + 30):
                        e = f.exception()
                        if isinstance(e, KeyboardInterrupt):
                            raise e
                        if e is not None:
                            fails += 1
                            log(f"  slow pull {t} {proto}: {str(e)[:200]}")
                res.add(f"slow.{proto}.rss", t, srv.peak_rss_mib())
                res.add(f"slow.{proto}.fail", t, fails)
            except BenchError as e:
                res.err(f"round {rnd} slow pulls {t} {proto}", e)


# CPU per handshake-bound request: targets per certificate kind (gate / nginx, lower is better).
HANDSHAKE_TARGETS = {("401", "rsa"): "≤ 0.8× nginx", ("401", "ec"): "≤ 0.7× nginx",
                     ("auth", "rsa"): "≤ 0.65× nginx", ("auth", "ec"): "≤ 0.65× nginx",
                     ("fwd", "rsa"): "", ("fwd", "ec"): ""}
# (workload key, row label, authenticated, HEAD of the pull blob instead of GET /v2/)
HANDSHAKE_REQUESTS = (("401", "GET /v2/ 401 without credentials", False, False),
                      ("auth", "GET /v2/ authenticated (apr1)", True, False),
                      ("fwd", "HEAD blob authenticated (apr1), forwarded to the registry", True, True))


def w_handshake(ctx: Ctx, res: Results, rnd: int) -> None:
    """A new TLS connection per request (ab without -k): GET /v2/ without credentials (401) and
    authenticated (apr1, cheap to verify, so the handshake dominates; the gate answers this
    version check itself while the registry answers), and an authenticated HEAD of the pull
    blob, which both proxies forward to the registry; with the P-256 and an RSA-2048
    certificate. CPU of the proxy (nginx: master + workers) per completed request. The P-256
    servers are the main gate and nginx buf off; the RSA ones are started for this run."""
    a = ctx.args
    for kind, kname in (("rsa", "RSA-2048"), ("ec", "P-256")):
        for wl, wname, _, _ in HANDSHAKE_REQUESTS:
            k = f"hs.{wl}.{kind}"
            res.row(f"{k}.cpu", f"8. new connection per request, {wname}, {kname}: CPU per request",
                    "µs", "down", HANDSHAKE_TARGETS[(wl, kind)], group="8. Handshakes")
            res.row(f"{k}.rps", f"8. new connection per request, {wname}, {kname}: rate",
                    "req/s", "up", group="8. Handshakes")
    rsa: dict[str, Server] = {}
    try:
        reg = ctx.servers["registry"].plain_port
        rsa[GATE] = start_gate(ctx.d, "gate-rsa", ctx.gate_bin, reg, ctx.cert_rsa, ctx.key_rsa, ctx.htpasswd)
        rsa[NGX_OFF] = start_nginx(ctx.d, "nginx-rsa", False, reg, ctx.cert_rsa, ctx.key_rsa, ctx.htpasswd)
    except BenchError as e:
        res.err(f"round {rnd} handshakes: starting the RSA servers", e)
    try:
        for kind in ("rsa", "ec"):
            servers = rsa if kind == "rsa" else {GATE: ctx.servers[GATE], NGX_OFF: ctx.servers[NGX_OFF]}
            for wl, _, authenticated, head in HANDSHAKE_REQUESTS:
                auth = basic("apr1") if authenticated else None
                path = f"/v2/{PULL_REPO}/blobs/{ctx.pull_digest}" if head else "/v2/"
                for t, srv in servers.items():
                    try:
                        url = f"https://127.0.0.1:{srv.tls_port}{path}"
                        c0 = srv.cpu_seconds()
                        r = ab_newconn(url, auth, a.hs_duration, 200 if authenticated else 401, head=head)
                        c1 = srv.cpu_seconds()
                        if r.errors:
                            res.err(f"round {rnd} handshakes {kind} {wl} {t}", f"{r.errors} errors of {r.requests}")
                        res.add(f"hs.{wl}.{kind}.cpu", t, (c1 - c0) / max(r.requests, 1) * 1e6)
                        res.add(f"hs.{wl}.{kind}.rps", t, r.rps)
                    except BenchError as e:
                        res.err(f"round {rnd} handshakes {kind} {wl} {t}", e)
    finally:
        for s in rsa.values():
            s.stop()


def w_skopeo(ctx: Ctx, res: Results, rnd: int) -> None:
    """skopeo copy of an N-layer image from the registry through the proxy to a local dir, then
    from the dir back through the proxy to a new repository. The pull goes to 127.0.0.1 and the
    push to localhost, and the pushed layers are unlinked at the registry after each push: so
    skopeo's blob-info cache knows no location it could mount from, and every layer is
    uploaded (checked: skopeo must report no skipped blob)."""
    a = ctx.args
    desc = f"{a.image_layers} layers, {ctx.image_bytes / MIB:.0f} MiB"
    for step, sname in (("pull", "registry → proxy → dir"), ("push", "dir → proxy → registry")):
        res.row(f"skopeo.{step}.time", f"9. skopeo copy ({desc}), {sname}: wall-clock", "s", "down",
                "≤ nginx best", group="9. skopeo")
        res.row(f"skopeo.{step}.cpu", f"9. skopeo copy ({desc}), {sname}: proxy CPU", "s", "down",
                "≤ nginx best", group="9. skopeo")
    certd = f"{ctx.d}/skopeo-certs"
    os.makedirs(certd, exist_ok=True)
    with open(f"{certd}/ca.crt", "w") as f, open(ctx.ca) as cf:
        f.write(cf.read())
    timeout = 120 + ctx.image_bytes / 10_000_000
    for t in PROXIES:
        srv = ctx.servers[t]
        port = srv.tls_port
        out = f"{ctx.d}/skopeo-dir-{t}"
        run(["rm", "-rf", out], 60)
        back = f"{IMAGE_REPO}-back-{t}"
        try:
            c0 = srv.cpu_seconds()
            r = skopeo_copy(f"docker://127.0.0.1:{port}/{IMAGE_REPO}:latest", f"dir:{out}", timeout, certd,
                            src_creds=creds(XFER_USER))
            res.add("skopeo.pull.time", t, r.seconds)
            res.add("skopeo.pull.cpu", t, srv.cpu_seconds() - c0)
            c0 = srv.cpu_seconds()
            r = skopeo_copy(f"dir:{out}", f"docker://localhost:{port}/{back}:r{rnd}", timeout, certd,
                            dst_creds=creds(XFER_USER))
            c1 = srv.cpu_seconds()
            if r.copy.skipped:
                res.err(f"round {rnd} skopeo push {t}", f"{r.copy.skipped} blobs skipped (mounted or present)")
            else:
                res.add("skopeo.push.time", t, r.seconds)
                res.add("skopeo.push.cpu", t, c1 - c0)
        except BenchError as e:
            res.err(f"round {rnd} skopeo {t}", e)
        finally:
            unlink_layers(ctx, back, out)
            run(["rm", "-rf", out], 60)


def unlink_layers(ctx: Ctx, repo: str, dir_path: str) -> None:
    """DELETE the image's layer and config blobs from `repo` at the registry (delete is enabled)."""
    try:
        manifest = json.load(open(f"{dir_path}/manifest.json"))
    except (OSError, ValueError):
        return
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest.get("layers", [])]
    base = ctx.base_url(DIRECT)
    for dg in digests:
        run(["curl", "-s", "-o", "/dev/null", "-X", "DELETE",
             f"{base}/v2/{repo}/blobs/{urllib.parse.quote(dg)}"], 30)


def concurrent_uploads(ctx: Ctx, target: str, proto: str = "h1",
                       with_pull: bool = True) -> tuple[float, int, float]:
    """All uploads and one pull at once, each in its own thread; returns (seconds, failures,
    CPU seconds of the client processes, which are waited for and so counted in `os.times`)."""
    a = ctx.args
    failures = []
    # They share the machine: each may take as long as the whole batch at 20 MB/s.
    batch = sum(os.path.getsize(path) for path, _ in ctx.uploads) + (a.pull_mib * MIB if with_pull else 0)
    timeout = max(a.xfer_timeout, 60 + batch // 20_000_000)

    def one(item):
        path, digest = item
        push(ctx, target, proto, path, digest, timeout, repo=UPLOAD_REPO)

    def the_pull():
        pull(ctx, target, "h1", ctx.pull_digest, timeout)

    t0 = time.time()
    c0 = os.times()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(ctx.uploads) + 1) as pool:
        futs = [pool.submit(one, u) for u in ctx.uploads] + ([pool.submit(the_pull)] if with_pull else [])
        for f in concurrent.futures.as_completed(futs, timeout=timeout + 30):
            e = f.exception()
            if isinstance(e, KeyboardInterrupt):
                raise e
            if e is not None:
                failures.append(str(e))
    total = time.time() - t0
    c1 = os.times()
    clients_cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    for f in failures[:3]:
        log(f"  {target}: {f}")
    return total, len(failures), clients_cpu


def w_token(ctx: Ctx, res: Results, rnd: int) -> None:
    if not ctx.token_gate:
        return
    path = f"/v2/{PULL_REPO}/blobs/{ctx.pull_digest}"
    for proto in ("h1", "h2"):
        key = f"token.head.c10.{proto}"
        res.row(f"{key}.rps", f"7. token mode: HEAD blob, Bearer (c10's token), {pname(proto)}", "req/s",
                "up", "vs basic gate", group="7. Token mode")
        res.row(f"{key}.lat", f"7. token mode: HEAD blob, Bearer (c10's token), {pname(proto)}", "p50/p99 ms",
                "down", group="7. Token mode")
    port = ctx.token_gate.tls_port
    url = (f"https://127.0.0.1:{port}/token?scope=repository:{PULL_REPO}:pull"
           f"&service={TOKEN_SERVICE}")
    for proto in ("h1", "h2"):
        try:
            rc, out, err = run(["curl", "-sS", "--fail", "--cacert", ctx.ca, "-u", f"c10:{PASSWORDS['c10']}",
                                url], 30)
            if rc != 0:
                raise BenchError(f"token request: rc={rc} {err.strip()}")
            tok = json.loads(out).get("token") or json.loads(out).get("access_token")
            turl = f"https://127.0.0.1:{port}{path}"
            if proto == "h1":
                r = ab(ctx, turl, "HEAD", f"Bearer {tok}", ctx.args.duration, 200)
            else:
                r = h2load(ctx, turl, "HEAD", f"Bearer {tok}", ctx.args.duration, 200)
            add_load(res, f"token.head.c10.{proto}", GATE, r)
        except (BenchError, ValueError) as e:
            res.err(f"round {rnd} token {proto}", e)





WORKLOADS: list[tuple[str, Workload]] = [
    ("pull", w_pull),
    ("pull4", w_pull_big),
    ("push", w_push),
    ("auth", w_auth),
    ("401", w_401),
    ("handshake", w_handshake),
    ("concurrent", w_concurrent),
    ("slow", w_slow),
    ("skopeo", w_skopeo),
    ("token", w_token),
]
