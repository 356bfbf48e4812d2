"""The node agent keeps its pods' private files on a path short enough for Unix sockets, the same in Python and bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from modeldeploy_testkit.nodeagent.agent import MAX_PODS_DIR_LENGTH, default_pods_dir
from modeldeploy_testkit.scripts import SCRIPTS

UID = "f375d4e4-3840-4e45-a3e2-c01e8b5a3e74"
# What Python's multiprocessing binds inside TMPDIR: pymp-XXXXXXXX/listener-XXXXXXXX.
SOCKET_SUFFIX = "/pymp-abcdefgh/listener-abcdefgh"


@pytest.mark.parametrize(
    "state_dir", ["/srv/modeldeploy/.cluster/nodeagent", "/" + "deep/" * 40 + ".cluster/nodeagent"]
)
def test_a_pods_socket_fits_sun_path_however_deep_the_checkout(state_dir: str) -> None:
    pods_dir = default_pods_dir(Path(state_dir))
    socket_path = f"{pods_dir}/{UID}/tmp{SOCKET_SUFFIX}"
    assert len(str(pods_dir)) <= MAX_PODS_DIR_LENGTH
    assert len(socket_path.encode()) < 108


def test_pods_dir_differs_per_state_dir() -> None:
    assert default_pods_dir(Path("/a/.cluster/nodeagent")) != default_pods_dir(Path("/b/.cluster/nodeagent"))


def test_lib_sh_computes_the_same_pods_dir(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "some checkout" / ".cluster"
    script = f'. "{SCRIPTS}/lib.sh"; printf "%s\\n%s" "${{AGENT_STATE_DIR}}" "${{AGENT_PODS_DIR}}"'
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODELDEPLOY_CLUSTER_DIR": str(cluster_dir)},
        check=True,
        capture_output=True,
        text=True,
    )
    state_dir, pods_dir = result.stdout.splitlines()
    assert Path(state_dir) == cluster_dir / "nodeagent"
    assert Path(pods_dir) == default_pods_dir(Path(state_dir))
