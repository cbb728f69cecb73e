"""Certificates and users: one CA, server certificates (P-256 or RSA-2048) for localhost and
127.0.0.1, and the htpasswd file both proxies read."""

from __future__ import annotations

from dataclasses import dataclass

from .common import USERS
from .procs import run

_T = 60  # seconds per openssl/htpasswd call


@dataclass(frozen=True)
class Pki:
    """Paths: the CA certificate, the server chain (leaf + CA) and its PKCS#8 key."""

    ca: str
    cert: str
    key: str


def make_ca(d: str) -> tuple[str, str]:
    """A P-256 CA; returns (certificate, key)."""
    ca_key, ca_crt = f"{d}/ca.key", f"{d}/ca.pem"
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key], _T, check=True)
    run(["openssl", "req", "-x509", "-new", "-key", ca_key, "-sha256", "-days", "30",
         "-subj", "/CN=registry-gate bench CA", "-out", ca_crt], _T, check=True)
    return ca_crt, ca_key


def key_args(kind: str) -> list[str]:
    """openssl genpkey arguments for a server key: "ec" (P-256) or "rsa" (RSA-2048)."""
    if kind == "ec":
        return ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    if kind == "rsa":
        return ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    raise ValueError(f"unknown key kind {kind!r}")


def make_server_cert(d: str, ca_crt: str, ca_key: str, kind: str = "ec") -> Pki:
    """A server certificate signed by the CA; the chain file holds leaf + CA, the same for both
    servers. genpkey writes PKCS#8, which both rustls and nginx read."""
    key, csr, leaf, crt = (f"{d}/server-{kind}.key", f"{d}/server-{kind}.csr", f"{d}/leaf-{kind}.pem",
                           f"{d}/server-{kind}.pem")
    ext = f"{d}/server.ext"
    run(["openssl", "genpkey"] + key_args(kind) + ["-out", key], _T, check=True)
    run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost", "-out", csr], _T, check=True)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "30", "-sha256", "-extfile", ext, "-out", leaf], _T, check=True)
    with open(crt, "w") as f, open(leaf) as lf, open(ca_crt) as cf:
        f.write(lf.read() + cf.read())
    return Pki(ca=ca_crt, cert=crt, key=key)


def make_pki(d: str) -> tuple[Pki, Pki]:
    """One CA and two server certificates under it: (P-256, RSA-2048)."""
    ca_crt, ca_key = make_ca(d)
    return make_server_cert(d, ca_crt, ca_key, "ec"), make_server_cert(d, ca_crt, ca_key, "rsa")


def make_htpasswd(path: str) -> None:
    lines = []
    for user, flags, pw in USERS:
        _, out, _ = run(["htpasswd", "-n", "-b"] + flags + [user, pw], _T, check=True)
        lines.append(out.strip())
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
