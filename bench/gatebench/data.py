"""Test data: random blobs, variants of one blob with distinct heads, repeated-content digests."""

from __future__ import annotations

import hashlib
import os

from .common import MIB


def write_random(path: str, size: int, hasher_reps: int = 1) -> str:
    """Writes `size` random bytes; returns the sha256 digest of the content repeated
    `hasher_reps` times (for the 4x-concatenated big blob)."""
    chunk = 8 * MIB
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(chunk, left))
            f.write(b)
            h.update(b)
            left -= len(b)
    if hasher_reps == 1:
        return "sha256:" + h.hexdigest()
    h = hashlib.sha256()
    for _ in range(hasher_reps):
        with open(path, "rb") as f:
            while b := f.read(chunk):
                h.update(b)
    return "sha256:" + h.hexdigest()


def write_variants(base_path: str, n: int, prefix_dir: str) -> list[tuple[str, str]]:
    """n files, each the base file with a distinct 32-byte head; returns [(path, digest)]."""
    data = open(base_path, "rb").read()
    out = []
    for i in range(n):
        head = f"registry-gate bench upload {i:05d}".encode().ljust(32, b".")[:32]
        p = f"{prefix_dir}/up{i:03d}.bin"
        with open(p, "wb") as f:
            f.write(head)
            f.write(memoryview(data)[32:])
        h = hashlib.sha256(head)
        h.update(memoryview(data)[32:])
        out.append((p, "sha256:" + h.hexdigest()))
    return out


def hash_repeated(path: str, n: int) -> str:
    h = hashlib.sha256()
    for _ in range(n):
        with open(path, "rb") as f:
            while b := f.read(8 * MIB):
                h.update(b)
    return h.hexdigest()
