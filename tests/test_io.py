"""bsstudy.io's atomic writers: file modes follow the umask; a full disk is one line naming the file."""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from bsstudy.errors import UserError
from bsstudy.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text

WRITERS = {
    "text": lambda p: atomic_write_text(p, "x\n"),
    "bytes": lambda p: atomic_write_bytes(p, b"x"),
    "json": lambda p: atomic_write_json(p, {"a": 1}),
    "torch": lambda p: atomic_torch_save(p, {"w": torch.zeros(100_000)}),  # larger than the file buffer
}


@pytest.fixture
def umask():
    """Set the umask for the test, restore it after."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_umask(tmp_path, umask, mask):
    umask(mask)
    for kind, write in WRITERS.items():
        p = tmp_path / f"{kind}.out"
        write(p)
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, kind
        # replacing an existing file gives the same mode
        write(p)
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, kind


def test_current_umask_reads_without_changing_it(umask):
    from bsstudy.io import current_umask

    umask(0o027)
    assert current_umask() == 0o027 and os.umask(0o027) == 0o027


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write goes to /dev/full (the kernel's always-ENOSPC device), through torch's real writer."""
    def mkstemp(dir=None, prefix="", suffix=""):
        tmp = Path(dir) / f"{prefix}full{suffix}"
        tmp.touch()
        return os.open("/dev/full", os.O_WRONLY), str(tmp)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@needs_dev_full
@pytest.mark.parametrize("kind", list(WRITERS))
def test_full_disk_is_one_line_naming_the_file(tmp_path, full_disk, kind):
    target = tmp_path / "sub" / "last.pt"
    with pytest.raises(OSError) as e:
        WRITERS[kind](target)
    msg = str(e.value)
    # torch alone says "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    assert "no space left on device" in msg and str(target) in msg and "\n" not in msg
    assert "inline_container" not in msg
    assert isinstance(e.value, OSError) and isinstance(e.value, UserError) and e.value.errno == errno.ENOSPC
    assert not target.exists() and list(target.parent.iterdir()) == []  # the temp file is gone too


def test_torch_enforce_failure_with_quota_error_behind_it(tmp_path, monkeypatch):
    """torch's zip writer turns the file's OSError into a RuntimeError; the OSError is found behind it."""
    def save(obj, f):
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(UserError, match=r"^disk quota exceeded while writing .*ck\.pt") as e:
        atomic_torch_save(tmp_path / "ck.pt", {})
    assert isinstance(e.value, OSError) and e.value.errno == errno.EDQUOT
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . something else")

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RuntimeError, match="something else") as e:
        atomic_torch_save(tmp_path / "ck.pt", {})
    assert not isinstance(e.value, UserError)
    assert list(tmp_path.iterdir()) == []


def test_read_jsonl_skips_damaged_lines_and_keeps_the_rest(tmp_path):
    from bsstudy.io import read_jsonl

    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"epoch": 1}\n{"epoch": \xff\xfe 2}\n\x80\x81\n{"epoch": 3}\n{"epo')
    assert read_jsonl(p) == [{"epoch": 1}, {"epoch": 3}]
