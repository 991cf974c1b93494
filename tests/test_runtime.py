"""bsstudy.runtime: the glibc malloc tuning every compute entry point applies."""
from __future__ import annotations

import subprocess
import sys

import pytest

CODE = "from bsstudy.runtime import tune_malloc; print(tune_malloc(), tune_malloc())"


def _run(env_extra: dict[str, str]) -> str:
    import os

    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_malloc_applies_once_and_can_be_switched_off():
    assert _run({}) == "True True"           # applied, and a second call is a no-op that reports it
    assert _run({"BSSTUDY_TUNE_MALLOC": "0"}) == "False False"
