"""A real Argo CD beside the local control plane (hack/argocd-up.sh), its git repository, and its Applications.

Used by tests/e2e/test_gitops.py and hack/bench/gitops.py. Argo CD runs as local processes (Redis, repo server,
application controller) against the cluster's kubeconfig and syncs from a bare git repository under
.cluster/argocd/. Applications live in the namespace `argocd`; their state is read from the API server.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.e2e.cluster import HACK, READY_IMAGE, Cluster, hack_value

ARGOCD_GROUP, ARGOCD_VERSION_API, APPLICATIONS = "argoproj.io", "v1alpha1", "applications"
MDEP_GROUP, MDEP_VERSION, MDEP_PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
IN_CLUSTER = "https://kubernetes.default.svc"


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def argocd_binary() -> Path:
    return Path(hack_value("BIN_CACHE")) / f"argocd-{hack_value('ARGOCD_VERSION')}" / "argocd"


def argocd_running() -> bool:
    """Every Argo CD process argocd-up.sh recorded is alive and still the program it started."""
    each = 'for n in "${ARGOCD_COMPONENTS[@]}"; do argocd_pid "$n"; done'
    script = f'. "{HACK}/lib.sh"; . "{HACK}/argocd-lib.sh"; {each}'
    return subprocess.run(["bash", "-c", script], capture_output=True, check=False).returncode == 0


class StartError(Exception):
    """Argo CD could not be built or started; the message says why."""


def start_argocd(echo: bool = True) -> bool:
    """Build Argo CD when it is not cached, start it when it is not running. True when this call started it."""
    if not argocd_binary().exists():
        if echo:
            print(f"\nArgo CD is not built ({argocd_binary()}): running `hack/build-tools.sh argocd` (6+ minutes)")
        # Streams its progress lines; nothing is captured so that a long build shows what it does.
        build = subprocess.run([str(HACK / "build-tools.sh"), "argocd"], check=False)
        if build.returncode != 0:
            raise StartError(f"`hack/build-tools.sh argocd` failed with exit code {build.returncode} (output above)")
    was_running = argocd_running()
    if echo and not was_running:
        print("\nstarting Argo CD: hack/argocd-up.sh")
    up = subprocess.run([str(HACK / "argocd-up.sh")], capture_output=True, text=True, check=False)
    if echo and up.stderr:
        print(up.stderr, end="")
    if up.returncode != 0:
        raise StartError(f"hack/argocd-up.sh failed (exit code {up.returncode}):\n{up.stderr}{up.stdout}")
    return not was_running


def stop_argocd() -> None:
    subprocess.run([str(HACK / "argocd-down.sh")], check=True)


@dataclass
class ArgoCD:
    cluster: Cluster
    namespace: str
    git_url: str
    git_dir: Path

    @classmethod
    def from_env(cls, cluster: Cluster) -> ArgoCD:
        env = read_env(Path(hack_value("CLUSTER_DIR")) / "argocd" / "argocd.env")
        return cls(cluster, env["ARGOCD_NAMESPACE"], env["ARGOCD_GIT_URL"], Path(env["ARGOCD_GIT_REPO"]))

    @property
    def api(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.cluster.api_client())

    def create_application(self, name: str, path: str, destination_namespace: str) -> None:
        """An Application syncing `path` of the repository's main branch automatically, with prune and self-heal."""
        body = {
            "apiVersion": f"{ARGOCD_GROUP}/{ARGOCD_VERSION_API}",
            "kind": "Application",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "project": "default",
                "source": {"repoURL": self.git_url, "targetRevision": "main", "path": path},
                "destination": {"server": IN_CLUSTER, "namespace": destination_namespace},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        }
        self.api.create_namespaced_custom_object(ARGOCD_GROUP, ARGOCD_VERSION_API, self.namespace, APPLICATIONS, body)

    def delete_application(self, name: str) -> None:
        """Deletes the Application only (no cascade: it has no finalizer); its resources go with their namespace."""
        self.cluster.kubectl("delete", "application", name, "-n", self.namespace, "--wait=false", check=False)

    def application(self, name: str, api: kubernetes.client.CustomObjectsApi | None = None) -> dict[str, Any]:
        return dict(
            (api or self.api).get_namespaced_custom_object(
                ARGOCD_GROUP, ARGOCD_VERSION_API, self.namespace, APPLICATIONS, name
            )
        )

    def hard_refresh(self, name: str, api: kubernetes.client.CustomObjectsApi | None = None) -> None:
        """What a git webhook does: ask the controller to compare with git again, bypassing its caches."""
        patch = {"metadata": {"annotations": {REFRESH_ANNOTATION: "hard"}}}
        (api or self.api).patch_namespaced_custom_object(
            ARGOCD_GROUP, ARGOCD_VERSION_API, self.namespace, APPLICATIONS, name, patch
        )


