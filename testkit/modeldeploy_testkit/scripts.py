"""The kit's shell scripts (testkit/scripts/): where they are, the values their lib.sh computes, running them.

They stay shell because they manage processes, network namespaces and files as an operator of a machine would;
Python asks them, never repeats them.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "testkit" / "scripts"


class StartError(Exception):
    """Something the kit starts (the node agent, Prometheus, Argo CD...) could not start; the message says why."""


@functools.cache
def script_value(name: str) -> str:
    """A value defined by lib.sh (versions, paths), as the scripts compute it (asked once per name)."""
    script = f'. "{SCRIPTS}/lib.sh"; printf %s "${{{name}}}"'
    return subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout


def lib_function_succeeds(*words: str) -> bool:
    """Whether a function of lib.sh, with its arguments, succeeds: `lib_function_succeeds("apiserver_ready")`."""
    script = f'. "{SCRIPTS}/lib.sh"; {" ".join(words)}'
    return subprocess.run(["bash", "-c", script], capture_output=True, check=False).returncode == 0


def run_script(name: str, *args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one of the scripts; a failure raises StartError with what it printed (`capture=False` streams it)."""
    result = subprocess.run([str(SCRIPTS / name), *args], capture_output=capture, text=True, check=False)
    if result.returncode != 0:
        printed = f":\n{result.stderr}{result.stdout}" if capture else " (output above)"
        raise StartError(f"testkit/scripts/{name} failed with exit code {result.returncode}{printed}")
    return result


def cluster_dir() -> Path:
    """The cluster's state, logs and PID files: .cluster/ unless MODELDEPLOY_CLUSTER_DIR says otherwise."""
    return Path(script_value("CLUSTER_DIR"))


def cached_binary(component: str, name: str | None = None) -> Path:
    """A binary of the cache: `cached_binary("prometheus")` is <cache>/bin/prometheus-<version>/prometheus."""
    version = script_value(f"{component.upper()}_VERSION")
    return Path(script_value("BIN_CACHE")) / f"{component}-{version}" / (name or component)


def keep_running() -> bool:
    """MODELDEPLOY_KEEP_CLUSTER=1: what a run started stays up for the next one."""
    return os.environ.get("MODELDEPLOY_KEEP_CLUSTER") == "1"


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines a script wrote for its clients (the ports it chose, say); # comments and blank lines skipped."""
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values
