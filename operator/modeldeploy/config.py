"""Operator configuration, read once at start from the environment (the Helm chart and manifests set it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from modeldeploy.api.models import ModelFormat

FIELD_MANAGER = "modeldeploy"
DEFAULT_RUNTIME_IMAGE = "modeldeploy/runtime:0.1.0"


def _default_images() -> dict[str, str]:
    return {fmt.value: DEFAULT_RUNTIME_IMAGE for fmt in ModelFormat}


@dataclass(frozen=True)
class OperatorConfig:
    """Settings that are the operator's, not any one resource's."""

    runtime_images: Mapping[str, str] = field(default_factory=_default_images)
    """Default model-server image per model format, for specs that leave spec.runtime.image empty."""
    history_limit: int = 10
    """How many revisions status.history keeps."""
    retained_revisions: int = 3
    """Recent revisions, the serving one included, whose Deployments are kept (the old ones scaled to zero) for a
    fast return; older ones are deleted. Revisions inside spec.rollout.rollbackWindow are kept too."""
    workers: int = 4
    """Reconciles that run at once (each in a thread: the API client in kube/client.py is synchronous)."""
    cluster_domain: str = "cluster.local"
    prometheus_url: str = ""
    """Prometheus for canary analysis, when a spec names none."""
    prometheus_timeout: float = 10.0
    """Seconds one measurement round of one resource may wait for Prometheus, all its metrics together."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """MODELDEPLOY_RUNTIME_IMAGE sets every format's image; MODELDEPLOY_RUNTIME_IMAGE_<FORMAT> one format's."""
        env = os.environ if env is None else env
        base = env.get("MODELDEPLOY_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE)
        images = {fmt.value: env.get(f"MODELDEPLOY_RUNTIME_IMAGE_{fmt.value.upper()}", base) for fmt in ModelFormat}
        return cls(
            runtime_images=images,
            history_limit=int(env.get("MODELDEPLOY_HISTORY_LIMIT", "10")),
            retained_revisions=int(env.get("MODELDEPLOY_RETAINED_REVISIONS", "3")),
            workers=int(env.get("MODELDEPLOY_WORKERS", "4")),
            cluster_domain=env.get("MODELDEPLOY_CLUSTER_DOMAIN", "cluster.local"),
            prometheus_url=env.get("MODELDEPLOY_PROMETHEUS_URL", ""),
            prometheus_timeout=float(env.get("MODELDEPLOY_PROMETHEUS_TIMEOUT_SECONDS", "10")),
        )
