"""The checkpoint hash started early by the CLI (yolobn.core.digest) and picked up by the loader."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import yolobn
from yolobn.core import digest


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
    import yolobn.io.loader as loader

    def no_second_hash(path):  # the prefetched hash is used: the loader never hashes itself
        raise AssertionError("hashed again")

    monkeypatch.setattr(loader, "_scan", no_second_hash)
    meta = yolobn.load(p).meta
    assert meta.sha256 == _sha(p)


def test_scan_checks_every_zip_record_crc(tmp_path):
    """torch never checks the CRCs; the scan does, in the same pass as the hash."""
    import zipfile

    from tests.corpus import flip_tensor_bit

    clean = digest.scan(yolobn.demo_model_path())
    with zipfile.ZipFile(yolobn.demo_model_path()) as z:
        n = len(z.infolist())
        tensors = [i.filename for i in z.infolist() if "/data/" in i.filename and i.file_size > 16]
    assert clean.records == n and clean.damaged == ()
    for k in (0, 7, len(tensors) - 1):
        p = flip_tensor_bit(yolobn.demo_model_path(), tmp_path / f"f{k}.pt", record=k)
        d = digest.scan(p)
        assert d.damaged == (tensors[k],) and d.sha256 == _sha(p)


def test_scan_of_files_that_are_not_intact_zips(tmp_path):
    data = yolobn.demo_model_path().read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])  # no central directory left: only hashed
    assert digest.scan(cut).records == 0 and digest.scan(cut).sha256 == _sha(cut)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    assert digest.scan(junk) == digest.Digest(_sha(junk))
