"""A canary's smoke round, for the pass in which rollout.smoke.smoke_due() says it is due: the addresses of the
revision's Ready pods (a list of pods by label, never a watch), the requests (analysis.smoke_client), and the
verdicts as the SmokeRound the planner judges.

A pod is asked only when it is Ready, not being deleted, and has an IP; its port is spec.runtime.port, which the
pod template exposes. Pods are untrusted too: what they answer is judged by analysis.smoke, never believed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from modeldeploy.analysis import smoke, smoke_client
from modeldeploy.api import models as api
from modeldeploy.children import builders
from modeldeploy.kube.client import ApiError, permanent, status_message

log = logging.getLogger(__name__)

DENIED = frozenset({401, 403})
"""Answers to the pod list that no retry changes (an operator installed without the pods rule): the round fails."""


class SmokeReader(Protocol):
    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def revision_selector(resource: api.ModelDeployment, revision: str) -> str:
    labels = {**builders.selector_labels(resource), builders.LABEL_REVISION: revision}
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def ready_addresses(pods: Iterable[dict[str, Any]], port: int) -> list[smoke_client.PodAddress]:
    addresses = []
    for pod in pods:
        metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
        name, ip = metadata.get("name"), status.get("podIP")
        if not isinstance(name, str) or not isinstance(ip, str) or not ip or metadata.get("deletionTimestamp"):
            continue
        conditions = status.get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions if isinstance(c, dict)):
            addresses.append(smoke_client.PodAddress(name, ip, port))
    return sorted(addresses, key=lambda address: address.pod)


def run_smoke_round(
    reader: SmokeReader, resource: api.ModelDeployment, model: str, canary: str, stable: str
) -> smoke.SmokeRound:
    spec = resource.spec.rollout.smokeTest
    assert spec is not None, "a smoke round is run only for a resource that asks for one"
    namespace = resource.metadata["namespace"]
    port = resource.spec.runtime.port
    try:
        if spec.casesFrom is not None:
            spec = _with_configmap_cases(reader, namespace, spec, spec.casesFrom)
        targets = ready_addresses(reader.list_pods(namespace, revision_selector(resource, canary)), port)
        reference = None
        if spec.compareTo == api.CompareTo.STABLE:
            stable_pods = ready_addresses(reader.list_pods(namespace, revision_selector(resource, stable)), port)
            reference = stable_pods[0] if stable_pods else None
    except smoke.CasesError as error:
        return smoke.SmokeRound(canary, (), (), str(error))
    except ApiError as error:
        if not (permanent(error) or error.status in DENIED):
            raise  # the queue tries the pass again
        # Refused for good (no RBAC for pods, say): the smoke test cannot run, and one that cannot run fails.
        why = f"the canary's pods could not be listed: {error.status} {status_message(error.body)}"
        return smoke.SmokeRound(canary, (), (), why)
    targets = targets[: smoke_client.MAX_PODS]
    verdicts = smoke_client.run_round(spec, resource.spec.runtime.protocol, model, targets, reference)
    judged = smoke.round_of(canary, [target.pod for target in targets], verdicts, spec)
    log.info(
        'Judged smoke test namespace="%s" name="%s" revision="%s" pods=%d requests=%d failures=%d',
        namespace,
        resource.metadata.get("name"),
        canary,
        len(targets),
        len(verdicts),
        sum(not verdict.passed for verdict in verdicts),
    )
    return judged


def _with_configmap_cases(
    reader: SmokeReader, namespace: str, spec: api.SmokeTestSpec, source: api.SmokeCasesConfigMap
) -> api.SmokeTestSpec:
    """The spec with the cases its ConfigMap holds; CasesError when they cannot be had."""
    where = f"ConfigMap {source.name} key {source.key}"
    try:
        configmap = reader.get_configmap(namespace, source.name)
    except ApiError as error:
        if not (permanent(error) or error.status in DENIED):
            raise
        raise smoke.CasesError(f"{where} could not be read: {error.status} {status_message(error.body)}") from None
    if configmap is None:
        raise smoke.CasesError(f"{where}: no such ConfigMap")
    text = (configmap.get("data") or {}).get(source.key)
    if not isinstance(text, str):
        raise smoke.CasesError(f"{where}: no such key in the ConfigMap's data")
    return smoke.with_cases_from(spec, text, where)
