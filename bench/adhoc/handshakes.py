#!/usr/bin/env python3
"""Interim driver (issue #14), to be folded into bench/run: CPU per new-connection request, gate variants vs nginx, interleaved rounds."""
import importlib.machinery, importlib.util, os, sys, json, statistics
import tempfile
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_loader("benchrun", importlib.machinery.SourceFileLoader("benchrun", os.path.join(REPO, "bench", "run")))
B = importlib.util.module_from_spec(spec); spec.loader.exec_module(B)
sys.path.insert(0, os.path.join(REPO, "bench")); from gatebench import parsers
BIN = os.environ.get("BIN", os.path.join(REPO, "target", "release", "registry-gate"))
KEY = os.environ.get("KEY", "ec")  # ec | rsa
variants = json.loads(sys.argv[1]); ROUNDS = int(os.environ.get("ROUNDS", "3")); DUR = os.environ.get("DUR", "4")
d = tempfile.mkdtemp(prefix=f"gatebench-hs-{KEY}-"); os.makedirs(d, exist_ok=True)
try:
    ca, cert, key = B.make_pki(d)
    if KEY == "rsa":
        key = f"{d}/rsa.key"; B.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key], 60, check=True)
        B.run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost", "-out", f"{d}/rsa.csr"], 60, check=True)
        B.run(["openssl", "x509", "-req", "-in", f"{d}/rsa.csr", "-CA", ca, "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-days", "30",
               "-extfile", f"{d}/server.ext", "-out", f"{d}/rsa-leaf.pem"], 60, check=True)
        cert = f"{d}/rsa.pem"; open(cert, "w").write(open(f"{d}/rsa-leaf.pem").read() + open(ca).read())
    htp = f"{d}/htpasswd"; B.make_htpasswd(htp)
    reg = B.start_registry(d)
    srvs = {"nginx": B.start_nginx(d, "ngx", False, reg.plain_port, cert, key, htp)}
    for name, env in variants.items():
        B.GATE_ENV.clear(); B.GATE_ENV.update(env)
        srvs[name] = B.start_gate(d, "gate-" + name, BIN, reg.plain_port, cert, key, htp)
    samples = {}
    for rnd in range(ROUNDS):
        for wl, auth in (("401", None), ("auth", B.basic("apr1"))):
            for name, s in srvs.items():
                cmd = ["ab", "-q", "-c16", "-t", DUR, "-n", "200000", "-s", "30"]
                if auth: cmd += ["-H", f"Authorization: {auth}"]
                cmd.append(f"https://127.0.0.1:{s.tls_port}/v2/")
                c0 = s.cpu_seconds(); rc, out, err = B.run(cmd, 120); c1 = s.cpu_seconds()
                r = parsers.ab(out, 401 if auth is None else 200)
                samples.setdefault((wl, name), []).append((c1 - c0) / max(r.requests, 1) * 1e6)
                print(wl, name, rnd, r.requests, r.errors, round((c1 - c0) / max(r.requests, 1) * 1e6), "us/conn", open("/proc/loadavg").read().split()[0], flush=True)
    print("KEY", KEY)
    for (wl, name), v in sorted(samples.items()):
        ng = statistics.median(samples[(wl, "nginx")])
        print(f"{wl:5} {name:12} median {statistics.median(v):7.0f} us CPU/conn  ratio to nginx {statistics.median(v)/ng:.2f}  samples {[round(x) for x in v]}")
finally:
    B.stop_all()
    import shutil; shutil.rmtree(d, ignore_errors=True)
