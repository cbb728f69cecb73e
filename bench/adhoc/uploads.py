#!/usr/bin/env python3
"""Interim driver (issue #14), to be folded into bench/run: concurrent uploads through the gate over h1/h2 under gate env variants."""
import concurrent.futures, importlib.machinery, importlib.util, os, sys, time, types, json
import tempfile
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_loader("benchrun", importlib.machinery.SourceFileLoader("benchrun", os.path.join(REPO, "bench", "run")))
B = importlib.util.module_from_spec(spec); spec.loader.exec_module(B)
N = int(os.environ.get("N", "20")); MIBS = int(os.environ.get("MIBS", "32"))
BIN = os.environ.get("BIN", os.path.join(REPO, "target", "release", "registry-gate"))
variants = json.loads(sys.argv[1])  # {"name": {"ENV": "v"}}
protos = sys.argv[2].split(",") if len(sys.argv) > 2 else ["h2", "h1"]
d = tempfile.mkdtemp(prefix="gatebench-uploads-"); os.makedirs(d, exist_ok=True)
args = types.SimpleNamespace(xfer_timeout=300, uploads=N, upload_mib=MIBS)
ctx = B.Ctx(args, d)
try:
    ctx.ca, cert, key = B.make_pki(d)
    htp = f"{d}/htpasswd"; B.make_htpasswd(htp)
    base = f"{d}/upload-base.bin"; B.write_random(base, MIBS * B.MIB)
    os.makedirs(f"{d}/uploads", exist_ok=True)
    ctx.uploads = B.write_variants(base, N, f"{d}/uploads"); os.unlink(base)
    reg = B.start_registry(d); ctx.servers["registry"] = reg
    for name, env in variants.items():
        B.GATE_ENV.clear(); B.GATE_ENV.update(env)
        if name == "nginx":
            g = B.start_nginx(d, "ngx", False, reg.plain_port, cert, key, htp)
        else:
            g = B.start_gate(d, "gate-" + name, BIN, reg.plain_port, cert, key, htp)
        ctx.servers[B.GATE] = g
        for proto in protos:
            g.reset_peak(); c0 = g.cpu_seconds(); r0 = reg.cpu_seconds(); t0 = time.time(); fails = []
            with concurrent.futures.ThreadPoolExecutor(max_workers=N) as pool:
                futs = [pool.submit(B.push, ctx, B.GATE, proto, p, dg, 300, B.UPLOAD_REPO) for p, dg in ctx.uploads]
                for f in concurrent.futures.as_completed(futs, timeout=900):
                    if f.exception(): fails.append(str(f.exception())[:200])
            wall = time.time() - t0
            print(json.dumps(dict(variant=name, proto=proto, wall_s=round(wall, 2), gate_cpu_s=round(g.cpu_seconds() - c0, 2),
                  reg_cpu_s=round(reg.cpu_seconds() - r0, 2), peak_rss_mib=g.peak_rss_mib()[0], fails=len(fails),
                  load=open("/proc/loadavg").read().split()[0], err=fails[:1])), flush=True)
        g.stop()
finally:
    B.stop_all()
    import shutil; shutil.rmtree(d, ignore_errors=True)
