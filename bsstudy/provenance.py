"""Where a result came from: the git state of the source tree and the versions of the main packages.

One place for what result.json (trainer), bias.json (bias instrument) and provenance.json (report) record.
"""
from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the source tree bsstudy is imported from; (None, None) outside a git checkout."""
    src = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return commit or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, str | None]:
    """bsstudy, python, torch (with its build tag, e.g. +cu130), torchvision, numpy versions.

    torchvision and numpy come from package metadata: importing torchvision costs seconds."""
    import torch

    out: dict[str, str | None] = {"bsstudy": __version__, "python": platform.python_version(),
                                  "torch": torch.__version__}
    for p in ("torchvision", "numpy"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out
