#!/usr/bin/env bash
# Makes a throwaway CA and a server certificate for trying registry-gate locally.
#
#   certs-example/make-certs.sh [-o DIR] [EXTRA_NAME...]
#
# Writes into DIR (default ./certs):
#   ca.pem         the test CA's certificate: what clients must trust
#   ca.key         the test CA's key (keep it, or delete it once you are done issuing)
#   server.pem     the server certificate followed by the CA, like a provider's .pem / fullchain.pem
#   server.key     the server's key, PKCS#8 PEM
#   client/ca.crt  a copy of ca.pem alone in a folder, for `skopeo --cert-dir` / `podman --cert-dir`
#
# The server certificate names localhost, 127.0.0.1 and ::1, plus every EXTRA_NAME (a DNS name
# or an IP address), e.g. `make-certs.sh -o certs registry.lan 192.168.1.20`.
#
# Running it again keeps the CA (so clients that trust it go on trusting it) and keeps the
# server certificate while it is valid for at least 30 more days and names everything asked for;
# otherwise a new server certificate is issued from the same CA. Needs only openssl.
set -euo pipefail

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

out=./certs
while getopts ':o:h' opt; do
    case "$opt" in
        o) out=$OPTARG ;;
        h)
            usage
            exit 0
            ;;
        :)
            echo "make-certs.sh: -$OPTARG needs a folder" >&2
            exit 2
            ;;
        *)
            echo "make-certs.sh: unknown option -$OPTARG (try -h)" >&2
            exit 2
            ;;
    esac
done
shift $((OPTIND - 1))

if ! command -v openssl >/dev/null 2>&1; then
    echo "make-certs.sh: openssl is missing (Debian/Ubuntu: apt-get install openssl)" >&2
    exit 1
fi

is_ipv4() { [[ $1 =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]]; }
is_ipv6() { [[ $1 == *:* && $1 =~ ^[0-9A-Fa-f:.]+$ ]]; }

dns_names=(localhost)
ip_names=(127.0.0.1 ::1)
for name in "$@"; do
    if is_ipv4 "$name" || is_ipv6 "$name"; then
        ip_names+=("$name")
    elif [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
        dns_names+=("$name")
    else
        echo "make-certs.sh: $name is neither a DNS name nor an IP address" >&2
        exit 2
    fi
done

san=""
for n in "${dns_names[@]}"; do san+="${san:+,}DNS:$n"; done
for n in "${ip_names[@]}"; do san+="${san:+,}IP:$n"; done

mkdir -p "$out"
out=$(cd "$out" && pwd)
ca_pem=$out/ca.pem
ca_key=$out/ca.key
server_pem=$out/server.pem
server_key=$out/server.key

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Keys are secrets: nothing this script creates is readable by others until chmod says so.
umask 077

if [[ -s $ca_pem && -s $ca_key ]]; then
    echo "keeping the CA in $ca_pem"
else
    echo "making a test CA"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca_key"
    openssl req -x509 -new -key "$ca_key" -sha256 -days 3650 \
        -subj "/O=registry-gate test CA/CN=registry-gate test CA $(date -u +%Y-%m-%d)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$ca_pem"
    # A new CA makes any old server certificate useless.
    rm -f "$server_pem" "$server_key"
fi

# True when the existing server certificate can stay.
server_still_good() {
    [[ -s $server_pem && -s $server_key ]] || return 1
    local leaf=$scratch/leaf.pem
    # The first certificate of server.pem is the leaf.
    openssl x509 -in "$server_pem" -out "$leaf" 2>/dev/null || return 1
    openssl verify -CAfile "$ca_pem" "$leaf" >/dev/null 2>&1 || return 1
    openssl x509 -in "$leaf" -noout -checkend $((30 * 24 * 3600)) >/dev/null 2>&1 || return 1
    local n
    for n in "${dns_names[@]}"; do
        openssl x509 -in "$leaf" -noout -checkhost "$n" 2>/dev/null | grep -q 'does match' || return 1
    done
    for n in "${ip_names[@]}"; do
        openssl x509 -in "$leaf" -noout -checkip "$n" 2>/dev/null | grep -q 'does match' || return 1
    done
    # The key must belong to the certificate.
    [[ "$(openssl x509 -in "$leaf" -noout -pubkey)" == "$(openssl pkey -in "$server_key" -pubout)" ]]
}

if server_still_good; then
    echo "keeping the server certificate in $server_pem"
else
    echo "issuing a server certificate for ${san//,/, }"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$scratch/server.key"
    openssl req -new -key "$scratch/server.key" -subj "/CN=localhost" -out "$scratch/server.csr"
    cat >"$scratch/ext.cnf" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl x509 -req -in "$scratch/server.csr" -CA "$ca_pem" -CAkey "$ca_key" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 825 \
        -extfile "$scratch/ext.cnf" -out "$scratch/leaf.pem" 2>/dev/null
    # Leaf first, then the CA: the same shape as a provider's fullchain .pem.
    cat "$scratch/leaf.pem" "$ca_pem" >"$scratch/server.pem"
    mv -f "$scratch/server.key" "$server_key"
    mv -f "$scratch/server.pem" "$server_pem"
fi

mkdir -p "$out/client"
cp -f "$ca_pem" "$out/client/ca.crt"
chmod 600 "$ca_key" "$server_key"
chmod 644 "$ca_pem" "$server_pem" "$out/client/ca.crt"
chmod 755 "$out/client"

cat <<EOF
CA certificate:      $ca_pem
CA key:              $ca_key
server certificate:  $server_pem (leaf + CA)
server key:          $server_key (PKCS#8)
client trust folder: $out/client (ca.crt, for --cert-dir)
names:               ${san//,/, }
EOF
