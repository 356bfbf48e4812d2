"""A real Argo CD beside the local control plane (testkit/scripts/argocd-up.sh), its git repository, its Applications.

Used by tests/e2e/test_gitops.py and the gitops benchmark. Argo CD runs as local processes (Redis, repo server,
application controller) against the cluster's kubeconfig and syncs from a bare git repository under
.cluster/argocd/. Applications live in the namespace `argocd`; their state is read from the API server.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modeldeploy_testkit import resources
from modeldeploy_testkit.cluster import READY_IMAGE, Cluster
from modeldeploy_testkit.kubeapi import KubeAPI, Manifest, resource_path
from modeldeploy_testkit.scripts import (
    SCRIPTS,
    cached_binary,
    cluster_dir,
    lib_function_succeeds,
    read_env,
    run_script,
)

ARGOCD_API_VERSION, APPLICATIONS = "argoproj.io/v1alpha1", "applications"
MDEP_API_VERSION, MDEP_PLURAL = "modeldeploy.io/v1alpha1", "modeldeployments"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
IN_CLUSTER = "https://kubernetes.default.svc"


def argocd_binary() -> Path:
    return cached_binary("argocd")


def argocd_running() -> bool:
    """Every Argo CD process argocd-up.sh recorded is alive and still the program it started."""
    each = 'for n in "${ARGOCD_COMPONENTS[@]}"; do argocd_pid "$n"; done'
    return lib_function_succeeds(f'. "{SCRIPTS}/argocd-lib.sh";', each)


def start_argocd(echo: bool = True) -> bool:
    """Build Argo CD when it is not cached, start it when it is not running. True when this call started it."""
    if not argocd_binary().exists():
        if echo:
            print(f"\nArgo CD is not built ({argocd_binary()}): building it (6+ minutes)")
        # Streams its progress lines; nothing is captured so that a long build shows what it does.
        run_script("build-tools.sh", "argocd", capture=False)
    was_running = argocd_running()
    if echo and not was_running:
        print("\nstarting Argo CD: testkit/scripts/argocd-up.sh")
    up = run_script("argocd-up.sh")
    if echo and up.stderr:
        print(up.stderr, end="")
    return not was_running


def stop_argocd() -> None:
    run_script("argocd-down.sh")


@dataclass
class ArgoCD:
    cluster: Cluster
    namespace: str
    git_url: str
    git_dir: Path

    @classmethod
    def from_env(cls, cluster: Cluster) -> ArgoCD:
        env = read_env(cluster_dir() / "argocd" / "argocd.env")
        return cls(cluster, env["ARGOCD_NAMESPACE"], env["ARGOCD_GIT_URL"], Path(env["ARGOCD_GIT_REPO"]))

    @functools.cached_property
    def api(self) -> KubeAPI:
        return self.cluster.api()

    def application_path(self, name: str | None = None) -> str:
        return resource_path(ARGOCD_API_VERSION, APPLICATIONS, self.namespace, name)

    def create_application(self, name: str, path: str, destination_namespace: str) -> None:
        """An Application syncing `path` of the repository's main branch automatically, with prune and self-heal."""
        body = {
            "apiVersion": ARGOCD_API_VERSION,
            "kind": "Application",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "project": "default",
                "source": {"repoURL": self.git_url, "targetRevision": "main", "path": path},
                "destination": {"server": IN_CLUSTER, "namespace": destination_namespace},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        }
        self.api.create(self.application_path(), body)

    def delete_application(self, name: str) -> None:
        """Deletes the Application only (no cascade: it has no finalizer); its resources go with their namespace."""
        self.cluster.kubectl("delete", "application", name, "-n", self.namespace, "--wait=false", check=False)

    def application(self, name: str, api: KubeAPI | None = None) -> Manifest:
        body = (api or self.api).get(self.application_path(name))
        if body is None:
            raise AssertionError(f"Application {self.namespace}/{name} not found")
        return body

    def read(self, app: str, namespace: str, name: str, api: KubeAPI | None = None) -> tuple[AppState, Manifest]:
        """One read of an Application and of the ModelDeployment it syncs (generation 0 while there is none)."""
        state = AppState.of(self.application(app, api))
        path = resource_path(MDEP_API_VERSION, MDEP_PLURAL, namespace, name)
        body = (api or self.api).get(path) or {"metadata": {"generation": 0}}
        return state, body

    def hard_refresh(self, name: str, api: KubeAPI | None = None) -> None:
        """What a git webhook does: ask the controller to compare with git again, bypassing its caches."""
        patch = {"metadata": {"annotations": {REFRESH_ANNOTATION: "hard"}}}
        (api or self.api).patch(self.application_path(name), patch)


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
        resource: dict[str, Any] = next((r for r in status.get("resources") or [] if r.get("kind") == kind), {})
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
    rollout = {"strategy": "Canary", "steps": steps, "progressDeadlineSeconds": deadline_seconds}
    return resources.model_deployment(name, version, replicas, rollout, image=image or READY_IMAGE)
