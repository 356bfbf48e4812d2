"""builders: spec -> revision and child manifests, checked against the serving-container contract."""

from __future__ import annotations

import re
from typing import Any

import pytest

from modeldeploy.api import models as api
from modeldeploy.children import builders
from modeldeploy.config import OperatorConfig

from .conftest import FORMAT_IMAGES, NAME, NAMESPACE, UID, ResourceFactory

SHA = "a" * 64


def container_of(template: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = template["spec"]["containers"]
    [container] = containers
    assert container["name"] == builders.CONTAINER_NAME
    return container


def env_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    env = container_of(template)["env"]
    names = [var["name"] for var in env]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {var["name"]: var for var in env}


# ---------------------------------------------------------------------------------------------------------------
# Revision


def test_revision_is_stable_for_the_same_spec(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    first = builders.revision_of(make_resource(), config)
    second = builders.revision_of(make_resource(), config)
    assert first == second


def test_revision_ignores_dict_ordering(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    ordered = {
        "model": {"version": "2.0", "uri": "s3://b/k", "format": "onnx", "sha256": SHA},
        "runtime": {
            "image": "img:1",
            "protocol": "v2",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "256Mi"}},
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        },
        "replicas": 2,
    }
    reordered = {
        "replicas": 2,
        "runtime": {
            "env": [{"valueFrom": {"secretKeyRef": {"key": "k", "name": "s"}}, "name": "A"}],
            "resources": {"requests": {"memory": "256Mi", "cpu": "100m"}, "limits": {"memory": "1Gi", "cpu": "1"}},
            "protocol": "v2",
            "image": "img:1",
        },
        "model": {"sha256": SHA, "format": "onnx", "uri": "s3://b/k", "version": "2.0"},
    }
    assert builders.revision_of(make_resource(ordered), config) == builders.revision_of(
        make_resource(reordered), config
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"model": {"version": "1.5.0"}}, id="version"),
        pytest.param({"model": {"uri": "s3://models/fraud-detector/1.5.0/model.joblib"}}, id="uri"),
        pytest.param({"model": {"format": "xgboost"}}, id="format"),
        pytest.param({"model": {"sha256": SHA}}, id="sha256"),
        pytest.param({"model": {"name": "fraud"}}, id="model-name"),
        pytest.param({"runtime": {"image": "registry.example/custom:2"}}, id="image"),
        pytest.param({"runtime": {"protocol": "v2"}}, id="protocol"),
        pytest.param({"runtime": {"port": 9001}}, id="port"),
        pytest.param({"runtime": {"metricsPort": 6001}}, id="metrics-port"),
        pytest.param({"runtime": {"args": ["--workers=2"]}}, id="args"),
        pytest.param({"runtime": {"env": [{"name": "LOG_LEVEL", "value": "debug"}]}}, id="env"),
        pytest.param({"runtime": {"resources": {"limits": {"memory": "1Gi"}}}}, id="resources"),
    ],
)
def test_revision_changes_with_what_defines_the_pods(
    make_resource: ResourceFactory, config: OperatorConfig, change: dict[str, Any]
) -> None:
    assert builders.revision_of(make_resource(change), config) != builders.revision_of(make_resource(), config)


@pytest.mark.parametrize(
    ("change", "metadata"),
    [
        pytest.param({"replicas": 7}, {}, id="replicas"),
        pytest.param({"replicas": 0}, {}, id="replicas-zero"),
        pytest.param({"service": {"port": 8080}}, {}, id="service-port"),
        pytest.param({"rollout": {"progressDeadlineSeconds": 30}}, {}, id="progress-deadline"),
        pytest.param({}, {"generation": 9}, id="generation"),
        pytest.param({}, {"uid": "another-uid"}, id="uid"),
        pytest.param({}, {"namespace": "elsewhere"}, id="namespace"),
    ],
)
def test_revision_ignores_what_does_not_define_the_pods(
    make_resource: ResourceFactory, config: OperatorConfig, change: dict[str, Any], metadata: dict[str, Any]
) -> None:
    assert builders.revision_of(make_resource(change, **metadata), config) == builders.revision_of(
        make_resource(), config
    )


