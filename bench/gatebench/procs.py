"""Processes: starting and stopping the registry, nginx and the gate; running clients with a
timeout; CPU time and peak RSS of a server from /proc.

Every child runs in its own process group and is tracked, so that stop_all() can end all of them
on exit, on an error and on Ctrl-C/SIGTERM (SIGTERM first, SIGKILL after 5 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from typing import IO, Callable

from .common import MIB, PASSWORDS, TOKEN_SERVICE, XFER_USER, BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_UA_RULE = r'"^(docker\/1\.(3|4|5(?!\.[0-9]-dev))|Go ).*$"'

_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_stopping = threading.Event()


def _track(p: subprocess.Popen) -> None:
    with _children_lock:
        _children.add(p)


def _untrack(p: subprocess.Popen) -> None:
    with _children_lock:
        _children.discard(p)


def _kill_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    """Stops every child we started: SIGTERM to its group, then SIGKILL after 5 s."""
    with _children_lock:
        procs = list(_children)
    for p in procs:
        if p.poll() is None:
            _kill_group(p, signal.SIGTERM)
    deadline = time.time() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            _kill_group(p, signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _untrack(p)


def run(cmd: list[str], timeout: float, stdin: IO[bytes] | None = None, input_bytes: bytes | None = None,
        env: dict[str, str] | None = None, check: bool = False, cwd: str | None = None) -> tuple[int, str, str]:
    """Runs a client command to completion (bounded by `timeout`); returns (rc, stdout, stderr)."""
    if _stopping.is_set():
        raise KeyboardInterrupt
    p = subprocess.Popen(
        cmd,
        stdin=stdin if stdin is not None else (subprocess.PIPE if input_bytes else subprocess.DEVNULL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    _track(p)
    try:
        out, err = p.communicate(input=input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p, signal.SIGKILL)
        out, err = p.communicate()
        _untrack(p)
        raise BenchError(f"timed out after {timeout} s: {' '.join(cmd[:3])} ...")
    finally:
        _untrack(p)
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    if check and p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {p.returncode}: {err.strip()[-500:]}")
    return p.returncode, out, err


def start_server(cmd: list[str], logfile: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    f = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env,
                         start_new_session=True)
    f.close()
    _track(p)
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, ok: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
               logfile: str | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = open(logfile, errors="replace").read()[-2000:] if logfile else ""
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail}")
        try:
            if ok():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready within {timeout} s")



# --------------------------------------------------------------------------------------------
# /proc: CPU time and peak RSS of a server (nginx: master plus workers).

def proc_children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            kids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        return kids


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14 and 15)


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """A running proxy (or the registry) whose CPU and memory we can read."""

    def __init__(self, name: str, proc: subprocess.Popen, tls_port: int | None = None,
                 plain_port: int | None = None, multi: bool = False) -> None:
        self.name, self.proc, self.multi = name, proc, multi
        self.tls_port, self.plain_port = tls_port, plain_port
        self.restart: Callable[[], Server] = lambda: self

    def pids(self) -> list[int]:
        if self.multi:  # nginx: the master and its workers
            return [self.proc.pid] + proc_children(self.proc.pid)
        return [self.proc.pid]

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                total += cpu_ticks(pid)
            except OSError:
                pass
        return total / CLK_TCK

    def reset_peak(self) -> None:
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError as e:
                raise BenchError(f"cannot reset peak RSS of {self.name} ({pid}): {e}")

    def peak_rss_mib(self) -> tuple[float | None, float | None]:
        """(largest VmHWM of one process, sum over processes), in MiB."""
        vals = []
        for pid in self.pids():
            try:
                vals.append(status_kb(pid, "VmHWM") / 1024)
            except OSError:
                pass
        return (max(vals) if vals else None, sum(vals) if vals else None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                total += status_kb(pid, "VmRSS") / 1024
            except OSError:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            _kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=5)
        _untrack(self.proc)



def start_registry(d: str) -> Server:
    port = free_port()
    cfg = f"{d}/registry.yml"
    with open(cfg, "w") as f:
        f.write(f"""version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {d}/registry-data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: registry-gate-bench
""")
    lf = f"{d}/registry.log"
    p = start_server(["/usr/bin/docker-registry", "serve", cfg], lf)
    srv = Server("registry", p, plain_port=port)
    wait_until("docker-registry",
               lambda: run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{port}/v2/"], 5)[1] == "200", 30, p, lf)
    return srv


def nginx_conf(prefix: str, port: int, reg_port: int, buffering: bool, cert: str, key: str, htpasswd: str) -> str:
    user = "user root;  # the bench runs nginx as root with a private prefix\n" if os.geteuid() == 0 else ""
    return f"""# nginx per the distribution recipe "Authenticate proxy with nginx", plus upstream keep-alive
