"""Model servers as real processes on the node agent's nodes: the agent itself, placement on its nodes, model
artifacts, and observing the pods it runs."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.kubeapi import KubeAPI, Manifest, pods_path
from modeldeploy_testkit.scripts import StartError, cluster_dir, run_script, script_value
from modeldeploy_testkit.watches import EventLog

RUNTIME_IMAGE = "modeldeploy/runtime:0.1.0"
AGENT_NODE = "agent-node-0"
NODE_LABEL = "modeldeploy.io/node-agent"
PLACEMENT = {
    "nodeSelector": {NODE_LABEL: "true"},
    "tolerations": [{"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}
REVISION_LABEL = "modeldeploy.io/revision"
VERSION_LABEL = "app.kubernetes.io/version"
SCRAPE_INTERVAL_SECONDS = 2.0
NODEAGENT_MODULE = "modeldeploy_testkit.nodeagent"


# --- the agent ------------------------------------------------------------------------------------------------------


@dataclass
class NodeAgent:
    cluster_dir: Path

    @property
    def pods_dir(self) -> Path:
        return Path(script_value("AGENT_PODS_DIR"))

    def container_pid(self, pod: dict[str, Any], container: str = "model-server") -> int:
        """PID of the container's own process, as the agent's shim recorded it."""
        info = json.loads((self.pods_dir / pod["metadata"]["uid"] / f"{container}.pid").read_text())
        return int(info["pid"])

    def pid(self) -> int:
        return int((self.cluster_dir / "pids" / "node-agent.pid").read_text().strip())

    def running(self) -> bool:
        """The recorded PID is alive and is still the node agent."""
        try:
            return NODEAGENT_MODULE.encode() in Path(f"/proc/{self.pid()}/cmdline").read_bytes()
        except (OSError, ValueError):
            return False

    def log_of(self, pod: dict[str, Any], container: str = "model-server") -> str:
        metadata = pod["metadata"]
        directory = f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}"
        return (self.cluster_dir / "logs" / "pods" / directory / f"{container}.log").read_text(errors="replace")


def start_node_agent() -> tuple[NodeAgent, bool]:
    """The node agent with its node Ready: the running one, or one started now (True). Raises StartError."""
    agent = NodeAgent(cluster_dir())
    started_here = not agent.running()
    run_script("nodeagent-up.sh")
    return agent, started_here


def stop_node_agent() -> None:
    """nodeagent-down.sh; what it cannot remove it says in its output, and the next cluster-down tries again."""
    with contextlib.suppress(StartError):
        run_script("nodeagent-down.sh")


# --- model deployments on the agent's nodes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    uri: str
    sha256: str
    format: str = "sklearn"


def model_deployment(
    name: str, artifact: Artifact, version: str, replicas: int, rollout: dict[str, Any], sha256: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "version": version,
                "uri": artifact.uri,
                "format": artifact.format,
                "sha256": sha256 or artifact.sha256,
            },
            "replicas": replicas,
            "runtime": {"image": RUNTIME_IMAGE, **PLACEMENT},
            "rollout": rollout,
        },
    }


def healthy(version: str, ready: int) -> Any:
    return lambda s: (
        s.get("phase") == "Healthy"
        and (s.get("stable") or {}).get("version") == version
        and (s.get("stable") or {}).get("readyReplicas") == ready
    )


# --- plain Deployments of the model server on the agent's nodes (no operator) ---------------------------------------

RUNTIME_HTTP_PORT = 9000
RUNTIME_METRICS_PORT = 6000


def runtime_deployment(name: str, artifact: Artifact, version: str, replicas: int = 1) -> Manifest:
    """A Deployment of the model server placed on the agent's nodes, written by hand rather than by the operator: the
    environment of the runtime's contract (as the operator sets it), its ports and readiness on /health/status, and
    the labels `app=<name>` and app.kubernetes.io/version. For tests of what sits in front of model servers (a
    gateway, say) that must not depend on the operator."""
    labels = {"app": name, VERSION_LABEL: version}
    env = {
        "MODEL_NAME": name,
        "MODEL_VERSION": version,
        "MODEL_URI": artifact.uri,
        "MODEL_FORMAT": artifact.format,
        "MODEL_SHA256": artifact.sha256,
        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(RUNTIME_HTTP_PORT),
        "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(RUNTIME_METRICS_PORT),
        # A deleted test namespace takes its pods at once: nothing waits on their traffic.
        "MODEL_DRAIN_SECONDS": "0",
    }
    container = {
        "name": "model-server",
        "image": RUNTIME_IMAGE,
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "ports": [
            {"name": "http", "containerPort": RUNTIME_HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": RUNTIME_METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/health/status", "port": "http"}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {**PLACEMENT, "terminationGracePeriodSeconds": 5, "containers": [container]},
            },
        },
    }


def runtime_service(name: str, port: int = 80) -> Manifest:
    """The Service of runtime_deployment(name): `http` on `port` and `metrics`, both TCP (Contour skips EndpointSlice
    ports without a protocol)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": RUNTIME_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


# --- observing pods -------------------------------------------------------------------------------------------------


@dataclass
class PodObservation:
    at: float
    name: str
    uid: str
    ready: bool
    restarts: int
    phase: str
    waiting: str
    revision: str


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or []
    )


def observe(pod: Manifest, at: float) -> PodObservation:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    restarts = sum(c.get("restartCount", 0) for c in containers)
    waiting = next((c["state"]["waiting"].get("reason", "") for c in containers if "waiting" in c["state"]), "")
    metadata = pod["metadata"]
    return PodObservation(
        at,
        metadata["name"],
        metadata["uid"],
        is_ready(pod),
        restarts,
        status.get("phase", ""),
        waiting,
        (metadata.get("labels") or {}).get(REVISION_LABEL, ""),
    )


class PodWatch(EventLog):
    """Every state of the namespace's pods as a watch delivered it, with the local time it arrived."""

    def __init__(self, api: KubeAPI, namespace: str) -> None:
        super().__init__(api, pods_path(namespace), timeout_seconds=5)

    @property
    def seen(self) -> list[PodObservation]:
        return [observe(event.body, event.at) for event in self.all() if event.kind != "DELETED"]

    def of(self, uid: str) -> list[PodObservation]:
        return [o for o in self.seen if o.uid == uid]


def pods_of(cluster: Cluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
    items = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]