def test_revision_follows_the_default_image_of_the_configuration(make_resource: ResourceFactory) -> None:
    resource = make_resource()
    old = OperatorConfig(runtime_images={**FORMAT_IMAGES, "sklearn": "runtime:1"})
    new = OperatorConfig(runtime_images={**FORMAT_IMAGES, "sklearn": "runtime:2"})
    assert builders.revision_of(resource, old) != builders.revision_of(resource, new)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"model": {"version": "9.9.9-rc.1", "format": "onnx"}},
        {"runtime": {"protocol": "v2", "args": ["--x"]}},
        {"model": {"uri": "pvc://claim/path/model.onnx"}},
    ],
)
def test_revision_shape(make_resource: ResourceFactory, config: OperatorConfig, spec: dict[str, Any]) -> None:
    revision = builders.revision_of(make_resource(spec), config)
    assert len(revision) == api.REVISION_LENGTH == 10
    assert revision[0].isalpha()
    assert re.fullmatch(api.DNS_LABEL_PATTERN, revision)
    assert re.fullmatch(api.LABEL_VALUE_PATTERN, revision)


def test_names_are_name_dash_revision_and_fit_a_dns_label(
    make_resource: ResourceFactory, config: OperatorConfig
) -> None:
    longest = "m" * api.MAX_NAME_LENGTH
    resource = make_resource(name=longest)
    revision = builders.revision_of(resource, config)
    name = builders.deployment_name(resource, revision)
    assert name == f"{longest}-{revision}"
    assert len(name) == 63
    assert re.fullmatch(api.DNS_LABEL_PATTERN, name)
    deployment = builders.build_deployment(resource, revision, 1, config)
    assert deployment["metadata"]["name"] == name


# ---------------------------------------------------------------------------------------------------------------
# Pod template: the serving-container contract


