"""The checkpoint hash started early by the CLI (yolobn.digest) and picked up by the loader."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import yolobn
from yolobn import digest


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_prefetch_take(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"x" * 3_000_000)
    digest.prefetch(p)
    fut = digest.take(p)
    assert fut is not None and fut.result().sha256 == _sha(p)
    assert digest.take(p) is None  # taken once


def test_changed_file_is_hashed_again(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    digest.prefetch(p)
    p.write_bytes(b"new content")
    os.utime(p, ns=(1, 1))  # a different size and mtime: a different key
    assert digest.take(p) is None


def test_no_prefetch_for_missing_or_directory(tmp_path):
    digest.prefetch(tmp_path / "missing.pt")
    digest.prefetch(tmp_path)
    digest.prefetch(None)
    assert digest.take(tmp_path / "missing.pt") is None
    assert digest.take(tmp_path) is None


def test_loader_uses_the_prefetched_hash(tmp_path, monkeypatch):
    p = tmp_path / "demo.pt"
    shutil.copyfile(yolobn.demo_model_path(), p)
    digest.prefetch(p)
    import yolobn.loader as loader

    def no_second_hash(path):  # the prefetched hash is used: the loader never hashes itself
        raise AssertionError("hashed again")

    monkeypatch.setattr(loader, "_scan", no_second_hash)
    meta = yolobn.load(p).meta
    assert meta.sha256 == _sha(p)
