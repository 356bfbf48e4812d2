"""The largest ModelDeployment the CRD's bounds allow, valid for Kubernetes and schedulable on one prepared node.

Every list holds its maxItems, every map its maxProperties and every string its maxLength (map keys, which the
schema cannot bound, are the longest Kubernetes accepts for them). The unit tests check that it saturates the
bounds and fits what the API server stores in one object; the end-to-end tests apply it and see it go Ready.

Going Ready takes a node made for it: one carrying the labels the node selector, the node affinity and the
topology keys ask for, the extended resources the pods request and a taint only these pods tolerate; a pod that
the pod-affinity terms find (`NEIGHBOUR_LABELS`, on that node); and namespace labels the namespace selectors ask
for. The anti-affinity terms select labels no pod has.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import models as api

READY_IMAGE = "modeldeploy.test/model-server:latest"
NODE_NAME = "largest-spec-node"


def _padded(head: str, length: int, fill: str) -> str:
    return head + fill * (length - len(head))


def subdomain(tag: str, length: int = api.DNS_SUBDOMAIN_LENGTH) -> str:
    """A DNS subdomain of exactly `length` characters, unique by `tag` (lowercase letters, digits and '-')."""
    labels = [_padded(tag + "-", 63, "a")]
    while sum(map(len, labels)) + len(labels) - 1 < length:
        room = length - (sum(map(len, labels)) + len(labels))
        labels.append("b" * min(63, room))
    name = ".".join(labels)
    assert len(name) == length, (name, length)
    return name


def label_key(tag: str) -> str:
    """The longest label key: a 253-character prefix, '/', a 63-character name."""
    key = subdomain(tag) + "/" + _padded("n" + tag, 63, "x")
    assert len(key) == api.QUALIFIED_NAME_LENGTH
    return key


def label_value(tag: str) -> str:
    return _padded("v" + tag, 63, "v")


def dns_label(tag: str) -> str:
    return _padded(tag + "-", 63, "q")


def quantity(amount: str) -> str:
    """`amount` with leading zeros up to the longest quantity (Kubernetes stores the canonical form)."""
    return amount.rjust(api.QUANTITY_LENGTH, "0")


def labels(tag: str, count: int) -> dict[str, str]:
    return {label_key(f"{tag}{index}"): label_value(f"{tag}{index}") for index in range(count)}


NODE_SELECTOR = labels("ns", api.MAX_NODE_SELECTOR)
TOPOLOGY_KEY = label_key("tk")
TOPOLOGY_VALUE = label_value("tk")
NEIGHBOUR_LABELS = labels("pa", api.MAX_MATCH_LABELS)
NAMESPACE_LABELS = labels("nl", api.MAX_MATCH_LABELS)
TAINT = {"key": label_key("tt0"), "value": label_value("tt0"), "effect": "NoSchedule"}
# Extended resources: "requests." + the name must still be a qualified name, so their prefix is 244 characters.
EXTENDED_RESOURCES = [
    subdomain(f"r{index}", api.DNS_SUBDOMAIN_LENGTH - len("requests.")) + "/" + _padded(f"n{index}", 63, "x")
    for index in range(api.MAX_RESOURCES - 3)
]
NODE_LABELS = {**NODE_SELECTOR, TOPOLOGY_KEY: TOPOLOGY_VALUE}


def node_manifest() -> dict[str, Any]:
    """The fake node (kwok) the largest spec's pods can run on."""
    capacity = {"cpu": "64", "memory": "256Gi", "ephemeral-storage": "1Ti", "pods": "110"}
    capacity.update(dict.fromkeys(EXTENDED_RESOURCES, "10"))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", **NODE_LABELS},
        },
        "spec": {"taints": [TAINT]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def neighbour_pod(name: str = "neighbour") -> dict[str, Any]:
    """The pod the pod-affinity terms select, placed on the node directly."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": NEIGHBOUR_LABELS},
        "spec": {
            "nodeName": NODE_NAME,
            "tolerations": [{**TAINT, "operator": "Equal"}],
            "containers": [{"name": "main", "image": READY_IMAGE}],
        },
    }


def _node_term(tag: str) -> dict[str, Any]:
    # NotIn on labels no node has: every node matches, the node's own name is never one of the values.
    return {
        "matchExpressions": [
            {
                "key": label_key(f"{tag}e{index}"),
                "operator": "NotIn",
                "values": [label_value(f"{tag}{index}{value}") for value in range(api.MAX_NODE_SELECTOR_VALUES)],
            }
            for index in range(api.MAX_NODE_REQUIREMENTS)
        ],
        "matchFields": [
            {"key": "metadata.name", "operator": "NotIn", "values": [subdomain(f"{tag}f{index}")]}
            for index in range(api.MAX_FIELD_REQUIREMENTS)
        ],
    }


def _selector(match_labels: dict[str, str], tag: str) -> dict[str, Any]:
    return {
        "matchLabels": match_labels,
        "matchExpressions": [
            {
                "key": label_key(f"{tag}x{index}"),
                "operator": "NotIn",
                "values": [label_value(f"{tag}{index}{value}") for value in range(api.MAX_SELECTOR_VALUES)],
            }
            for index in range(api.MAX_MATCH_EXPRESSIONS)
        ],
    }


def _pod_term(match_labels: dict[str, str], tag: str) -> dict[str, Any]:
    return {
        "labelSelector": _selector(match_labels, tag),
        # The namespaces listed do not exist; the selector finds the test's own, labelled NAMESPACE_LABELS.
        "namespaceSelector": _selector(NAMESPACE_LABELS, f"{tag}n"),
        "namespaces": [dns_label(f"{tag}{index}") for index in range(api.MAX_NAMESPACES)],
        "topologyKey": TOPOLOGY_KEY,
        # Keys the pods do not carry: the API server adds nothing for them.
        "matchLabelKeys": [label_key(f"{tag}m{index}") for index in range(api.MAX_LABEL_KEYS)],
        "mismatchLabelKeys": [label_key(f"{tag}u{index}") for index in range(api.MAX_LABEL_KEYS)],
    }


def _pod_affinity(match_labels: dict[str, str], tag: str) -> dict[str, Any]:
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            _pod_term(match_labels, f"{tag}r{index}") for index in range(api.MAX_POD_AFFINITY_TERMS)
        ],
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": _pod_term(match_labels, f"{tag}p{index}")}
            for index in range(api.MAX_POD_AFFINITY_TERMS)
        ],
    }


def _affinity() -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [_node_term(f"nr{index}") for index in range(api.MAX_NODE_SELECTOR_TERMS)]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": _node_term(f"np{index}")} for index in range(api.MAX_PREFERRED_NODE_TERMS)
            ],
        },
        "podAffinity": _pod_affinity(NEIGHBOUR_LABELS, "pa"),
        # Labels no pod has: the anti-affinity keeps the pods away from nothing.
        "podAntiAffinity": _pod_affinity(labels("aa", api.MAX_MATCH_LABELS), "aa"),
    }


def _tolerations() -> list[dict[str, Any]]:
    tolerations: list[dict[str, Any]] = [{**TAINT, "operator": "Equal"}]
    for index in range(1, api.MAX_TOLERATIONS):
        tolerations.append(
            {
                "key": label_key(f"tt{index}"),
                "operator": "Equal",
                "value": label_value(f"tt{index}"),
                "effect": "NoExecute",
                "tolerationSeconds": 3600,
            }
        )
    return tolerations


def _env() -> list[dict[str, Any]]:
    def name(index: int) -> str:
        return _padded(f"E{index:03d}_", 256, "X")

    sources: list[dict[str, Any]] = [
        {"secretKeyRef": {"name": subdomain("secret"), "key": "k" * 253, "optional": True}},
        {"configMapKeyRef": {"name": subdomain("config"), "key": "c" * 253, "optional": True}},
        {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{label_key('fa')}']"}},
        {"resourceFieldRef": {"containerName": "model-server", "resource": "limits.memory", "divisor": "1Mi"}},
    ]
    env = [{"name": name(index), "valueFrom": source} for index, source in enumerate(sources)]
    env += [{"name": name(index), "value": "v" * api.ENV_VALUE_LENGTH} for index in range(len(sources), 128)]
    return env


def _resources() -> dict[str, Any]:
    requests = {"cpu": quantity("1"), "memory": quantity("1Gi"), "ephemeral-storage": quantity("1Gi")}
    limits = {"cpu": quantity("2"), "memory": quantity("2Gi"), "ephemeral-storage": quantity("2Gi")}
    # Extended resources cannot be overcommitted: requests equal limits.
    for resource in EXTENDED_RESOURCES:
        requests[resource] = limits[resource] = quantity("1")
    return {"requests": requests, "limits": limits}


def _analysis() -> dict[str, Any]:
    query = 'sum(rate(approvals_total{namespace="{{ .namespace }}", version="{{ .canary.version }}"}[{{ .window }}]))'
    query += " + 0" * ((4096 - len(query)) // 4)
    query = query.ljust(4096)
    condition = "result >= 0" + " and result >= 0" * ((256 - 11) // 16)
    metrics: list[dict[str, Any]] = [
        {"name": dns_label("success"), "builtin": "successRate", "min": 0.99, "relativeTo": "stable"},
        {"name": dns_label("latency"), "builtin": "latencyP99", "max": 0.05, "relativeTo": "stable"},
        {"name": dns_label("shift"), "builtin": "predictionShift", "max": 0.1},
    ]
    metrics += [
        {
            "name": dns_label(f"query{index}"),
            "query": query,
            "successCondition": condition.ljust(256),
            "failureCondition": condition.replace(">=", "<").ljust(256),
        }
        for index in range(10 - len(metrics))
    ]
    return {
        "interval": "999999s",
        "initialDelay": "999999s",
        "window": "999999s",
        "failureLimit": 100,
        "inconclusiveLimit": 100,
        "consecutiveErrorLimit": 100,
        "prometheus": {"address": _padded("http://127.0.0.1:9090/", 512, "p")},
        "metrics": metrics,
    }


def largest_manifest(name: str = "m" * api.MAX_NAME_LENGTH) -> dict[str, Any]:
    """The ModelDeployment: one replica, so the cluster holds the spec a few times, not a thousand."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": dns_label("model"),
                "version": label_value("1"),
                "uri": _padded("https://models.example.com/", 2048, "u"),
                "format": "onnx",
                "sha256": "0" * 64,
                "httpHeadersSecret": subdomain("headers"),
            },
            "runtime": {
                "image": _padded(READY_IMAGE.replace(":latest", "") + "-", 512 - len(":latest"), "i") + ":latest",
                "protocol": "v2",
                "port": 8080,
                "metricsPort": 8081,
                # 10^15 bytes: the longest size that still fits the 64-bit numbers Kubernetes keeps sizes in.
                "cacheSizeLimit": "1" + "0" * 15,
                "args": ["--x=" + "a" * 4092] * 64,
                "env": _env(),
                "resources": _resources(),
                "nodeSelector": NODE_SELECTOR,
                "tolerations": _tolerations(),
                "affinity": _affinity(),
            },
            "replicas": 1,
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 100}, {"pause": {"duration": "999999h"}}] * 10,
                "paused": False,
                "progressDeadlineSeconds": 86400,
                "rollbackWindow": 10,
                "analysis": _analysis(),
            },
            "service": {"port": 8000},
        },
    }
