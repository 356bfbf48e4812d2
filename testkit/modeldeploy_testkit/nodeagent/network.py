"""Pod networking (the CNI "ptp" shape) and the route check every sender to a pod IP must pass first.

Each pod gets a network namespace `mdpod-<hash>` joined to the host by a veth pair: `eth0` inside with the pod
IP as a /32, `mdv<hash>` on the host with a /32 route to the pod IP. The pod's only route leads back to the
host's address on the cluster's veth (198.19.255.254), so nothing a pod sends can leave the machine. Host-side
veths carry the interface alias `modeldeploy-nodeagent:<pod uid>`, which is how tools recognise them.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass

# Every pod IP of the local cluster; kwok hands out 198.18.0.0/16, Services use 198.19.0.0/20, the cluster's
# own veth pair holds 198.19.255.253-254. The agent's pods take 198.19.128.0/18, clear of all three.
CLUSTER_POD_RANGE = ipaddress.ip_network("198.18.0.0/15")
AGENT_POD_RANGE = ipaddress.ip_network("198.19.128.0/18")
CLUSTER_VETH = "mdpods0"
HOST_GATEWAY = "198.19.255.254"
NETNS_PREFIX = "mdpod-"
VETH_PREFIX = "mdv"
ALIAS_PREFIX = "modeldeploy-nodeagent:"

_ROUTE_DEV = re.compile(r"\bdev (\S+)")


class RouteRefusedError(Exception):
    """Sending to this address would not stay on our own veths."""


def ip_cmd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def names_for(uid: str) -> tuple[str, str]:
    """(netns name, host veth name) of a pod; interface names stay within 15 characters."""
    short = uid.replace("-", "")[:10]
    return f"{NETNS_PREFIX}{short}", f"{VETH_PREFIX}{short}"


def agent_veth_alias(dev: str) -> str | None:
    """The alias of an interface when it is one of the node agent's host-side veths."""
    result = ip_cmd("-o", "link", "show", "dev", dev, check=False)
    if result.returncode != 0:
        return None
    match = re.search(r"\balias (\S+)", result.stdout)
    if match and match.group(1).startswith(ALIAS_PREFIX):
        return match.group(1)
    return None


def route_device(address: str) -> str:
    """The device `ip route get` names for an address, refusing anything reached through a gateway."""
    result = ip_cmd("route", "get", address, check=False)
    if result.returncode != 0:
        raise RouteRefusedError(f"ip route get {address} failed: {result.stderr.strip()}")
    first = result.stdout.splitlines()[0] if result.stdout else ""
    if " via " in f" {first} ":
        raise RouteRefusedError(f"{address} is routed through a gateway ({first.strip()}); refusing to send")
    match = _ROUTE_DEV.search(first)
    if not match:
        raise RouteRefusedError(f"ip route get {address} names no device ({first.strip()})")
    return match.group(1)


def check_route(address: str, expected_dev: str | None = None) -> str:
    """Run `ip route get` and return the device, or raise RouteRefusedError.

    Allowed: an address in 198.18.0.0/15 routed directly through `expected_dev` when given, otherwise through the
    cluster's veth (mdpods0) or a host-side veth the node agent created (recognised by its alias).
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise RouteRefusedError(f"{address!r} is not an IP address") from None
    if parsed not in CLUSTER_POD_RANGE:
        raise RouteRefusedError(f"{address} is outside the pod range {CLUSTER_POD_RANGE}; refusing to send")
    dev = route_device(address)
    if expected_dev is not None:
        if dev != expected_dev:
            raise RouteRefusedError(f"{address} is routed through {dev}, not the pod's veth {expected_dev}")
        return dev
    if dev == CLUSTER_VETH or (dev.startswith(VETH_PREFIX) and agent_veth_alias(dev)):
        return dev
    raise RouteRefusedError(f"{address} is routed through {dev}, which is not one of our veths; refusing to send")


@dataclass(frozen=True)
class PodNetwork:
    netns: str
    veth: str
    ip: str

    def create(self, uid: str) -> None:
        """Namespace, veth pair, addresses and routes; whatever an earlier attempt left is removed first."""
        self.delete()
        peer = f"mdt{self.veth[len(VETH_PREFIX) :]}"
        ip_cmd("netns", "add", self.netns)
        try:
            ip_cmd("link", "add", self.veth, "type", "veth", "peer", "name", peer, "netns", self.netns)
            ip_cmd("link", "set", "dev", self.veth, "alias", f"{ALIAS_PREFIX}{uid}")
            ip_cmd("-n", self.netns, "link", "set", peer, "name", "eth0")
            ip_cmd("-n", self.netns, "addr", "add", f"{self.ip}/32", "dev", "eth0")
            ip_cmd("-n", self.netns, "link", "set", "lo", "up")
            ip_cmd("-n", self.netns, "link", "set", "eth0", "up")
            ip_cmd("link", "set", self.veth, "up")
            # Inside: only the host's gateway address is reachable; there is no default route.
            ip_cmd("-n", self.netns, "route", "add", f"{HOST_GATEWAY}/32", "dev", "eth0", "scope", "link")
            # Outside: the /32 is more specific than the /15 into the cluster's namespace.
            ip_cmd("route", "add", f"{self.ip}/32", "dev", self.veth, "src", HOST_GATEWAY)
            check_route(self.ip, self.veth)
        except Exception:
            self.delete()
            raise

    def delete(self) -> None:
        """Remove the namespace (which takes the veth pair and the host route with it)."""
        ip_cmd("link", "delete", self.veth, check=False)
        ip_cmd("netns", "delete", self.netns, check=False)

    def exists(self) -> bool:
        return self.netns in list_netns() and ip_cmd("link", "show", self.veth, check=False).returncode == 0


def list_netns(prefix: str = NETNS_PREFIX) -> list[str]:
    result = ip_cmd("netns", "list", check=False)
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def netns_pids(netns: str) -> list[int]:
    result = ip_cmd("netns", "pids", netns, check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def agent_veths() -> list[str]:
    """Host interfaces the node agent created (by alias), whatever state file says."""
    result = ip_cmd("-o", "link", "show", check=False)
    found = []
    for line in result.stdout.splitlines():
        match = re.match(r"\d+: ([^:@]+)[@:]", line)
        if match and f"alias {ALIAS_PREFIX}" in line:
            found.append(match.group(1))
    return found
