"""Preparing a run: the gate binary (copied into the temp dir), the tools, certificates, users,
test data, the registry seeded directly, and the proxies; --serve's endpoint listing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from . import images
from .certs import make_htpasswd, make_pki
from .clients import Ctx, pull, push, skopeo_copy
from .common import (DIRECT, GATE, IMAGE_REPO, MIB, NGX_OFF, NGX_ON, PASSWORDS, PROXIES, PULL_REPO,
                     PUSH_REPO, REPO, BenchError, basic, fmt_size, log)
from .data import hash_repeated, write_random, write_variants
from .procs import run, run_fed, start_gate, start_nginx, start_registry
from .workloads import concurrent_uploads


def find_binary(args: argparse.Namespace, d: str) -> str:
    """Copies the gate binary into the temp dir (a shared CARGO_TARGET_DIR may be rebuilt by
    another checkout while we run) and returns the copy."""
    if args.build:
        log("cargo build --release")
        rc, out, err = run(["cargo", "build", "--release", "--message-format=json-render-diagnostics"],
                           3600, cwd=REPO, env=dict(os.environ))
        if rc != 0:
            raise BenchError(f"cargo build failed:\n{err[-3000:]}")
        exe = None
        for line in out.splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if m.get("reason") == "compiler-artifact" and m.get("executable") and \
                    m["target"]["name"] == "registry-gate":
                exe = m["executable"]
        if not exe:
            raise BenchError("cargo build did not report the registry-gate executable")
        src = exe
    elif args.gate:
        src = args.gate
    else:
        tdir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        src = os.path.join(tdir, "release", "registry-gate")
    if not os.path.exists(src):
        raise BenchError(f"{src} not found: build with `cargo build --release`, or pass --gate BIN or --build")
    dst = f"{d}/registry-gate"
    shutil.copy2(src, dst)
    newest = max((os.path.getmtime(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(REPO, "src"))
                  for f in fs), default=0)
    if newest > os.path.getmtime(dst):
        log(f"WARNING: {src} is older than files in src/: it may not be this checkout's build")
    return dst


def check_tools() -> None:
    missing = [t for t in ("curl", "wrk", "ab", "h2load", "nghttp", "nginx", "openssl", "htpasswd", "skopeo",
                           "/usr/bin/docker-registry")
               if not shutil.which(t)]
    if missing:
        raise BenchError("missing: " + ", ".join(missing) +
                         " (Debian: curl wrk nghttp2-client nginx openssl apache2-utils docker-registry skopeo)")



def setup(ctx: Ctx) -> None:
    a, d = ctx.args, ctx.d
    log(f"temp dir {d}")
    ec, rsa = make_pki(d)
    ctx.ca, ctx.cert_ec, ctx.key_ec, ctx.cert_rsa, ctx.key_rsa = ec.ca, ec.cert, ec.key, rsa.cert, rsa.key
    cert, key = ec.cert, ec.key
    htp = ctx.htpasswd = f"{d}/htpasswd"
    make_htpasswd(htp)

    log(f"test data: {fmt_size(a.pull_mib * MIB)} random blob, {a.uploads} × {fmt_size(a.upload_mib * MIB)}, "
        f"{a.image_layers}-layer image")
    big = f"{d}/big.bin"
    ctx.pull_digest = write_random(big, a.pull_mib * MIB)
    ctx.big4_digest = "sha256:" + hash_repeated(big, 4)
    ctx.push_file, ctx.push_digest = big, ctx.pull_digest
    if a.push_mib != a.pull_mib:
        ctx.push_file = f"{d}/push.bin"
        ctx.push_digest = write_random(ctx.push_file, a.push_mib * MIB)
    base = f"{d}/upload-base.bin"
    write_random(base, a.upload_mib * MIB)
    os.makedirs(f"{d}/uploads", exist_ok=True)
    ctx.uploads = write_variants(base, a.uploads, f"{d}/uploads")
    os.unlink(base)
    if "skopeo" in a.only:
        sizes = images.layer_sizes(a.image_layers, a.image_min_mib * MIB, a.image_max_mib * MIB)
        ctx.image_dir, ctx.image_bytes = f"{d}/image-oci", sum(sizes)
        images.oci_layout(ctx.image_dir, a.image_layers, sizes)

    log("starting docker-registry")
    reg = start_registry(d)
    ctx.servers["registry"] = reg
    # Seed the registry directly: the pull blob, the 4x blob (streamed), and the uploads once,
    # so that every measured push and upload finds its blob present (the same registry path).
    log("seeding the registry directly")
    push(ctx, DIRECT, "h1", big, ctx.pull_digest, a.xfer_timeout, repo=PULL_REPO)
    if "pull4" in a.only:
        push(ctx, DIRECT, "h1", None, ctx.big4_digest, a.xfer_timeout * 4, repo=PULL_REPO,
             stdin_feed=lambda cmd, timeout: run_fed(cmd, timeout, big, 4))
    push(ctx, DIRECT, "h1", ctx.push_file, ctx.push_digest, a.xfer_timeout, repo=PUSH_REPO)
    concurrent_uploads(ctx, DIRECT)
    if ctx.image_dir:
        skopeo_copy(f"oci:{ctx.image_dir}:latest", f"docker://127.0.0.1:{reg.plain_port}/{IMAGE_REPO}:latest",
                    600, None)

    log("starting registry-gate and nginx (2 instances)")
    gate_bin = ctx.gate_bin
    ctx.servers[GATE] = start_gate(d, "gate", gate_bin, reg.plain_port, cert, key, htp)
    ctx.servers[NGX_ON] = start_nginx(d, NGX_ON, True, reg.plain_port, cert, key, htp)
    ctx.servers[NGX_OFF] = start_nginx(d, NGX_OFF, False, reg.plain_port, cert, key, htp)
    rc, out, _ = run([gate_bin, "--help"], 20)
    if "token-key" in out and "token" in a.only:
        tk = f"{d}/token.key"
        run([gate_bin, "token-key", tk], 20, check=True)
        ctx.token_gate = start_gate(d, "gate-token", gate_bin, reg.plain_port, cert, key, htp, token_key=tk)
    elif "token" in a.only:
        log("this gate has no `token-key` subcommand: token mode skipped")
    for t in PROXIES:
        for proto in ("h1", "h2"):
            pull(ctx, t, proto, ctx.pull_digest, a.xfer_timeout)  # sanity and warm-up



def serve_only(ctx: Ctx, seconds: int) -> None:
    """Leaves the servers up for manual experiments (profiling), then stops them."""
    print(f"temp dir: {ctx.d}  (CA: {ctx.ca})")
    for name, s in ctx.servers.items():
        port = s.tls_port or s.plain_port
        print(f"{name:15} pid {s.proc.pid:7}  {'https' if s.tls_port else 'http'}://127.0.0.1:{port}")
    if ctx.token_gate:
        print(f"{'gate (token)':15} pid {ctx.token_gate.proc.pid:7}  https://127.0.0.1:{ctx.token_gate.tls_port}")
    for u in PASSWORDS:
        print(f"user {u}: {PASSWORDS[u]}  ({basic(u)})")
    print(f"pull blob: /v2/{PULL_REPO}/blobs/{ctx.pull_digest}")
    print(f"serving for {seconds} s; Ctrl-C stops everything", flush=True)
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(1)
