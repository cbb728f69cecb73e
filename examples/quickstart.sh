#!/usr/bin/env bash
# registry-gate in front of a throwaway registry on this machine, in one command.
#
#   examples/quickstart.sh [--detach] [--port PORT]
#
# Installs Debian's docker-registry and openssl if they are missing (apt-get, as root or through
# sudo), builds the gate (cargo build --release --locked), starts the registry on a free
# 127.0.0.1 port with its storage in a temporary folder, makes a test CA and certificate, a user
# `demo` with a random password, and starts the gate in front of the registry with TLS and
# Basic authentication. Then it prints how to log in with skopeo, docker and curl.
#
# Without --detach it stays in the foreground showing the gate's log; Ctrl-C stops both
# processes and removes the temporary folder. With --detach it leaves them running and prints
# their PIDs and the command that stops them.
#
#   --port PORT   the gate's port (default 5443, or a free port if 5443 is taken)
#
# Environment: CARGO_TARGET_DIR is honoured; TMPDIR sets where the temporary folder goes.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

detach=false
gate_port=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --detach) detach=true ;;
        --port)
            [[ $# -ge 2 ]] || { echo "quickstart: --port needs a number" >&2; exit 2; }
            gate_port=$2
            shift
            ;;
        --port=*) gate_port=${1#--port=} ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "quickstart: unknown argument $1 (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done
if [[ -n $gate_port && ! $gate_port =~ ^[0-9]+$ ]]; then
    echo "quickstart: --port $gate_port is not a port number" >&2
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
    printf 'quickstart: %s\n' "$*" >&2
    exit 1
}

# --- 1. Packages -------------------------------------------------------------------------------
registry_bin=/usr/bin/docker-registry
missing=()
[[ -x $registry_bin ]] || missing+=(docker-registry)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
if [[ ${#missing[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]}, and this is not a Debian-like system: install them by hand"
    as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: run as root, or install sudo"
        as_root=(sudo)
    fi
    say "installing ${missing[*]} with apt-get"
    # Update the package lists only when apt does not know a package yet (a fresh machine).
    for pkg in "${missing[@]}"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
            break
        fi
    done
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
    # Debian's package also enables its own registry service on :5000; this script does not use
    # it (`systemctl disable --now docker-registry` turns it off).
fi
[[ -x $registry_bin ]] || die "$registry_bin is still missing after installing docker-registry"

# --- 2. The gate -------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 ||
    die "cargo is missing: install Rust 1.88 or newer with rustup (Debian 12's rustc is too old)"
say "building registry-gate (cargo build --release --locked)"
cargo build --release --locked
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
gate_bin=$target_dir/release/registry-gate
[[ -x $gate_bin ]] || die "the build did not produce $gate_bin"

# --- 3. A temporary folder, and cleaning up ------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/registry-gate-quickstart.XXXXXX")
registry_pid=""
gate_pid=""
tail_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in $tail_pid $gate_pid $registry_pid; do
        kill "$pid" 2>/dev/null || true
    done
    # Give both a moment to stop cleanly (the gate drains open requests), then insist.
    local deadline=$((SECONDS + 10))
    for pid in $gate_pid $registry_pid; do
        while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
    [[ $status -eq 0 ]] || echo "quickstart: stopped (status $status); removed $work" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts a command in the background with its output in a log file. With --detach it runs in
# a session of its own, so closing this terminal does not stop it.
start_bg() {
    local log=$1
    shift
    if $detach; then
        setsid "$@" </dev/null >"$log" 2>&1 &
    else
        "$@" </dev/null >"$log" 2>&1 &
    fi
}

# A TCP port nobody listens on right now.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local p tries
    for tries in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! port_in_use "$p"; then
            echo "$p"
            return
        fi
    done
    die "found no free port after $tries tries"
}
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until "$@" succeeds, for at most $1 seconds, while process $2 is alive.
wait_for() {
    local seconds=$1 pid=$2 what=$3 log=$4
    shift 4
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "quickstart: $what exited; its log ($log):" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            echo "quickstart: $what did not answer within ${seconds}s; its log ($log):" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# --- 4. The registry -----------------------------------------------------------------------------
registry_port=$(free_port)
mkdir -p "$work/data"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $work/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$registry_port
  secret: $(openssl rand -hex 16)
EOF
say "starting the registry on http://127.0.0.1:$registry_port (storage in $work/data)"
start_bg "$work/registry.log" "$registry_bin" serve "$work/registry.yml"
registry_pid=$!
wait_for 30 "$registry_pid" "the registry" "$work/registry.log" \
    curl -sf "http://127.0.0.1:$registry_port/v2/"

# --- 5. Certificate, user, config ----------------------------------------------------------------
say "making a test CA and a certificate for localhost"
"$root/certs-example/make-certs.sh" -o "$work/certs" >/dev/null
ca=$work/certs/ca.pem

password=$(openssl rand -hex 12)
"$gate_bin" htpasswd set -c --password "$password" "$work/htpasswd" demo >/dev/null

if [[ -z $gate_port ]]; then
    if port_in_use 5443; then gate_port=$(free_port); else gate_port=5443; fi
elif port_in_use "$gate_port"; then
    die "port $gate_port is already in use"
fi
admin_port=$(free_port)
cat >"$work/gate.toml" <<EOF
# Written by examples/quickstart.sh; relative paths are relative to this file's folder.
listen = "127.0.0.1:$gate_port"
upstream = "http://127.0.0.1:$registry_port"
# A free port, so that two quickstarts never collide.
admin_listen = "127.0.0.1:$admin_port"

[tls]
cert = "certs/server.pem"
key = "certs/server.key"

[auth]
htpasswd = "htpasswd"
realm = "registry-gate quickstart"
EOF

say "checking the config (registry-gate check)"
"$gate_bin" check --config "$work/gate.toml"

# --- 6. The gate ---------------------------------------------------------------------------------
say "starting registry-gate on https://localhost:$gate_port"
start_bg "$work/gate.log" "$gate_bin" serve --config "$work/gate.toml"
gate_pid=$!
# Ready when an anonymous ping gets the Basic challenge over verified TLS.
# shellcheck disable=SC2317  # called through wait_for
gate_answers_401() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" "https://localhost:$gate_port/v2/") == 401 ]]
}
wait_for 30 "$gate_pid" "registry-gate" "$work/gate.log" gate_answers_401

host=localhost:$gate_port
cat <<EOF

registry-gate is ready.

  URL:       https://$host  (upstream registry: http://127.0.0.1:$registry_port)
  CA:        $ca
  user:      demo
  password:  $password
  files:     $work  (gate.toml, htpasswd, certs/, gate.log, registry.log)

curl:
  curl --cacert $ca -u demo:$password https://$host/v2/_catalog

skopeo (trusts the CA through a folder holding ca.crt):
  skopeo login --cert-dir $work/certs/client $host -u demo -p $password
  skopeo copy --dest-cert-dir $work/certs/client docker-archive:IMAGE.tar docker://$host/demo/app:1

podman: the same --cert-dir, e.g.
  podman login --cert-dir $work/certs/client $host -u demo -p $password

docker: the daemon trusts a registry's CA from /etc/docker/certs.d/HOST:PORT/ca.crt (no restart):
  sudo mkdir -p /etc/docker/certs.d/$host
  sudo cp $ca /etc/docker/certs.d/$host/ca.crt
  docker login $host -u demo --password-stdin <<<'$password'
  docker tag busybox $host/demo/busybox && docker push $host/demo/busybox

EOF

# --- 7. Foreground or detached -----------------------------------------------------------------
if $detach; then
    trap - EXIT INT TERM
    cat <<EOF
Running detached: registry PID $registry_pid, registry-gate PID $gate_pid.
Stop both and remove the temporary folder with:
  kill $gate_pid $registry_pid; sleep 1; rm -rf $work
EOF
    exit 0
fi

echo "The gate's log follows. Ctrl-C stops the gate and the registry and removes $work."
tail -n +1 -f "$work/gate.log" &
tail_pid=$!
# Returns when either process ends; Ctrl-C interrupts it and runs cleanup.
wait -n "$gate_pid" "$registry_pid" || true
for pid in "$gate_pid" "$registry_pid"; do
    kill -0 "$pid" 2>/dev/null || echo "quickstart: process $pid ended unexpectedly" >&2
done
exit 1
