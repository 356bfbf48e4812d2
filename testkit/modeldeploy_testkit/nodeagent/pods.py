"""One pod on an agent node: its network namespace, its containers as processes, their probes, its status.

A PodWorker thread owns one pod from the moment it is bound to the node until its object is gone. Each pass it
reaps ended containers, (re)starts those that should run, reacts to failed liveness and startup probes, and
writes the pod's status when it changed. Deletion follows the kubelet: SIGTERM, wait up to the grace period,
SIGKILL, remove the network, then delete the object with grace period 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import requests

from modeldeploy_testkit.kubeapi import STRATEGIC_PATCH, ApiError, KubeAPI, pods_path

from .containers import ConfigError, EnvResolver, Image, command_line, image_for
from .network import PodNetwork, netns_pids
from .probes import ProbeTiming, run_lifecycle_handler, run_probe

Manifest = dict[str, Any]
log = logging.getLogger("nodeagent.pods")


class Node(Protocol):
    """What a pod's worker needs from the agent that runs its node: the agent implements it, so this module does not
    import the agent's."""

    api: KubeAPI
    resolver: EnvResolver
    log_root: Path
    host_ip: str
    shutdown_grace: float

    def save_state(self) -> None: ...

    def event(self, pod: Manifest, kind: str, reason: str, message: str) -> None: ...

    def worker_finished(self, worker: PodWorker) -> None: ...

    def forget(self, uid: str) -> None: ...


