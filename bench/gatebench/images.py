"""Test images made locally: an OCI image layout with n random layers, for `skopeo copy`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile


def _blob(root: str, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
    with open(f"{root}/blobs/sha256/{digest}", "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def layer_sizes(n: int, smallest: int, largest: int) -> list[int]:
    """n layer sizes spread geometrically from `smallest` to `largest` bytes (n >= 1)."""
    if n == 1:
        return [largest]
    f = (largest / smallest) ** (1 / (n - 1))
    return [int(round(smallest * f ** i)) for i in range(n)]


def oci_layout(root: str, layers: int, layer_bytes: "int | list[int]", seed: str = "gatebench") -> str:
    """Writes an OCI image layout at `root` with `layers` gzip layers of about `layer_bytes`
    random (incompressible) bytes each; returns the manifest digest. Reference it as
    `oci:ROOT:latest`."""
    os.makedirs(root, exist_ok=True)
    with open(f"{root}/oci-layout", "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    descs, diff_ids = [], []
    for i in range(layers):
        content = os.urandom(layer_bytes if isinstance(layer_bytes, int) else layer_bytes[i])
        tar_buf = io.BytesIO()
        with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            info = tarfile.TarInfo(f"layer{i:03d}-{seed}.bin")
            info.size, info.mtime = len(content), 0
            t.addfile(info, io.BytesIO(content))
        tar = tar_buf.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        gz = gzip.compress(tar, compresslevel=1, mtime=0)
        d, n = _blob(root, gz)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd, cn = _blob(root, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cd, "size": cn},
                           "layers": descs}).encode()
    md, mn = _blob(root, manifest)
    with open(f"{root}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    return md
