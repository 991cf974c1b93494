"""Where a result came from: the git state of the source tree, the versions of the main packages and the
host. One place for what result.json (trainer), bias.json (bias instrument) and provenance.json (report)
record.
"""
from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__

# The packages the report's provenance.json lists (those installed), in this order.
REPORT_PACKAGES: tuple[str, ...] = ("bsstudy", "torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib",
                                    "seaborn", "submitit", "hydra-core", "omegaconf")


def git_state(src: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding ``src`` (default: the source tree bsstudy is imported from);
    dirty = tracked files differ from the commit (untracked files do not count, nor do results/ and
    reports/: a published study's run records and reports are committed data that change while it runs,
    not code). (None, None) outside a git checkout or without git."""
    src = Path(__file__).resolve().parents[1] if src is None else Path(src)
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(top,exclude)results", ":(top,exclude)reports"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return commit or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` from its metadata (nothing is imported); None when absent."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """bsstudy, python, torch (with its build tag, e.g. +cu130), torchvision, numpy versions.

    torchvision and numpy come from package metadata: importing torchvision costs seconds."""
    import torch

    out: dict[str, str | None] = {"bsstudy": __version__, "python": platform.python_version(),
                                  "torch": torch.__version__}
    for p in ("torchvision", "numpy"):
        out[p] = installed_version(p)
    return out


def package_versions(packages: tuple[str, ...] = REPORT_PACKAGES) -> dict[str, str]:
    """{package: version} of the installed ones among ``packages``, from metadata (torch is not imported:
    a report must not pay seconds for it); bsstudy falls back to its own ``__version__`` when it runs from
    a source tree without metadata."""
    out = {p: v for p in packages if (v := installed_version(p)) is not None}
    if "bsstudy" in packages:
        out.setdefault("bsstudy", __version__)
    return out


def host() -> dict[str, str | int | None]:
    """The machine this process runs on: architecture, processor, OS and CPU count."""
    return {"machine": platform.machine(), "processor": platform.processor(), "system": platform.system(),
            "cpus": os.cpu_count()}


def environment(packages: tuple[str, ...] = REPORT_PACKAGES) -> dict:
    """``{"versions", "python", "hardware"}`` of this process: what the report's provenance.json records
    about the software and machine that made it."""
    return {"versions": package_versions(packages), "python": platform.python_version(), "hardware": host()}