@dataclass(frozen=True)
class AppState:
    """What one read of an Application says, with the ModelDeployment's own status beside it."""

    sync: str
    revision: str
    health: str
    resource_health: str
    resource_message: str
    operation: str
    conditions: tuple[str, ...]

    @classmethod
    def of(cls, app: dict[str, Any], kind: str = "ModelDeployment") -> AppState:
        status = app.get("status") or {}
        resource = next((r for r in status.get("resources") or [] if r.get("kind") == kind), {})
        return cls(
            sync=(status.get("sync") or {}).get("status", ""),
            revision=(status.get("sync") or {}).get("revision", ""),
            health=(status.get("health") or {}).get("status", ""),
            resource_health=(resource.get("health") or {}).get("status", ""),
            resource_message=(resource.get("health") or {}).get("message", ""),
            operation=(status.get("operationState") or {}).get("phase", ""),
            conditions=tuple(f"{c.get('type')}: {c.get('message')}" for c in status.get("conditions") or []),
        )

    def __str__(self) -> str:
        extra = f" conditions={list(self.conditions)}" if self.conditions else ""
        return (
            f"sync={self.sync} revision={self.revision[:8]} health={self.health} "
            f"resource={self.resource_health} ({self.resource_message!r}) operation={self.operation}{extra}"
        )


class GitRepo:
    """A working copy of Argo CD's repository: write files, commit, push, revert."""

    def __init__(self, url: str, workdir: Path | None = None) -> None:
        self.url = url
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="modeldeploy-gitops-"))
        self.git("clone", "-q", url, str(self.dir), cwd=self.dir.parent)

    def git(self, *args: str, cwd: Path | None = None) -> str:
        identity = ["-c", "user.name=modeldeploy-tests", "-c", "user.email=modeldeploy-tests@localhost"]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        result = subprocess.run(
            ["git", *identity, *args], cwd=cwd or self.dir, capture_output=True, text=True, check=False, env=env
        )
        if result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result.stdout.strip()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def write(self, path: str, documents: list[dict[str, Any]]) -> None:
        target = self.dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump_all(documents, sort_keys=False))

    def commit(self, message: str) -> str:
        """Commits everything and pushes it to main; returns the new commit."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.push()
        return self.head()

    def revert(self, commit: str) -> str:
        """`git revert` of one commit, pushed; returns the revert commit."""
        self.git("revert", "--no-edit", commit)
        self.push()
        return self.head()

    def push(self) -> None:
        for _ in range(3):
            try:
                self.git("push", "-q", "origin", "HEAD:main")
                return
            except AssertionError:
                # Someone else pushed meanwhile (another test run, a benchmark): replay ours on top.
                self.git("pull", "-q", "--rebase", "origin", "main")
                time.sleep(0.1)
        self.git("push", "-q", "origin", "HEAD:main")

    def remove(self) -> None:
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def model_deployment(
    name: str,
    version: str,
    steps: list[dict[str, Any]],
    replicas: int = 4,
    image: str | None = None,
    deadline_seconds: int = 60,
) -> dict[str, Any]:
    """A ModelDeployment as it would sit in git (only what a user writes, no defaults spelled out)."""
    return {
        "apiVersion": f"{MDEP_GROUP}/{MDEP_VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"version": version, "uri": f"file:///models/{name}/{version}/model.joblib"},
            "replicas": replicas,
            "runtime": {"image": image or READY_IMAGE},
            "rollout": {"strategy": "Canary", "steps": steps, "progressDeadlineSeconds": deadline_seconds},
        },
    }
