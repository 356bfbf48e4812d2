"""The pinned helm binary (hack/lib.sh), for tests that render the chart. Missing helm fails; it never skips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm/modeldeploy"


def helm_path() -> Path:
    script = f'. "{REPO_ROOT}/hack/lib.sh"; printf %s "${{HELM_BIN}}"'
    directory = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout
    return Path(directory) / "helm"


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
