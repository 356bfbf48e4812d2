"""What a container runs: the image table, the command line and the environment, resolved as a kubelet does.

There is no container runtime. An image is a known entry point on this machine (the runtime image runs
`.venv/bin/modeldeploy-runtime`); any other image cannot be "pulled". The image's own environment mirrors
runtime/Dockerfile, with /tmp standing for the pod's private directory (the `tmp` emptyDir in spirit).
"""

from __future__ import annotations

import base64
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from modeldeploy_testkit.kubeapi import KubeAPI

Manifest = dict[str, Any]

RUNTIME_IMAGE = "modeldeploy/runtime:0.1.0"
RUNTIME_IMAGE_PREFIX = "modeldeploy/runtime:"
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


class ConfigError(Exception):
    """The container cannot be configured (a missing Secret or key): waiting reason CreateContainerConfigError."""


@dataclass(frozen=True)
class Image:
    reference: str
    entrypoint: list[str]
    bin_dirs: list[Path]
    env: dict[str, str] = field(default_factory=dict)

    def environment(self, tmp: Path) -> dict[str, str]:
        return {key: value.replace("{tmp}", str(tmp)) for key, value in self.env.items()}

    def resolve(self, executable: str) -> str:
        """An executable of the image: a bare name found on its PATH, or an absolute path inside its bin dirs."""
        if "/" in executable:
            path = Path(executable)
            if path.is_absolute() and any(path.parent == d for d in self.bin_dirs) and path.exists():
                return str(path)
            raise ConfigError(f"executable {executable!r} is not part of image {self.reference}")
        found = shutil.which(executable, path=":".join(str(d) for d in self.bin_dirs))
        if not found:
            raise ConfigError(f'exec: "{executable}": executable file not found in $PATH')
        return found


def image_for(reference: str) -> Image | None:
    """The image table: the model-server runtime under any tag; None for an image this node cannot pull."""
    if reference == RUNTIME_IMAGE or reference.startswith(RUNTIME_IMAGE_PREFIX):
        return Image(
            reference=reference,
            entrypoint=[str(VENV_BIN / "modeldeploy-runtime")],
            bin_dirs=[VENV_BIN, *(Path(p) for p in SYSTEM_PATH.split(":"))],
            env={
                "PATH": f"{VENV_BIN}:{SYSTEM_PATH}",
                "HOME": "{tmp}",
                "TMPDIR": "{tmp}",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                "MODEL_CACHE_DIR": "{tmp}/modeldeploy-models",
                "PROMETHEUS_MULTIPROC_DIR": "{tmp}/modeldeploy-metrics",
            },
        )
    return None


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes variable references: $(NAME) from env when defined (else kept), $$ for a literal $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def command_line(image: Image, container: Manifest, env: dict[str, str]) -> list[str]:
    """ENTRYPOINT/CMD semantics: `command` replaces the image's entry point, `args` follow either."""
    args = [expand(str(a), env) for a in container.get("args") or []]
    command = [expand(str(c), env) for c in container.get("command") or []]
    if command:
        return [image.resolve(command[0]), *command[1:], *args]
    return [*image.entrypoint, *args]


_UNITS = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def quantity(text: str) -> Decimal:
    match = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)", str(text).strip())
    if not match or match.group(2) not in _UNITS:
        raise ConfigError(f"cannot parse quantity {text!r}")
    return Decimal(match.group(1)) * _UNITS[match.group(2)]


class EnvResolver:
    """Resolves a container's env and envFrom against the API (Secrets, ConfigMaps) and the pod's own fields."""

    def __init__(self, api: KubeAPI, node_allocatable: dict[str, str]) -> None:
        self.api = api
        self.node_allocatable = node_allocatable

    def _object(self, kind: str, namespace: str, name: str) -> Manifest | None:
        return self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")

    def _map(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        body = self._object(kind, namespace, name)
        if body is None:
            return None
        data: dict[str, str] = {}
        if kind == "secrets":
            for key, value in (body.get("data") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
        else:
            data.update(body.get("data") or {})
            for key, value in (body.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
        return data

    def _key_ref(self, kind: str, ref: Manifest, namespace: str) -> str | None:
        label = "secret" if kind == "secrets" else "configmap"
        data = self._map(kind, namespace, str(ref.get("name", "")))
        if data is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f'{label} "{ref.get("name")}" not found')
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {label.capitalize()} {namespace}/{ref.get('name')}")
        return data[ref["key"]]

    def _field(self, path: str, pod: Manifest) -> str:
        metadata = pod["metadata"]
        status = pod.get("status") or {}
        simple = {
            "metadata.name": metadata.get("name", ""),
            "metadata.namespace": metadata.get("namespace", ""),
            "metadata.uid": metadata.get("uid", ""),
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": status.get("hostIP", ""),
            "status.podIP": status.get("podIP", ""),
            "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
            "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
        }
        if path in simple:
            return str(simple[path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
        raise ConfigError(f"unsupported fieldRef {path!r}")

    def _resource(self, ref: Manifest, pod: Manifest, default_container: str) -> str:
        name = ref.get("containerName") or default_container
        container = next(c for c in pod["spec"]["containers"] if c["name"] == name)
        kind, _, resource = str(ref["resource"]).partition(".")
        amounts = (container.get("resources") or {}).get(kind) or {}
        raw = amounts.get(resource)
        if raw is None and kind == "requests":
            raw = ((container.get("resources") or {}).get("limits") or {}).get(resource)
        if raw is None:
            raw = self.node_allocatable.get(resource, "0")
        divisor = quantity(str(ref.get("divisor") or "1"))
        return str(math.ceil(quantity(str(raw)) / divisor))

    def resolve(self, pod: Manifest, container: Manifest, base: dict[str, str]) -> dict[str, str]:
        """base (the image's env) overlaid by envFrom, then env in order; values may refer to earlier ones."""
        namespace = pod["metadata"]["namespace"]
        env = dict(base)
        for source in container.get("envFrom") or []:
            prefix = str(source.get("prefix") or "")
            if "configMapRef" in source:
                kind, ref = "configmaps", source.get("configMapRef")
            else:
                kind, ref = "secrets", source.get("secretRef")
            data = self._map(kind, namespace, str((ref or {}).get("name", "")))
            if data is None:
                if (ref or {}).get("optional"):
                    continue
                label = "secret" if kind == "secrets" else "configmap"
                raise ConfigError(f'{label} "{(ref or {}).get("name")}" not found')
            for key, text in data.items():
                if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", key):
                    env[prefix + key] = text
        for var in container.get("env") or []:
            name = str(var["name"])
            if "valueFrom" not in var:
                env[name] = expand(str(var.get("value", "")), env)
                continue
            source = var["valueFrom"]
            value: str | None
            if "fieldRef" in source:
                value = self._field(str(source["fieldRef"]["fieldPath"]), pod)
            elif "secretKeyRef" in source:
                value = self._key_ref("secrets", source["secretKeyRef"], namespace)
            elif "configMapKeyRef" in source:
                value = self._key_ref("configmaps", source["configMapKeyRef"], namespace)
            elif "resourceFieldRef" in source:
                value = self._resource(source["resourceFieldRef"], pod, str(container["name"]))
            else:
                raise ConfigError(f"unsupported valueFrom for {name}: {sorted(source)}")
            if value is not None:
                env[name] = value
        return env