def test_contract_env(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource({"model": {"format": "onnx", "sha256": SHA}})
    env = env_of(builders.build_pod_template(resource, config))
    assert env["MODEL_NAME"] == {"name": "MODEL_NAME", "value": NAME}
    assert env["MODEL_VERSION"] == {"name": "MODEL_VERSION", "value": "1.4.0"}
    assert env["MODEL_URI"] == {"name": "MODEL_URI", "value": "s3://models/fraud-detector/1.4.0/model.joblib"}
    assert env["MODEL_FORMAT"] == {"name": "MODEL_FORMAT", "value": "onnx"}
    assert env["MODEL_SHA256"] == {"name": "MODEL_SHA256", "value": SHA}


def test_model_name_from_spec_wins_over_metadata_name(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource({"model": {"name": "fraud"}})
    template = builders.build_pod_template(resource, config)
    assert env_of(template)["MODEL_NAME"]["value"] == "fraud"
    assert template["metadata"]["labels"][builders.LABEL_NAME] == "fraud"
    assert template["metadata"]["labels"][builders.LABEL_INSTANCE] == NAME


def test_empty_sha256_has_no_value(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    env = env_of(builders.build_pod_template(make_resource(), config))
    assert env["MODEL_SHA256"] == {"name": "MODEL_SHA256"}


def test_user_env_follows_the_contract_env(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    secret = {"secretKeyRef": {"name": "model-store", "key": "access-key-id"}}
    resource = make_resource(
        {"runtime": {"env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "AWS_KEY", "valueFrom": secret}]}}
    )
    env = container_of(builders.build_pod_template(resource, config))["env"]
    assert [var["name"] for var in env[: len(api.CONTRACT_ENV)]] == list(api.CONTRACT_ENV)
    assert env[-2:] == [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "AWS_KEY", "valueFrom": secret}]


@pytest.mark.parametrize(("port", "metrics_port"), [(9000, 6000), (8080, 8081), (65535, 1024)])
def test_ports_are_named_http_and_metrics(
    make_resource: ResourceFactory, config: OperatorConfig, port: int, metrics_port: int
) -> None:
    resource = make_resource({"runtime": {"port": port, "metricsPort": metrics_port}})
    container = container_of(builders.build_pod_template(resource, config))
    assert container["ports"] == [
        {"name": "http", "containerPort": port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"},
    ]


@pytest.mark.parametrize(
    ("protocol", "readiness", "liveness"),
    [
        ("seldon", "/health/status", "/health/ping"),
        ("v2", "/v2/health/ready", "/v2/health/live"),
    ],
)
def test_probe_paths_follow_the_protocol(
    make_resource: ResourceFactory, config: OperatorConfig, protocol: str, readiness: str, liveness: str
) -> None:
    container = container_of(builders.build_pod_template(make_resource({"runtime": {"protocol": protocol}}), config))
    assert container["readinessProbe"]["httpGet"] == {"path": readiness, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": liveness, "port": "http"}


def test_default_protocol_is_seldon(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    container = container_of(builders.build_pod_template(make_resource(), config))
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/status"


def test_restricted_security_context(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    template = builders.build_pod_template(make_resource(), config)
    pod = template["spec"]
    container = container_of(template)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    # A read-only root needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}} in pod["volumes"]


# ---------------------------------------------------------------------------------------------------------------
# Pod template: graceful shutdown (preStop delay, the runtime's drain, the grace period that covers both)


def test_pods_keep_serving_while_their_endpoint_goes_then_drain(
    make_resource: ResourceFactory, config: OperatorConfig
) -> None:
    template = builders.build_pod_template(make_resource(), config)
    container = container_of(template)
    env = env_of(template)
    # The kubelet's own sleep (nothing needed in the image), then SIGTERM; the runtime drains for 5 s and has
    # 30 - 5 - 2 = 23 s in all before it must have exited, 2 s ahead of the kubelet's SIGKILL.
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert template["spec"]["terminationGracePeriodSeconds"] == 30
    assert env["MODEL_DRAIN_SECONDS"] == {"name": "MODEL_DRAIN_SECONDS", "value": "5"}
    assert env["MODEL_SHUTDOWN_TIMEOUT_SECONDS"] == {"name": "MODEL_SHUTDOWN_TIMEOUT_SECONDS", "value": "23"}


@pytest.mark.parametrize(
    ("prestop", "drain", "grace", "lifecycle", "timeout"),
    [
        pytest.param(5, 5, 30, {"preStop": {"sleep": {"seconds": 5}}}, 23, id="defaults"),
        pytest.param(15, 10, 60, {"preStop": {"sleep": {"seconds": 15}}}, 43, id="slow-proxies"),
        pytest.param(0, 10, 30, None, 28, id="no-prestop-the-runtime-waits"),
        pytest.param(1, 0, 4, {"preStop": {"sleep": {"seconds": 1}}}, 1, id="tightest"),
    ],
)
def test_shutdown_follows_the_operator_settings(
    make_resource: ResourceFactory,
    prestop: int,
    drain: int,
    grace: int,
    lifecycle: dict[str, Any] | None,
    timeout: int,
) -> None:
    config = OperatorConfig(
        runtime_images=FORMAT_IMAGES,
        prestop_delay_seconds=prestop,
        drain_seconds=drain,
        termination_grace_period_seconds=grace,
    )
    template = builders.build_pod_template(make_resource(), config)
    env = env_of(template)
    assert container_of(template).get("lifecycle") == lifecycle
    assert template["spec"]["terminationGracePeriodSeconds"] == grace
    assert env["MODEL_DRAIN_SECONDS"]["value"] == str(drain)
    assert env["MODEL_SHUTDOWN_TIMEOUT_SECONDS"]["value"] == str(timeout)
    # Everything fits in the grace period, with the exit margin to spare before SIGKILL.
    assert prestop + timeout + 2 == grace
    assert drain < timeout


def test_a_models_own_shutdown_env_wins(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource(
        {
            "runtime": {
                "env": [
                    {"name": "MODEL_DRAIN_SECONDS", "value": "1"},
                    {"name": "MODEL_SHUTDOWN_TIMEOUT_SECONDS", "value": "10"},
                ]
            }
        }
    )
    env = env_of(builders.build_pod_template(resource, config))  # also checks that no name appears twice
    assert env["MODEL_DRAIN_SECONDS"]["value"] == "1"
    assert env["MODEL_SHUTDOWN_TIMEOUT_SECONDS"]["value"] == "10"


def test_revision_follows_the_shutdown_settings(make_resource: ResourceFactory) -> None:
    resource = make_resource()
    base = OperatorConfig(runtime_images=FORMAT_IMAGES)
    for changed in (
        OperatorConfig(runtime_images=FORMAT_IMAGES, prestop_delay_seconds=10),
        OperatorConfig(runtime_images=FORMAT_IMAGES, drain_seconds=2),
        OperatorConfig(runtime_images=FORMAT_IMAGES, termination_grace_period_seconds=60),
    ):
        assert builders.revision_of(resource, changed) != builders.revision_of(resource, base)


def test_prestop_hook_passes_pod_security(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    """Pod Security (baseline, so restricted too) refuses a `host` in probes and lifecycle handlers since 1.34; the
    sleep action has none, and needs no shell or binary in the read-only image."""
    container = container_of(builders.build_pod_template(make_resource(), config))
    pre_stop = container["lifecycle"]["preStop"]
    assert list(pre_stop) == ["sleep"]
    assert set(pre_stop["sleep"]) == {"seconds"}
    assert "postStart" not in container["lifecycle"]


@pytest.mark.parametrize(
    ("uri", "claim"),
    [
        ("pvc://model-store/fraud/1.4.0/model.joblib", "model-store"),
        ("pvc://shared/model.onnx", "shared"),
    ],
)
def test_pvc_uri_mounts_the_claim_read_only(
    make_resource: ResourceFactory, config: OperatorConfig, uri: str, claim: str
) -> None:
    template = builders.build_pod_template(make_resource({"model": {"uri": uri}}), config)
    container = container_of(template)
    assert {"name": "model-store", "mountPath": f"/mnt/models/{claim}", "readOnly": True} in container["volumeMounts"]
    assert {"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}} in template["spec"][
        "volumes"
    ]
    assert env_of(template)["MODEL_URI"]["value"] == uri


@pytest.mark.parametrize(
    "uri", ["s3://bucket/pvc://x", "file:///mnt/models/model.joblib", "https://host/pvc/model", "gs://b/k"]
)
def test_other_uris_mount_no_claim(make_resource: ResourceFactory, config: OperatorConfig, uri: str) -> None:
    template = builders.build_pod_template(make_resource({"model": {"uri": uri}}), config)
    assert [volume["name"] for volume in template["spec"]["volumes"]] == ["tmp"]
    assert [mount["name"] for mount in container_of(template)["volumeMounts"]] == ["tmp"]


@pytest.mark.parametrize("fmt", [fmt.value for fmt in api.ModelFormat])
def test_default_image_per_format(make_resource: ResourceFactory, config: OperatorConfig, fmt: str) -> None:
    container = container_of(builders.build_pod_template(make_resource({"model": {"format": fmt}}), config))
    assert container["image"] == FORMAT_IMAGES[fmt]


def test_spec_image_overrides_the_default(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource({"model": {"format": "onnx"}, "runtime": {"image": "registry.example/mine:3"}})
    assert container_of(builders.build_pod_template(resource, config))["image"] == "registry.example/mine:3"


def test_args_and_resources(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resources = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m"}}
    resource = make_resource({"runtime": {"args": ["--workers", "2"], "resources": resources}})
    container = container_of(builders.build_pod_template(resource, config))
    assert container["args"] == ["--workers", "2"]
    assert container["resources"] == resources
    plain = container_of(builders.build_pod_template(make_resource(), config))
    assert "args" not in plain
    assert plain["resources"] == {}


# ---------------------------------------------------------------------------------------------------------------
# Deployment


def test_deployment(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource({"replicas": 4, "rollout": {"progressDeadlineSeconds": 120}})
    revision = builders.revision_of(resource, config)
    deployment = builders.build_deployment(resource, revision, 4, config)
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["kind"] == "Deployment"
    metadata = deployment["metadata"]
    assert metadata["name"] == f"{NAME}-{revision}"
    assert metadata["namespace"] == NAMESPACE
    assert metadata["labels"] == {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/version": "1.4.0",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "modeldeploy",
        "app.kubernetes.io/part-of": "modeldeploy",
        "modeldeploy.io/revision": revision,
    }
    spec = deployment["spec"]
    assert spec["replicas"] == 4
    assert spec["progressDeadlineSeconds"] == 120
    assert spec["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/instance": NAME,
            "app.kubernetes.io/component": "model-server",
            "modeldeploy.io/revision": revision,
        }
    }
    pod_labels = spec["template"]["metadata"]["labels"]
    # The selector must select the template's own pods.
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[builders.LABEL_VERSION] == "1.4.0"


def test_deployment_replicas_is_the_argument(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource({"replicas": 4})
    revision = builders.revision_of(resource, config)
    assert builders.build_deployment(resource, revision, 0, config)["spec"]["replicas"] == 0


def test_deployment_template_is_the_hashed_template_plus_revision_label(
    make_resource: ResourceFactory, config: OperatorConfig
) -> None:
    resource = make_resource({"runtime": {"args": ["--x"]}})
    revision = builders.revision_of(resource, config)
    template = builders.build_deployment(resource, revision, 1, config)["spec"]["template"]
    hashed = builders.build_pod_template(resource, config)
    labels = dict(template["metadata"]["labels"])
    assert labels.pop(builders.LABEL_REVISION) == revision
    assert {**template, "metadata": {**template["metadata"], "labels": labels}} == hashed


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda resource, config: builders.build_deployment(resource, "rabc", 1, config), id="deployment"),
        pytest.param(lambda resource, config: builders.build_service(resource, "", None), id="service"),
        pytest.param(lambda resource, config: builders.build_service(resource, "canary", "rabc"), id="canary"),
    ],
)
def test_owner_reference_is_the_controller(make_resource: ResourceFactory, config: OperatorConfig, build: Any) -> None:
    manifest = build(make_resource(), config)
    assert manifest["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


# ---------------------------------------------------------------------------------------------------------------
# Services


def test_services(make_resource: ResourceFactory) -> None:
    resource = make_resource({"service": {"port": 8080}, "runtime": {"metricsPort": 6100}})
    services = {s["metadata"]["name"]: s for s in builders.build_services(resource, "rstable000", "rcanary000")}
    assert set(services) == {NAME, f"{NAME}-stable", f"{NAME}-canary"}
    base = {"app.kubernetes.io/instance": NAME, "app.kubernetes.io/component": "model-server"}
    assert services[NAME]["spec"]["selector"] == base
    assert services[f"{NAME}-stable"]["spec"]["selector"] == {**base, "modeldeploy.io/revision": "rstable000"}
    assert services[f"{NAME}-canary"]["spec"]["selector"] == {**base, "modeldeploy.io/revision": "rcanary000"}
    for service in services.values():
        assert service["kind"] == "Service"
        assert service["metadata"]["namespace"] == NAMESPACE
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
            {"name": "metrics", "port": 6100, "targetPort": "metrics", "protocol": "TCP"},
        ]
        assert builders.LABEL_REVISION not in service["metadata"]["labels"]
        assert service["metadata"]["labels"][builders.LABEL_MANAGED_BY] == "modeldeploy"


BASE_SELECTOR = {"app.kubernetes.io/instance": NAME, "app.kubernetes.io/component": "model-server"}
STABLE, CANARY = "rstable000", "rcanary000"


def selecting(revision: str | None) -> dict[str, str]:
    return BASE_SELECTOR if revision is None else {**BASE_SELECTOR, builders.LABEL_REVISION: revision}


@pytest.mark.parametrize(
    ("canary", "revision_services", "expected"),
    [
        pytest.param(None, False, {NAME: selecting(STABLE)}, id="at-rest"),
        pytest.param(
            CANARY,
            False,
            {NAME: selecting(None), f"{NAME}-stable": selecting(STABLE), f"{NAME}-canary": selecting(CANARY)},
            id="rolling-out",
        ),
        pytest.param(
            None,
            True,
            {NAME: selecting(STABLE), f"{NAME}-stable": selecting(STABLE), f"{NAME}-canary": selecting(STABLE)},
            id="at-rest-router-needs-revision-services",
        ),
        pytest.param(
            CANARY,
            True,
            # Behind a router the gateway splits: `<name>` keeps the serving revision, so a client that goes around
            # the gateway never reaches a canary that is only mirrored to.
            {NAME: selecting(STABLE), f"{NAME}-stable": selecting(STABLE), f"{NAME}-canary": selecting(CANARY)},
            id="rolling-out-router-needs-revision-services",
        ),
    ],
)
def test_desired_services(
    make_resource: ResourceFactory, canary: str | None, revision_services: bool, expected: dict[str, dict[str, str]]
) -> None:
    """`<name>` always, selecting the serving revision at rest and both revisions while one rolls out; `<name>-stable`
    and `<name>-canary` only while a canary rolls out or when the traffic router routes through them."""
    resource = make_resource()
    services = builders.build_services(resource, STABLE, canary, revision_services=revision_services)
    assert services[0]["metadata"]["name"] == NAME, "<name> first: it is applied before the others"
    assert {s["metadata"]["name"]: s["spec"]["selector"] for s in services} == expected


def test_revision_services_are_the_only_deletable_names(make_resource: ResourceFactory) -> None:
    resource = make_resource()
    assert builders.revision_service_names(resource) == (f"{NAME}-stable", f"{NAME}-canary")
    rolling = {s["metadata"]["name"] for s in builders.build_services(resource, STABLE, CANARY)}
    assert rolling - {NAME} == set(builders.revision_service_names(resource))


def test_service_selectors_match_the_deployment_pods(make_resource: ResourceFactory, config: OperatorConfig) -> None:
    resource = make_resource()
    revision = builders.revision_of(resource, config)
    pods = builders.build_deployment(resource, revision, 1, config)["spec"]["template"]["metadata"]["labels"]
    for canary in (None, "rother0000"):
        for service in builders.build_services(resource, revision, canary, revision_services=True):
            if not service["metadata"]["name"].endswith("-canary") or canary is None:
                assert service["spec"]["selector"].items() <= pods.items()
    other = builders.build_service(resource, "canary", "rother0000")
    assert not other["spec"]["selector"].items() <= pods.items()


def test_service_url(make_resource: ResourceFactory) -> None:
    resource = make_resource({"service": {"port": 8080}})
    config = OperatorConfig(runtime_images=FORMAT_IMAGES, cluster_domain="example.internal")
    assert builders.service_url(resource, config) == f"http://{NAME}.{NAMESPACE}.svc.example.internal:8080"


def test_scheduling_constraints_reach_the_pods_and_make_a_new_revision(
    make_resource: ResourceFactory, config: OperatorConfig
) -> None:
    plain = make_resource({})
    placed = make_resource(
        {
            "runtime": {
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {}},
            }
        }
    )
    spec = builders.build_pod_template(placed, config)["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert not {"nodeSelector", "tolerations", "affinity"} & set(builders.build_pod_template(plain, config)["spec"])
    assert builders.revision_of(placed, config) != builders.revision_of(plain, config)
