"""The pinned helm binary (testkit/scripts/lib.sh), for tests that render the chart. Missing helm fails; it never
skips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from modeldeploy_testkit.scripts import REPO_ROOT, script_value

CHART = REPO_ROOT / "helm/modeldeploy"


def helm_path() -> Path:
    return Path(script_value("HELM_BIN")) / "helm"


def require_helm() -> Path:
    path = helm_path()
    if not path.is_file():
        pytest.fail(f"helm is not installed at {path}: run `make tools` to build it", pytrace=False)
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(require_helm()), *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result
