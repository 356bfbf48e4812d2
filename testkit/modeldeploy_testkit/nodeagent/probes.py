"""Container probes as a kubelet runs them: httpGet, tcpSocket and exec, each bounded by timeoutSeconds; and the
handlers of lifecycle hooks (preStop): sleep, exec and httpGet, bounded by what is left of the grace period.

httpGet and tcpSocket go to the pod IP (or probe.host) only after `ip route get` has shown that the address is
routed through the pod's own veth; otherwise the probe (or hook) fails without sending anything.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from .network import RouteRefusedError, check_route

Manifest = dict[str, Any]
PROBE_USER_AGENT = "kube-probe/1.37"


@dataclass(frozen=True)
class ProbeTiming:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Manifest, kind: str) -> ProbeTiming:
        # Liveness and startup probes must have successThreshold 1; the API server enforces it.
        success = int(probe.get("successThreshold") or 1) if kind == "readiness" else 1
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=success,
            failure_threshold=int(probe.get("failureThreshold") or 3),
        )


def resolve_port(port: Any, container: Manifest) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not a port of container {container.get('name')}")


def run_probe(
    probe: Manifest, container: Manifest, pod_ip: str, veth: str, netns: str, env: dict[str, str]
) -> tuple[bool, str]:
    """(success, message) of one probe attempt."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            return _http(probe["httpGet"], container, pod_ip, veth, timeout)
        if "tcpSocket" in probe:
            return _tcp(probe["tcpSocket"], container, pod_ip, veth, timeout)
        if "exec" in probe:
            return _exec(probe["exec"], netns, env, timeout)
    except RouteRefusedError as error:
        return False, f"not probed: {error}"
    except ValueError as error:
        return False, str(error)
    return False, f"unsupported probe handler: {sorted(probe)}"


def _http(action: Manifest, container: Manifest, pod_ip: str, veth: str, timeout: float) -> tuple[bool, str]:
    host = action.get("host") or pod_ip
    port = resolve_port(action.get("port"), container)
    check_route(host, veth)
    path = action.get("path") or "/"
    headers = {"User-Agent": PROBE_USER_AGENT, "Accept": "*/*"}
    for header in action.get("httpHeaders") or []:
        headers[str(header["name"])] = str(header.get("value", ""))
    connection: http.client.HTTPConnection
    if str(action.get("scheme") or "HTTP").upper() == "HTTPS":
        # A kubelet does not verify the certificate of an HTTPS probe either.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read(1024)
    except (OSError, http.client.HTTPException) as error:
        return False, f'Get "http://{host}:{port}{path}": {error}'
    finally:
        connection.close()
    if 200 <= response.status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {response.status} ({body[:200].decode(errors='replace')})"


def _tcp(action: Manifest, container: Manifest, pod_ip: str, veth: str, timeout: float) -> tuple[bool, str]:
    host = action.get("host") or pod_ip
    port = resolve_port(action.get("port"), container)
    check_route(host, veth)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as error:
        return False, f"dial tcp {host}:{port}: {error}"


def _exec(action: Manifest, netns: str, env: dict[str, str], timeout: float) -> tuple[bool, str]:
    command = [str(part) for part in action.get("command") or []]
    if not command:
        return False, "exec probe without a command"
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", netns, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout:g}s"
    except OSError as error:
        return False, str(error)
    if result.returncode == 0:
        return True, ""
    return False, f"command exited with {result.returncode}: {(result.stdout + result.stderr)[-200:]}"


def run_lifecycle_handler(
    handler: Manifest,
    container: Manifest,
    pod_ip: str,
    veth: str,
    netns: str,
    env: dict[str, str],
    timeout: float,
) -> tuple[bool, str]:
    """(success, message) of one lifecycle hook, as a kubelet runs it: at most `timeout` seconds (what is left of
    the grace period), however long the handler would take.

    sleep waits `seconds`; exec runs in the pod's namespace; httpGet sends a GET like the probe does (an answer of
    400 or more is reported as a failure). tcpSocket is refused: the kubelet accepts it in the API but never runs
    it as a hook."""
    timeout = max(timeout, 0.0)
    try:
        if "sleep" in handler:
            seconds = float((handler["sleep"] or {}).get("seconds") or 0)
            waited = min(seconds, timeout)
            time.sleep(waited)
            if waited < seconds:
                return False, f"sleep of {seconds:g}s cut short after {waited:g}s: the grace period ran out"
            return True, ""
        if timeout <= 0 and ("exec" in handler or "httpGet" in handler):
            return False, "not run: the grace period had run out"
        if "exec" in handler:
            return _exec(handler["exec"], netns, env, timeout)
        if "httpGet" in handler:
            return _http(handler["httpGet"], container, pod_ip, veth, timeout)
    except RouteRefusedError as error:
        return False, f"not sent: {error}"
    except ValueError as error:
        return False, str(error)
    if "tcpSocket" in handler:
        return False, "tcpSocket is not supported as a lifecycle handler (a kubelet does not run it either)"
    return False, f"unsupported lifecycle handler: {sorted(handler)}"