# and unbuffered request bodies. Generated by bench/run (gatebench.procs).
{user}worker_processes auto;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
  worker_connections 4096;
}}
http {{
  access_log off;   # the gate runs with log level warn (no access log) as well
  # Bench harness, not recipe: the default (1000) makes nginx close a connection (HTTP/2:
  # GOAWAY) after 1000 requests, and h2load does not reconnect, so a load run would stop.
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/client_body_temp;
  proxy_temp_path {prefix}/proxy_temp;
  fastcgi_temp_path {prefix}/fastcgi_temp;
  uwsgi_temp_path {prefix}/uwsgi_temp;
  scgi_temp_path {prefix}/scgi_temp;

  upstream docker-registry {{
    server 127.0.0.1:{reg_port};
    keepalive 64;
  }}

  ## The registry always sets this header; nginx adds it to its own answers (401).
  map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{
    '' 'registry/2.0';
  }}

  server {{
    listen 127.0.0.1:{port} ssl http2;   # nginx 1.22: "http2" on listen (no "http2 on;" yet)
    server_name localhost;

    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers 'EECDH+AESGCM:EDH+AESGCM:AES256+EECDH:AES256+EDH';
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:SSL:10m;

    # disable any limits to avoid HTTP 413 for large image uploads
    client_max_body_size 0;

    # required to avoid HTTP 411: see Issue #1486 (https://github.com/moby/moby/issues/1486)
    chunked_transfer_encoding on;

    location /v2/ {{
      # Do not allow connections from docker 1.5 and earlier
      # docker pre-1.6.0 did not properly set the user agent on ping, catch "Go *" user agents
      if ($http_user_agent ~ {NGINX_UA_RULE} ) {{
        return 404;
      }}

      auth_basic "Registry realm";
      auth_basic_user_file {htpasswd};

      add_header 'Docker-Distribution-Api-Version' $docker_distribution_api_version always;

      proxy_pass                          http://docker-registry;
      proxy_set_header  Host              $http_host;   # required for docker client's sake
      proxy_set_header  X-Real-IP         $remote_addr; # pass on real client's IP
      proxy_set_header  X-Forwarded-For   $proxy_add_x_forwarded_for;
      proxy_set_header  X-Forwarded-Proto $scheme;
      proxy_read_timeout                  900;

      # Additions to the recipe: upstream keep-alive, streamed request bodies.
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering {"on" if buffering else "off"};
    }}
  }}
}}
"""


def https_ready(port: int, user: str | None = None) -> str:
    cmd = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/v2/"]
    if user:
        cmd[1:1] = ["-u", f"{user}:{PASSWORDS[user]}"]
    return run(cmd, 10)[1]


def start_nginx(d: str, name: str, buffering: bool, reg_port: int, cert: str, key: str, htpasswd: str,
                port: int | None = None) -> Server:
    prefix = f"{d}/{name}"
    os.makedirs(prefix, exist_ok=True)
    port = port or free_port()
    conf = f"{prefix}/nginx.conf"
    with open(conf, "w") as f:
        f.write(nginx_conf(prefix, port, reg_port, buffering, cert, key, htpasswd))
    base = ["nginx", "-p", prefix + "/", "-e", f"{prefix}/error.log", "-c", conf]
    run(base + ["-t", "-q"], 30, check=True)
    p = start_server(base, f"{prefix}/stderr.log")
    srv = Server(name, p, tls_port=port, multi=True)
    srv.restart = lambda: start_nginx(d, name, buffering, reg_port, cert, key, htpasswd, port)
    wait_until(name, lambda: https_ready(port, XFER_USER) == "200", 30, p, f"{prefix}/error.log")
    return srv


GATE_ENV: dict[str, str] = {}  # --gate-env KEY=VALUE


def start_gate(d: str, name: str, binary: str, reg_port: int, cert: str, key: str, htpasswd: str,
               token_key: str | None = None, port: int | None = None) -> Server:
    port = port or free_port()
    cfg = f"{d}/{name}.toml"
    token = ""
    if token_key:
        token = f'mode = "token"\ntoken_key = "{token_key}"\nservice = "{TOKEN_SERVICE}"\n'
    with open(cfg, "w") as f:
        f.write(f"""# registry-gate for the benchmark. Generated by bench/run (gatebench.procs).
listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{reg_port}"
admin_listen = ""

[tls]
cert = "{cert}"
key = "{key}"

[auth]
htpasswd = "{htpasswd}"
realm = "Registry realm"
cache_ttl = 300
brake_failures = 0   # off: the benchmark sends thousands of requests from one address
{token}
[log]
level = "warn"       # no access log (info), the same choice as nginx's access_log off
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_GATE_")}
    env["RUST_LOG"] = "warn"
    env.update(GATE_ENV)
    lf = f"{d}/{name}.log"
    p = start_server([binary, "serve", "--config", cfg], lf, env=env)
    srv = Server(name, p, tls_port=port)
    srv.restart = lambda: start_gate(d, name, binary, reg_port, cert, key, htpasswd, token_key, port)
    wait_until(name, lambda: https_ready(port, XFER_USER) == "200", 30, p, lf)
    return srv



def run_fed(cmd: list[str], timeout: float, path: str, reps: int) -> tuple[int, str, str]:
    """Runs curl reading stdin, fed with the file `reps` times from a thread."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    _track(p)

    def feed():
        try:
            for _ in range(reps):
                with open(path, "rb") as f:
                    while b := f.read(4 * MIB):
                        p.stdin.write(b)
        except (BrokenPipeError, ValueError):
            pass
        finally:
            try:
                p.stdin.close()
            except OSError:
                pass

    th = threading.Thread(target=feed, daemon=True)
    th.start()
    # Both pipes are read by threads, so the timeout holds even when curl hangs with its
    # output open.
    outs: list[bytes] = []
    errs: list[bytes] = []
    readers = [threading.Thread(target=lambda: outs.append(p.stdout.read()), daemon=True),
               threading.Thread(target=lambda: errs.append(p.stderr.read()), daemon=True)]
    for r in readers:
        r.start()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p, signal.SIGKILL)
        raise BenchError("timed out feeding curl")
    finally:
        _untrack(p)
    for r in readers:
        r.join(5)
    return (p.returncode, (outs[0] if outs else b"").decode(errors="replace"),
            (errs[0] if errs else b"").decode(errors="replace"))

