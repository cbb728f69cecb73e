"""Names shared by the bench modules: sizes, targets, users, repositories, errors, logging."""

from __future__ import annotations

import base64
import os
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
REPO = os.path.dirname(HERE)
MIB = 1 << 20
GIB = 1 << 30

# Targets, in the order each workload visits them within a round.
GATE, NGX_ON, NGX_OFF, DIRECT = "gate", "nginx_buf_on", "nginx_buf_off", "direct"
PROXIES = [GATE, NGX_ON, NGX_OFF]
ALL_TARGETS = PROXIES + [DIRECT]
LABEL = {
    GATE: "gate",
    NGX_ON: "nginx buf on",
    NGX_OFF: "nginx buf off",
    DIRECT: "registry direct (plain HTTP/1.1, no auth)",
}

# htpasswd users: (name, htpasswd flags, password). Transfer workloads use "c5" so that
# nginx's per-request bcrypt does not dominate a transfer (it is measured in workload 3).
USERS = [
    ("c10", ["-B", "-C", "10"], "bench-pass-c10"),
    ("c5", ["-B", "-C", "5"], "bench-pass-c5"),
    ("apr1", ["-m"], "bench-pass-apr1"),
]
PASSWORDS = {u: p for u, _, p in USERS}
XFER_USER = "c5"

PULL_REPO = "bench/pull"
PUSH_REPO = "bench/push"
UPLOAD_REPO = "bench/upload"
IMAGE_REPO = "bench/image"
TOKEN_SERVICE = "registry-gate-bench"


class BenchError(Exception):
    """A measurement or setup step failed."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def basic(user: str) -> str:
    """The Authorization header value for one of USERS."""
    return "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()


def pname(proto: str) -> str:
    return "HTTP/1.1" if proto == "h1" else "HTTP/2"


def fmt_size(b: int) -> str:
    return f"{b // GIB} GiB" if b % GIB == 0 else f"{b // MIB} MiB"