SHIM = Path(__file__).resolve().parent / "shim.py"
IP_BINARY = shutil.which("ip") or "/usr/sbin/ip"
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
FORCE_GRACE_SECONDS = 2.0
# A kubelet gives SIGTERM at least this long after a preStop hook, however much of the grace period the hook took.
MIN_GRACE_AFTER_HOOK_SECONDS = 2.0
CONFIG_RETRY_SECONDS = 5.0
ERR_IMAGE_PULL_SHOWN_SECONDS = 2.0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def start_ticks(pid: int) -> int | None:
    """The start time of a process (clock ticks since boot), to tell it from a later process with the same PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int | None, ticks: int | None) -> bool:
    return pid is not None and ticks is not None and start_ticks(pid) == ticks


def kill_group(pgid: int | None, signum: int = signal.SIGKILL) -> None:
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def _read_json(path: Path) -> Manifest | None:
    try:
        result: Manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result


def _older(candidate: Manifest, current: Manifest) -> bool:
    """True when `candidate` is an older version of the object than `current` (etcd revisions grow)."""
    try:
        return int(candidate["metadata"]["resourceVersion"]) < int(current["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


class ContainerRun:
    """One container of the pod. `record` is what survives an agent restart (kept in the agent's state file)."""

    def __init__(self, worker: PodWorker, spec: Manifest, record: Manifest) -> None:
        self.worker = worker
        self.spec = spec
        self.name = str(spec["name"])
        self.record = record
        record.setdefault("restartCount", 0)
        record.setdefault("instance", 0)
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.waiting: tuple[str, str] = ("ContainerCreating", "")
        self.ready = False
        self.started = False
        self.generation = 0
        self.kill_reason: str | None = None
        self.retry_at = 0.0
        self.pull_backoff = 0.0
        self.pull_failed_at = 0.0
        self.last_unhealthy_event = 0.0

    # --- state ------------------------------------------------------------------------------------------------

    @property
    def prefix(self) -> Path:
        return self.worker.directory / self.name

    @property
    def running(self) -> bool:
        return bool(self.record.get("shimPid"))

    @property
    def container_id(self) -> str:
        return f"nodeagent://{self.worker.uid[:8]}-{self.name}-{self.record['instance']}"

    def adopt(self, api_status: Manifest | None) -> None:
        """After an agent restart: keep a container whose shim still runs, or record how it ended."""
        if not self.running:
            return
        if alive(self.record.get("shimPid"), self.record.get("shimTicks")):
            log.info("adopted container %s/%s (shim pid %s)", self.worker.key, self.name, self.record["shimPid"])
            # Keep what the API last heard, rather than flapping Ready while the probes catch up.
            self.started = bool((api_status or {}).get("started", True))
            self.ready = bool((api_status or {}).get("ready", False))
            self._start_probers()
            return
        self.reap(force=True)

    def _pid_info(self) -> Manifest | None:
        return _read_json(Path(f"{self.prefix}.pid"))

    def process_pid(self) -> int | None:
        """PID of the container's own process (the shim's child)."""
        info = self._pid_info()
        return int(info["pid"]) if info and self.running else None

    def reap(self, force: bool = False) -> bool:
        """Record the end of the container's process when it ended; True when it did."""
        if not self.running:
            return False
        ended = _read_json(Path(f"{self.prefix}.exit"))
        shim_gone = False
        if self.proc is not None:
            shim_gone = self.proc.poll() is not None
        else:
            shim_gone = not alive(self.record.get("shimPid"), self.record.get("shimTicks"))
        if ended is None and not shim_gone and not force:
            return False
        if ended is None:
            # The shim itself was killed (or died): the container ends with it.
            ended = {"exitCode": 137, "signal": 9, "finishedAt": now_rfc3339()}
        pgid = self.record.get("shimPid")
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                kill_group(pgid)
                self.proc.wait(timeout=5)
            self.proc = None
        else:
            # Not our child (adopted): nothing of its group may survive it.
            kill_group(pgid)
        exit_code = int(ended.get("exitCode", 137))
        terminated: Manifest = {
            "exitCode": exit_code,
            "reason": ended.get("reason") or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": self.record.get("startedAt") or ended.get("startedAt") or now_rfc3339(),
            "finishedAt": ended.get("finishedAt") or now_rfc3339(),
            "containerID": self.container_id,
        }
        if ended.get("signal"):
            terminated["signal"] = int(ended["signal"])
        if ended.get("message"):
            terminated["message"] = str(ended["message"])
        self.record["priorTerminated"] = self.record.get("lastTerminated")
        self.record["lastTerminated"] = terminated
        self.record["finishedEpoch"] = time.time()
        self.record["shimPid"] = None
        self.record["shimTicks"] = None
        self.ready = False
        self.started = False
        self.generation += 1
        self.kill_reason = None
        log.info("container %s/%s exited with %s", self.worker.key, self.name, exit_code)
        self.worker.save()
        return True

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def should_restart(self) -> bool:
        if self.worker.terminating:
            return False
        last = self.record.get("lastTerminated")
        if last is None:
            return True
        policy = self.worker.restart_policy
        if policy == "Never":
            return False
        if policy == "OnFailure":
            return int(last.get("exitCode", 1)) != 0
        return True

    def step(self, now: float) -> None:
        """One pass: react to a failed probe, or start the container when it should run and may."""
        if self.running:
            if self.kill_reason is not None:
                reason = self.kill_reason
                log.info("killing container %s/%s: %s", self.worker.key, self.name, reason)
                self.worker.event("Normal", "Killing", f"Container {self.name} {reason}, will be restarted")
                self.stop(self.worker.probe_grace(), wait=True)
            elif self.record.get("image") and self.record["image"] != self.spec.get("image"):
                self.worker.event("Normal", "Killing", f"Container {self.name} definition changed, will be restarted")
                self.stop(self.worker.grace_seconds(), wait=True)
            return
        if not self.should_restart():
            return
        if now < self.retry_at:
            return
        last = self.record.get("lastTerminated")
        if last is not None and self._in_backoff(now):
            return
        self.start(now)

    def _in_backoff(self, now: float) -> bool:
        backoff = self.record.get("backoff")
        if backoff and now - backoff["updated"] > BACKOFF_RESET:
            self.record["backoff"] = backoff = None
        if not backoff:
            return False
        finished = float(self.record.get("finishedEpoch") or now)
        until = backoff["updated"] + backoff["seconds"]
        if finished - backoff["updated"] < backoff["seconds"] and now < until:
            message = (
                f"back-off {int(backoff['seconds'])}s restarting failed container={self.name} "
                f"pod={self.worker.pod_name}_{self.worker.namespace}({self.worker.uid})"
            )
            if self.waiting[0] != "CrashLoopBackOff":
                self.worker.event("Warning", "BackOff", "Back-off restarting failed container")
            self.waiting = ("CrashLoopBackOff", message)
            return True
        return False

    def _pull(self, now: float) -> Image | None:
        image = image_for(str(self.spec.get("image", "")))
        if image is not None:
            return image
        reference = self.spec.get("image")
        if self.pull_failed_at and now < self.pull_failed_at + self.pull_backoff:
            if now >= self.pull_failed_at + ERR_IMAGE_PULL_SHOWN_SECONDS:
                if self.waiting[0] != "ImagePullBackOff":
                    self.worker.event("Normal", "BackOff", f'Back-off pulling image "{reference}"')
                self.waiting = ("ImagePullBackOff", f'Back-off pulling image "{reference}"')
            return None
        message = (
            f'Failed to pull image "{reference}": the node agent runs only images it has an entry point for '
            f"(modeldeploy/runtime:*): image not found"
        )
        self.worker.event("Normal", "Pulling", f'Pulling image "{reference}"')
        self.worker.event("Warning", "Failed", message)
        self.waiting = ("ErrImagePull", message)
        self.pull_backoff = BACKOFF_INITIAL if not self.pull_backoff else min(self.pull_backoff * 2, BACKOFF_MAX)
        self.pull_failed_at = now
        return None

    def start(self, now: float) -> None:
        image = self._pull(now)
        if image is None:
            return
        worker = self.worker
        tmp = worker.directory / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            env = worker.resolver.resolve(worker.pod, self.spec, image.environment(tmp))
            argv = command_line(image, self.spec, env)
        except (ConfigError, ApiError, requests.RequestException, KeyError, StopIteration) as error:
            self.waiting = ("CreateContainerConfigError", str(error))
            self.worker.event("Warning", "Failed", f"Error: {error}")
            self.retry_at = now + CONFIG_RETRY_SECONDS
            return
        workdir = Path(self.spec.get("workingDir") or tmp)
        if not workdir.is_dir():
            message = f"working directory {workdir} does not exist on this node"
            self.waiting = ("CreateContainerError", message)
            self.worker.event("Warning", "Failed", f"Error: {message}")
            self.retry_at = now + CONFIG_RETRY_SECONDS
            return
        restarting = self.record.get("lastTerminated") is not None
        if restarting:
            backoff = self.record.get("backoff")
            seconds = BACKOFF_INITIAL if not backoff else min(backoff["seconds"] * 2, BACKOFF_MAX)
            self.record["backoff"] = {"seconds": seconds, "updated": now}
            self.record["restartCount"] += 1
        for suffix in (".pid", ".exit", ".exit.partial", ".pid.partial"):
            Path(f"{self.prefix}{suffix}").unlink(missing_ok=True)
        self.record["instance"] += 1
        self.env = env
        log_path = worker.log_directory / f"{self.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        shim = [sys.executable, "-I", str(SHIM), str(self.prefix), "--"]
        try:
            with log_path.open("ab") as log_file:
                self.proc = subprocess.Popen(
                    [IP_BINARY, "netns", "exec", worker.network.netns, *shim, *argv],
                    env=env,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            self.waiting = ("RunContainerError", str(error))
            self.worker.event("Warning", "Failed", f"Error: {error}")
            self.retry_at = now + CONFIG_RETRY_SECONDS
            self.worker.save()
            return
        self.record["shimPid"] = self.proc.pid
        self.record["shimTicks"] = start_ticks(self.proc.pid)
        self.record["startedAt"] = now_rfc3339()
        self.record["image"] = self.spec.get("image")
        self.waiting = ("", "")
        self.ready = False
        self.started = False
        self.generation += 1
        worker.save()
        log.info("started container %s/%s (shim pid %s): %s", worker.key, self.name, self.proc.pid, " ".join(argv))
        worker.event("Normal", "Started", f"Started container {self.name}")
        self._start_probers()

    def stop(self, grace: float, wait: bool) -> None:
        """As a kubelet kills a container: its preStop hook first, then SIGTERM (the shim passes it on), and SIGKILL
        to the whole process group once the grace period is over. The hook's time counts against the grace period;
        SIGTERM always gets MIN_GRACE_AFTER_HOOK_SECONDS at least. The probes go on meanwhile, so readiness follows
        what the container answers until it exits (then reap() makes it not ready)."""
        if not self.running:
            return
        started = time.monotonic()
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if hook:
            self.run_pre_stop(hook, grace)
            grace = max(grace - (time.monotonic() - started), MIN_GRACE_AFTER_HOOK_SECONDS)
        if not self.running:  # ended during its hook
            return
        shim = self.record.get("shimPid")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if shim:
                os.kill(shim, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.reap():
                return
            time.sleep(0.1)
        log.info("container %s/%s did not stop within %.0fs; killing it", self.worker.key, self.name, grace)
        kill_group(shim)
        for _ in range(50):
            if self.reap():
                return
            time.sleep(0.1)
        if wait:
            self.reap(force=True)

    def run_pre_stop(self, hook: Manifest, grace: float) -> None:
        """The preStop handler, for at most `grace` seconds; a failure is an Event, and the stop goes on."""
        worker = self.worker
        log.info("running the preStop hook of %s/%s (%s)", worker.key, self.name, ", ".join(sorted(hook)))
        ok, message = run_lifecycle_handler(
            hook, self.spec, worker.network.ip, worker.network.veth, worker.network.netns, self.env, grace
        )
        if not ok:
            log.info("preStop hook of %s/%s failed: %s", worker.key, self.name, message)
            worker.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {message}")

    # --- probes ---------------------------------------------------------------------------------------------------

    def _start_probers(self) -> None:
        generation = self.generation
        probes = {kind: self.spec.get(f"{kind}Probe") for kind in ("startup", "readiness", "liveness")}
        if not probes["startup"]:
            self.started = True
        if not probes["readiness"]:
            self.ready = self.started
        for kind, probe in probes.items():
            if probe:
                thread = threading.Thread(
                    target=self._probe_loop,
                    args=(kind, probe, generation),
                    name=f"probe-{self.worker.pod_name}-{self.name}-{kind}",
                    daemon=True,
                )
                thread.start()
        self.worker.wake()

    def _current(self, generation: int) -> bool:
        return self.generation == generation and not self.worker.stopping.is_set()

    def _sleep(self, seconds: float, generation: int) -> bool:
        deadline = time.monotonic() + seconds
        while self._current(generation):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(0.2, remaining))
        return False

    def _probe_loop(self, kind: str, probe: Manifest, generation: int) -> None:
        timing = ProbeTiming.of(probe, kind)
        if not self._sleep(timing.initial_delay, generation):
            return
        successes = failures = 0
        while self._current(generation):
            if kind != "startup" and not self.started:
                if not self._sleep(0.2, generation):
                    return
                continue
            worker = self.worker
            ok, message = run_probe(
                probe, self.spec, worker.network.ip, worker.network.veth, worker.network.netns, self.env
            )
            if not self._current(generation):
                return
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                self._unhealthy(kind, message)
            if kind == "startup":
                if ok:
                    self.started = True
                    worker.wake()
                    return
                if failures >= timing.failure_threshold:
                    self.kill_reason = "failed startup probe"
                    worker.wake()
                    return
            elif kind == "readiness":
                if ok and successes >= timing.success_threshold and not self.ready:
                    self.ready = True
                    worker.wake()
                elif not ok and failures >= timing.failure_threshold and self.ready:
                    self.ready = False
                    worker.wake()
            elif not ok and failures >= timing.failure_threshold:
                self.kill_reason = "failed liveness probe"
                worker.wake()
                return
            if not self._sleep(timing.period, generation):
                return

    def _unhealthy(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self.last_unhealthy_event >= 30:
            self.last_unhealthy_event = now
            self.worker.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}")

    # --- status ---------------------------------------------------------------------------------------------------

    def status(self) -> Manifest:
        image = str(self.spec.get("image", ""))
        known = image_for(image) is not None
        result: Manifest = {
            "name": self.name,
            "image": image,
            "imageID": f"{image}@sha256:{hashlib.sha256(image.encode()).hexdigest()}" if known else "",
            "ready": bool(self.running and self.ready),
            "started": bool(self.running and self.started),
            "restartCount": int(self.record["restartCount"]),
            "state": {},
            "lastState": {},
        }
        last = self.record.get("lastTerminated")
        if self.record["instance"]:
            result["containerID"] = self.container_id
        if self.running:
            result["state"] = {"running": {"startedAt": self.record["startedAt"]}}
            if last:
                result["lastState"] = {"terminated": last}
        elif last is not None and not self.should_restart():
            result["state"] = {"terminated": last}
            prior = self.record.get("priorTerminated")
            if prior:
                result["lastState"] = {"terminated": prior}
        else:
            reason, message = self.waiting
            waiting: Manifest = {"reason": reason or "ContainerCreating"}
            if message:
                waiting["message"] = message
            result["state"] = {"waiting": waiting}
            if last:
                result["lastState"] = {"terminated": last}
        return result


class PodWorker(threading.Thread):
    def __init__(self, agent: Node, pod: Manifest, record: Manifest) -> None:
        metadata = pod["metadata"]
        super().__init__(name=f"pod-{metadata['namespace']}/{metadata['name']}", daemon=True)
        self.agent = agent
        self.api: KubeAPI = agent.api
        self.resolver: EnvResolver = agent.resolver
        self.uid = str(metadata["uid"])
        self.namespace = str(metadata["namespace"])
        self.pod_name = str(metadata["name"])
        self.key = f"{self.namespace}/{self.pod_name}"
        self.pod = pod
        self.record = record
        self.network = PodNetwork(record["netns"], record["veth"], record["ip"])
        self.directory = Path(record["directory"])
        self.log_directory = agent.log_root / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.containers = [
            ContainerRun(self, spec, record["containers"].setdefault(spec["name"], {}))
            for spec in pod["spec"]["containers"]
        ]
        self.stopping = threading.Event()
        self.terminating = False
        """The pod is being stopped for good: containers that end are not restarted, and show as terminated."""
        self.mode = ""  # "", "shutdown" or "detach"
        self.gone = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._conditions: dict[str, Manifest] = {}
        self._last_status: Manifest | None = None
        self.finished = threading.Event()

    # --- called from other threads --------------------------------------------------------------------------------

    def update(self, pod: Manifest) -> None:
        with self._lock:
            if _older(pod, self.pod):
                return
            self.pod = pod
            specs = {c["name"]: c for c in pod["spec"]["containers"]}
            for container in self.containers:
                container.spec = specs.get(container.name, container.spec)
        self.wake()

    def deleted(self) -> None:
        """The object is gone from the API (deleted with grace 0 by someone else)."""
        self.gone = True
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def shutdown(self, mode: str) -> None:
        self.mode = mode
        self.stopping.set()
        self.wake()

    def save(self) -> None:
        self.agent.save_state()

    def event(self, kind: str, reason: str, message: str) -> None:
        self.agent.event(self.pod, kind, reason, message)

    # --- settings ---------------------------------------------------------------------------------------------------

    @property
    def restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    def grace_seconds(self) -> float:
        metadata = self.pod["metadata"]
        if metadata.get("deletionGracePeriodSeconds") is not None:
            return float(metadata["deletionGracePeriodSeconds"])
        value = self.pod["spec"].get("terminationGracePeriodSeconds")
        return float(30 if value is None else value)

    def probe_grace(self) -> float:
        return self.grace_seconds()

    # --- the loop ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s failed", self.key)
        finally:
            self.finished.set()
            self.agent.worker_finished(self)

    def _run(self) -> None:
        if self.pod["spec"].get("initContainers"):
            self._write_status(self._unsupported_status("init containers are not supported by the node agent"))
            while not self.stopping.is_set() and not self.gone and not self.pod["metadata"].get("deletionTimestamp"):
                self._wake.wait(1.0)
                self._wake.clear()
            if self.mode != "detach":
                self._terminate(delete_object=not self.gone and bool(self.pod["metadata"].get("deletionTimestamp")))
            return
        if self.pod["metadata"].get("deletionTimestamp"):
            # Deleted while the agent was away: nothing new is set up, what still runs is stopped.
            for container in self.containers:
                container.adopt(None)
            self._terminate(delete_object=True)
            return
        while not self._ensure_network():
            if self.stopping.is_set() or self.gone or self.pod["metadata"].get("deletionTimestamp"):
                if self.mode != "detach":
                    self._terminate(delete_object=not self.gone and bool(self.pod["metadata"].get("deletionTimestamp")))
                return
            self._wake.wait(5.0)
            self._wake.clear()
        api_statuses = {s["name"]: s for s in (self.pod.get("status") or {}).get("containerStatuses") or []}
        for container in self.containers:
            container.adopt(api_statuses.get(container.name))
        while True:
            if self.stopping.is_set():
                if self.mode == "detach":
                    for container in self.containers:
                        container.generation += 1
                    return
                self._terminate(
                    delete_object=bool(self.pod["metadata"].get("deletionTimestamp")),
                    grace_cap=self.agent.shutdown_grace,
                    shutdown=True,
                )
                return
            if self.gone:
                self._terminate(delete_object=False, grace_cap=FORCE_GRACE_SECONDS)
                return
            if self.pod["metadata"].get("deletionTimestamp"):
                self._terminate(delete_object=True)
                return
            try:
                now = time.time()
                for container in self.containers:
                    container.reap()
                if not self._terminal():
                    for container in self.containers:
                        container.step(now)
                self._write_status(self._status())
            except Exception:
                # A pass that failed (the API server restarting, say) is retried; the pod is never left unmanaged.
                log.exception("pod %s: pass failed; retrying", self.key)
                self._wake.wait(2.0)
            self._wake.wait(1.0)
            self._wake.clear()

    def _ensure_network(self) -> bool:
        """The pod's namespace, veth and routes; False (and an event) when they cannot be made yet."""
        if self.network.exists():
            return True
        # A namespace that vanished takes the pod's processes' network with it: they cannot be adopted.
        for container in self.containers:
            if container.running:
                kill_group(container.record.get("shimPid"))
                container.reap(force=True)
        log.info("creating network for %s: %s %s %s", self.key, self.network.netns, self.network.veth, self.network.ip)
        try:
            self.network.create(self.uid)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            log.warning("network of %s: %s", self.key, error)
            self.event("Warning", "FailedCreatePodSandBox", f"Failed to create the pod's network: {error}")
            return False
        self.record["networkReady"] = now_rfc3339()
        self.save()
        return True

    def _terminal(self) -> bool:
        return all(not c.running and not c.should_restart() for c in self.containers)

    def _terminate(self, delete_object: bool, grace_cap: float | None = None, shutdown: bool = False) -> None:
        grace = self.grace_seconds()
        if grace_cap is not None:
            grace = min(grace, grace_cap)
        log.info("stopping pod %s (grace %.0fs, delete=%s)", self.key, grace, delete_object)
        self.terminating = True
        for container in self.containers:
            if container.running:
                self.event("Normal", "Killing", f"Stopping container {container.name}")
        stoppers = [
            threading.Thread(target=container.stop, args=(grace, True), daemon=True)
            for container in self.containers
            if container.running
        ]
        for thread in stoppers:
            thread.start()
        # Meanwhile the pod's status follows its containers, as a kubelet keeps reporting a terminating pod: Ready
        # stays what the readiness probe says (a draining server answers 503) until the containers exit. The
        # EndpointSlice controller has already marked the pod's endpoints ready=false and terminating=true; their
        # `serving` condition is this Ready condition.
        deadline = time.monotonic() + grace + 15
        while any(thread.is_alive() for thread in stoppers) and time.monotonic() < deadline:
            if not self.gone and not shutdown:
                try:
                    self._write_status(self._status())
                except Exception:
                    log.exception("pod %s: status while stopping failed; going on", self.key)
            self._wake.wait(0.5)
            self._wake.clear()
        # Whatever still runs in the pod's namespace ends with it.
        for pid in netns_pids(self.network.netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not self.gone:
            self._write_status(self._status(final=True, shutdown=shutdown and not delete_object))
        self.network.delete()
        if delete_object and not self.gone:
            try:
                self.api.delete(
                    pods_path(self.namespace, self.pod_name),
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )
            except ApiError as error:
                if error.status != 409:
                    log.warning("deleting pod %s: %s", self.key, error)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.agent.forget(self.uid)
        log.info("pod %s stopped", self.key)

    # --- status -------------------------------------------------------------------------------------------------------

    def _condition(self, kind: str, status: bool, reason: str = "", message: str = "") -> Manifest:
        value = "True" if status else "False"
        previous = self._conditions.get(kind)
        if previous is None:
            api = next((c for c in (self.pod.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)
            if api is not None and api.get("status") == value and api.get("lastTransitionTime"):
                previous = {"status": value, "lastTransitionTime": api["lastTransitionTime"]}
        if previous is None or previous["status"] != value:
            previous = {"status": value, "lastTransitionTime": now_rfc3339()}
        self._conditions[kind] = previous
        condition: Manifest = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": previous["lastTransitionTime"],
        }
        # Explicit nulls: a strategic merge patch would otherwise keep the reason of the previous status.
        condition["reason"] = reason or None
        condition["message"] = message or None
        return condition

    def _phase(self, statuses: list[Manifest], final: bool) -> str:
        running = sum(1 for s in statuses if "running" in s["state"])
        never_ran = sum(1 for s in statuses if "waiting" in s["state"] and not s["lastState"])
        terminated = [s["state"]["terminated"] for s in statuses if "terminated" in s["state"]]
        if final:
            codes = [s.get("lastState", {}).get("terminated", {}).get("exitCode", 0) for s in statuses]
            codes += [t["exitCode"] for t in terminated]
            return "Succeeded" if all(code == 0 for code in codes) else "Failed"
        if never_ran:
            return "Pending"
        if running or len(terminated) < len(statuses):
            return "Running"
        return "Succeeded" if all(t["exitCode"] == 0 for t in terminated) else "Failed"

    def _status(self, final: bool = False, shutdown: bool = False) -> Manifest:
        statuses = [c.status() for c in self.containers]
        if final:
            for status, container in zip(statuses, self.containers, strict=True):
                last = container.record.get("lastTerminated")
                status["ready"] = False
                status["started"] = False
                if last is not None:
                    status["state"] = {"terminated": last}
                    prior = container.record.get("priorTerminated")
                    status["lastState"] = {"terminated": prior} if prior else {}
        unready = [s["name"] for s in statuses if not s["ready"]]
        all_ready = not unready and not final
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
        reason = "ContainersNotReady" if not all_ready else ""
        if final and not unready:
            reason = "PodCompleted"
        conditions = [
            self._condition("PodReadyToStartContainers", not final),
            self._condition("Initialized", True),
            self._condition("ContainersReady", all_ready, reason, message),
            self._condition("Ready", all_ready, reason, message),
        ]
        host_ip = self.agent.host_ip
        extra: Manifest = {}
        if shutdown:
            # What a kubelet reports for the pods of a node that shuts down gracefully: terminal, so that their
            # controllers replace them and deleting them needs no kubelet.
            message = "Pod was terminated in response to imminent node shutdown."
            conditions.append(self._condition("DisruptionTarget", True, "TerminationByKubelet", message))
            extra = {"reason": "Terminated", "message": message}
        return {
            **extra,
            "phase": "Failed" if shutdown else self._phase(statuses, final),
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": self.network.ip,
            "podIPs": [{"ip": self.network.ip}],
            "startTime": self.record["startTime"],
            "containerStatuses": statuses,
        }

    def _unsupported_status(self, message: str) -> Manifest:
        return {
            "phase": "Pending",
            "conditions": [
                self._condition("Initialized", False, "InitContainersNotSupported", message),
                self._condition("ContainersReady", False, "ContainersNotInitialized", message),
                self._condition("Ready", False, "ContainersNotInitialized", message),
            ],
            "hostIP": self.agent.host_ip,
            "hostIPs": [{"ip": self.agent.host_ip}],
            "startTime": self.record["startTime"],
        }

    def _differs_from_api(self, status: Manifest) -> bool:
        current = self.pod.get("status") or {}
        if current.get("phase") != status.get("phase") or current.get("podIP") != status.get("podIP"):
            return True
        ours = {c["type"]: c["status"] for c in status.get("conditions", [])}
        theirs = {c["type"]: c.get("status") for c in current.get("conditions") or []}
        return any(theirs.get(kind) != value for kind, value in ours.items())

    def _write_status(self, status: Manifest) -> None:
        if status == self._last_status and not self._differs_from_api(status):
            return
        try:
            updated = self.api.patch(
                pods_path(self.namespace, self.pod_name, "status"), {"status": status}, content_type=STRATEGIC_PATCH
            )
        except ApiError as error:
            if error.status == 404:
                self.gone = True
            else:
                log.warning("status of %s: %s", self.key, error)
            return
        except OSError as error:
            log.warning("status of %s: %s", self.key, error)
            return
        self._last_status = status
        with self._lock:
            if not _older(updated, self.pod):
                self.pod = updated


def terminate_record(record: Manifest, on_kill: Callable[[int], None] | None = None) -> None:
    """Stop everything a pod record names without a worker: its shims' process groups and its network."""
    for container in (record.get("containers") or {}).values():
        pid = container.get("shimPid")
        if pid and alive(pid, container.get("shimTicks")):
            kill_group(pid)
            if on_kill:
                on_kill(pid)
    netns = record.get("netns")
    if netns:
        for pid in netns_pids(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if record.get("netns") and record.get("veth"):
        PodNetwork(record["netns"], record["veth"], record.get("ip", "")).delete()
    if record.get("directory"):
        shutil.rmtree(record["directory"], ignore_errors=True)
