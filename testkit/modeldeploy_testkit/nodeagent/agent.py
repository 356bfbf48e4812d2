"""The node agent: registers its nodes, keeps their leases and Ready condition fresh, and runs their pods.

State that must outlive the process (each pod's network and IP, each container's shim PID and restart count)
is kept in STATE_DIR/state.json, rewritten atomically on every change. On start the agent re-adopts the
processes of pods that still exist and removes everything else it once made: processes, namespaces, veths.

Signals: SIGTERM or SIGINT stops every pod (SIGTERM, grace, SIGKILL), removes their networks, reports the pods
Failed as a gracefully shut-down node does and the nodes NotReady, then exits. SIGUSR1 exits at once and leaves
the pods running for the next agent to adopt.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from modeldeploy_testkit.kubeapi import STRATEGIC_PATCH, ApiError, KubeAPI, pods_path
from modeldeploy_testkit.scripts import REPO_ROOT

from .containers import EnvResolver
from .network import (
    AGENT_POD_RANGE,
    CLUSTER_VETH,
    HOST_GATEWAY,
    NETNS_PREFIX,
    agent_veths,
    ip_cmd,
    list_netns,
    names_for,
    netns_pids,
    route_device,
)
from .pods import SHIM, PodWorker, kill_group, now_rfc3339, terminate_record

Manifest = dict[str, Any]
log = logging.getLogger("nodeagent")

USER_AGENT = "modeldeploy-nodeagent/0.1.0"
NODE_LABEL = "modeldeploy.io/node-agent"
TAINT = {"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10
STATUS_REPORT_SECONDS = 60
WATCH_SECONDS = 60
STATE_VERSION = 1
# A pod's TMPDIR is <pods dir>/<uid>/tmp: 41 more characters, then a program's own socket path inside it (Python's
# multiprocessing adds about 33) must fit the 107 usable bytes of sockaddr_un.sun_path.
MAX_PODS_DIR_LENGTH = 30


def _microtime() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Agent:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.nodes: list[str] = list(options.node) or ["agent-node-0"]
        self.host_ip: str = options.host_ip
        self.state_dir = Path(options.state_dir)
        self.pods_dir = Path(options.pods_dir or default_pods_dir(self.state_dir))
        if len(str(self.pods_dir)) > MAX_PODS_DIR_LENGTH:
            raise SystemExit(
                f"--pods-dir {self.pods_dir} is longer than {MAX_PODS_DIR_LENGTH} characters: a pod's TMPDIR lies "
                "under it and Unix socket paths there (multiprocessing's, for one) must stay under 108 bytes"
            )
        self.log_root = Path(options.log_dir)
        self.state_path = self.state_dir / "state.json"
        self.shutdown_grace: float = options.shutdown_grace
        self.api = KubeAPI(Path(options.kubeconfig), USER_AGENT)
        self.allocatable = {
            "cpu": options.cpu,
            "memory": options.memory,
            "pods": str(options.pods),
            "ephemeral-storage": "100Gi",
        }
        self.resolver = EnvResolver(self.api, self.allocatable)
        self.records: dict[str, Manifest] = {}
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.mode = "shutdown"
        self.node_uids: dict[str, str] = {}
        self.ready_since = now_rfc3339()
        self.events: queue.Queue[Manifest | None] = queue.Queue(maxsize=1000)
        self._lock_file: Any = None

    # --- state file ---------------------------------------------------------------------------------------------

    def save_state(self) -> None:
        with self.lock:
            payload = json.dumps({"version": STATE_VERSION, "nodes": self.nodes, "pods": self.records}, indent=1)
            partial = self.state_path.with_name("state.json.partial")
            partial.write_text(payload)
            os.replace(partial, self.state_path)

    def _load_state(self) -> dict[str, Manifest]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.warning("state file %s is not valid JSON; starting from an empty state", self.state_path)
            return {}
        pods: dict[str, Manifest] = data.get("pods") or {}
        return pods

    def forget(self, uid: str) -> None:
        with self.lock:
            self.records.pop(uid, None)
            self.save_state()

    def worker_finished(self, worker: PodWorker) -> None:
        with self.lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]

    # --- pod IPs --------------------------------------------------------------------------------------------------

    def _allocate_ip(self, preferred: str | None) -> str:
        used = {record["ip"] for record in self.records.values()}
        if preferred:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(preferred) in AGENT_POD_RANGE and preferred not in used:
                    return preferred
        for address in AGENT_POD_RANGE.hosts():
            text = str(address)
            if text.endswith((".0", ".255")) or text in used:
                continue
            return text
        raise RuntimeError(f"no free pod IP left in {AGENT_POD_RANGE}")

    # --- pods -------------------------------------------------------------------------------------------------------

    def on_pod(self, pod: Manifest) -> None:
        metadata = pod["metadata"]
        uid = str(metadata["uid"])
        with self.lock:
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            if self.stop.is_set():
                return
            record = self.records.get(uid)
            phase = (pod.get("status") or {}).get("phase")
            if record is None and (metadata.get("deletionTimestamp") or phase in ("Succeeded", "Failed")):
                if metadata.get("deletionTimestamp"):
                    # Nothing of it runs here: confirm the deletion, as a kubelet does.
                    with contextlib.suppress(ApiError, OSError):
                        self.api.delete(
                            pods_path(metadata["namespace"], metadata["name"]),
                            {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                        )
                return
            if record is None:
                netns, veth = names_for(uid)
                record = {
                    "uid": uid,
                    "namespace": metadata["namespace"],
                    "name": metadata["name"],
                    "node": pod["spec"]["nodeName"],
                    "netns": netns,
                    "veth": veth,
                    "ip": self._allocate_ip((pod.get("status") or {}).get("podIP")),
                    "directory": str(self.pods_dir / uid),
                    "startTime": (pod.get("status") or {}).get("startTime") or now_rfc3339(),
                    "containers": {},
                }
                self.records[uid] = record
                Path(record["directory"]).mkdir(parents=True, exist_ok=True)
                self.save_state()
                key = f"{metadata['namespace']}/{metadata['name']}"
                log.info("pod %s bound to %s: ip %s", key, record["node"], record["ip"])
            worker = PodWorker(self, pod, record)
            self.workers[uid] = worker
            worker.start()

    def on_pod_gone(self, uid: str) -> None:
        with self.lock:
            worker = self.workers.get(uid)
        if worker is not None:
            worker.deleted()

    def _watch_node(self, node: str) -> None:
        params = {"fieldSelector": f"spec.nodeName={node}"}
        version: str | None = None
        while not self.stop.is_set():
            try:
                if version is None:
                    listing = self.api.list("/api/v1/pods", params)
                    seen = set()
                    for pod in listing.get("items") or []:
                        seen.add(pod["metadata"]["uid"])
                        self.on_pod(pod)
                    with self.lock:
                        missing = [uid for uid, w in self.workers.items() if w.record["node"] == node]
                    for uid in missing:
                        if uid not in seen:
                            self.on_pod_gone(uid)
                    version = str(listing["metadata"]["resourceVersion"])
                for event in self.api.watch("/api/v1/pods", {**params, "resourceVersion": version}, WATCH_SECONDS):
                    if self.stop.is_set():
                        return
                    pod = event["object"]
                    version = str(pod["metadata"]["resourceVersion"])
                    if event["type"] == "BOOKMARK":
                        continue
                    if event["type"] == "DELETED":
                        self.on_pod_gone(str(pod["metadata"]["uid"]))
                    else:
                        self.on_pod(pod)
            except ApiError as error:
                if error.status != 410:
                    log.warning("watching pods of %s: %s", node, error)
                    self.stop.wait(1)
                version = None
            except (requests.RequestException, OSError, ValueError) as error:
                if not self.stop.is_set():
                    log.warning("watching pods of %s: %s", node, error)
                    self.stop.wait(1)
                version = None

    # --- nodes ------------------------------------------------------------------------------------------------------

    def _node_status(self, ready: bool, reason: str, message: str) -> Manifest:
        heartbeat = now_rfc3339()

        def condition(kind: str, status: str, why: str, text: str, since: str) -> Manifest:
            return {
                "type": kind,
                "status": status,
                "reason": why,
                "message": text,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": since,
            }

        uname = os.uname()
        return {
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "conditions": [
                condition(
                    "MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure", self.ready_since
                ),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure", self.ready_since),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs", self.ready_since),
                condition("Ready", "True" if ready else "False", reason, message, self.ready_since),
            ],
            "addresses": [{"type": "InternalIP", "address": self.host_ip}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, uname.nodename).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, uname.nodename)),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": uname.release,
                "osImage": "modeldeploy node agent (processes in network namespaces)",
                "containerRuntimeVersion": "nodeagent://0.1.0",
                "kubeletVersion": "nodeagent-0.1.0",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
            },
        }

    def _register(self, node: str) -> None:
        labels = {
            "kubernetes.io/hostname": node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            NODE_LABEL: "true",
            "type": "node-agent",
        }
        body = self.api.get(f"/api/v1/nodes/{node}")
        if body is None:
            body = self.api.create(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node, "labels": labels},
                    "spec": {"taints": [TAINT]},
                },
            )
            log.info("registered node %s", node)
        else:
            taints = [t for t in body["spec"].get("taints") or [] if t.get("key") != TAINT["key"]] + [TAINT]
            body = self.api.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": labels}, "spec": {"taints": taints}})
        self.node_uids[node] = str(body["metadata"]["uid"])
        self._report(node, True)
        self._renew_lease(node)

    def _report(self, node: str, ready: bool, reason: str = "KubeletReady", message: str = "") -> None:
        message = message or "the node agent is posting ready status"
        self.api.patch(
            f"/api/v1/nodes/{node}/status",
            {"status": self._node_status(ready, reason, message)},
            content_type=STRATEGIC_PATCH,
        )

    def _renew_lease(self, node: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{node}"
        spec = {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _microtime()}
        try:
            self.api.patch(path, {"spec": spec})
        except ApiError as error:
            if error.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": node, "uid": self.node_uids.get(node, "")}
            self.api.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": node, "namespace": LEASE_NAMESPACE, "ownerReferences": [owner]},
                    "spec": spec,
                },
            )

    def _heartbeat(self) -> None:
        last_report = time.monotonic()
        while not self.stop.wait(LEASE_RENEW_SECONDS):
            report = time.monotonic() - last_report >= STATUS_REPORT_SECONDS
            for node in self.nodes:
                try:
                    if self.api.get(f"/api/v1/nodes/{node}") is None:
                        log.warning("node %s was deleted; registering it again", node)
                        self._register(node)
                        continue
                    self._renew_lease(node)
                    if report:
                        self._report(node, True)
                except (ApiError, requests.RequestException, OSError) as error:
                    log.warning("heartbeat of %s: %s", node, error)
            if report:
                last_report = time.monotonic()

    # --- events -----------------------------------------------------------------------------------------------------

    def event(self, pod: Manifest, kind: str, reason: str, message: str) -> None:
        metadata = pod["metadata"]
        now = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{metadata['name']}.{uuid.uuid4().hex[:16]}", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": "nodeagent", "host": pod["spec"].get("nodeName", "")},
            "reportingComponent": "nodeagent",
            "reportingInstance": pod["spec"].get("nodeName", ""),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(queue.Full):
            self.events.put_nowait(body)

    def _send_events(self) -> None:
        while True:
            body = self.events.get()
            if body is None:
                return
            with contextlib.suppress(ApiError, requests.RequestException, OSError):
                self.api.create(f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body)

    # --- start and stop ---------------------------------------------------------------------------------------------

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise SystemExit("the node agent needs root: it creates network namespaces and veth pairs")
        if shutil.which("ip") is None:
            raise SystemExit("the node agent needs iproute2 (`ip`) on PATH")
        if ip_cmd("link", "show", CLUSTER_VETH, check=False).returncode != 0:
            raise SystemExit(f"the cluster's pod network ({CLUSTER_VETH}) is missing: start the cluster first")
        dev = route_device(HOST_GATEWAY)
        if dev not in ("lo", CLUSTER_VETH):
            raise SystemExit(f"{HOST_GATEWAY} is not an address of this host (routed via {dev})")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.log_root.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.state_dir / "agent.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another node agent is running with state in {self.state_dir}") from None

    def _recover(self) -> None:
        """Keep what belongs to pods that still exist here; remove every other trace of earlier runs."""
        kept: dict[str, Manifest] = {}
        for uid, record in self._load_state().items():
            pod = self.api.get(pods_path(record["namespace"], record["name"]))
            same = (
                pod is not None
                and pod["metadata"]["uid"] == uid
                and pod["spec"].get("nodeName") == record.get("node")
                and record.get("node") in self.nodes
                and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            )
            if same and pod is not None:
                kept[uid] = record
                log.info("re-adopting pod %s/%s", record["namespace"], record["name"])
            else:
                log.info("cleaning up pod %s/%s, gone while the agent was away", record["namespace"], record["name"])
                terminate_record(record)
        with self.lock:
            self.records = kept
            self.save_state()
        self._sweep(kept)

    def _sweep(self, kept: dict[str, Manifest]) -> None:
        """Remove namespaces, veths, processes and directories of ours that no kept record names."""
        netns_kept = {r["netns"] for r in kept.values()}
        veths_kept = {r["veth"] for r in kept.values()}
        prefixes_kept = {r["directory"] for r in kept.values()}
        for pid in _shim_processes():
            prefix = _shim_prefix(pid)
            if prefix is not None and str(Path(prefix).parent) not in prefixes_kept:
                log.info("killing orphaned container process group %s", pid)
                kill_group(pid)
        for netns in list_netns(NETNS_PREFIX):
            if netns not in netns_kept:
                log.info("removing orphaned network namespace %s", netns)
                for pid in netns_pids(netns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                ip_cmd("netns", "delete", netns, check=False)
        for veth in agent_veths():
            if veth not in veths_kept:
                ip_cmd("link", "delete", veth, check=False)
        if self.pods_dir.is_dir():
            for directory in self.pods_dir.iterdir():
                if str(directory) not in prefixes_kept:
                    shutil.rmtree(directory, ignore_errors=True)

    def run(self) -> int:
        self._preflight()
        self._recover()
        threading.Thread(target=self._send_events, name="events", daemon=True).start()
        for node in self.nodes:
            self._register(node)
        # Pods that the records name first, so that their workers adopt before the watch lists them.
        for record in list(self.records.values()):
            pod = self.api.get(pods_path(record["namespace"], record["name"]))
            if pod is not None:
                self.on_pod(pod)
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        for node in self.nodes:
            threading.Thread(target=self._watch_node, args=(node,), name=f"watch-{node}", daemon=True).start()
        log.info("running: nodes %s, pod IPs from %s, state in %s", self.nodes, AGENT_POD_RANGE, self.state_dir)
        self.stop.wait()
        return self._finish()

    def request_stop(self, mode: str) -> None:
        self.mode = mode
        self.stop.set()

    def _finish(self) -> int:
        log.info("stopping (%s)", "leaving pods running" if self.mode == "detach" else "stopping every pod")
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.shutdown(self.mode)
        deadline = time.monotonic() + self.shutdown_grace + 20
        for worker in workers:
            worker.finished.wait(max(0.1, deadline - time.monotonic()))
        if self.mode == "detach":
            self.save_state()
            log.info("detached; %d pods left running for the next agent", len(self.records))
            return 0
        with self.lock:
            leftovers = dict(self.records)
            self.records = {}
            self.save_state()
        for record in leftovers.values():
            terminate_record(record)
        self._sweep({})
        for node in self.nodes:
            with contextlib.suppress(ApiError, requests.RequestException, OSError):
                self._report(node, False, "NodeAgentStopped", "the node agent was stopped")
        self.events.put(None)
        log.info("stopped")
        return 0


def _shim_processes() -> list[int]:
    found = []
    marker = str(SHIM).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline.split(b"\0"):
            found.append(int(entry.name))
    return found


def _shim_prefix(pid: int) -> str | None:
    try:
        parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    marker = str(SHIM).encode()
    if marker in parts and parts.index(marker) + 1 < len(parts):
        return parts[parts.index(marker) + 1].decode()
    return None


def default_pods_dir(state_dir: Path) -> Path:
    """A short directory for the pods' private files, one per state directory.

    Not under the state directory: a pod's TMPDIR lives here, and a deep checkout path would push the Unix sockets
    that programs create in TMPDIR past the kernel's 108-byte limit ("AF_UNIX path too long").
    testkit/scripts/lib.sh computes the same path for cleanup.
    """
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return Path("/tmp") / f"mdpods-{digest}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy_testkit.nodeagent", description=__doc__.split("\n\n")[0]
    )
    cluster_dir = Path(os.environ.get("MODELDEPLOY_CLUSTER_DIR") or REPO_ROOT / ".cluster")
    parser.add_argument("--kubeconfig", default=str(cluster_dir / "kubeconfig"))
    parser.add_argument(
        "--node", action="append", default=[], help="node name (repeat for several; default agent-node-0)"
    )
    parser.add_argument("--state-dir", default=str(cluster_dir / "nodeagent"))
    parser.add_argument(
        "--pods-dir", default="", help="the pods' private directories (default: /tmp/mdpods-<hash of --state-dir>)"
    )
    parser.add_argument("--log-dir", default=str(cluster_dir / "logs" / "pods"), help="container logs")
    parser.add_argument("--host-ip", default=HOST_GATEWAY, help="the nodes' InternalIP and the pods' hostIP")
    parser.add_argument("--cpu", default="8", help="CPU capacity reported per node")
    parser.add_argument("--memory", default="16Gi", help="memory capacity reported per node")
    parser.add_argument("--pods", type=int, default=110, help="pod capacity per node")
    parser.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="at most this long for a pod's processes on SIGTERM"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=options.log_level,
        format="%(asctime)s %(levelname).1s %(threadName)s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    agent = Agent(options)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.request_stop("detach" if signum == signal.SIGUSR1 else "shutdown")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    return agent.run()
