"""The Helm chart, rendered with `helm template`: least-privilege RBAC in both watch modes, the operator's pod, the
CRD's keep policy, and values.schema.json refusing wrong values with a message that names them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from modeldeploy.api.selectors import parse_selector
from tests.unit.helm import CHART, REPO_ROOT, helm

Manifest = dict[str, Any]
CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# Cluster-scoped by nature, in either watch mode: the CRD, the status policy and the user roles.
CLUSTER_WIDE_IN_EVERY_MODE = [
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ClusterRole",
    "ClusterRole",
]
OPERATOR = "system:serviceaccount:ops:md-modeldeploy"
# Exactly what the operator calls, nothing more (see kube.py).
EXPECTED_RULES = [
    {"apiGroups": ["modeldeploy.io"], "resources": ["modeldeployments"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["modeldeploy.io"], "resources": ["modeldeployments/status"], "verbs": ["get", "patch"]},
    {"apiGroups": ["modeldeploy.io"], "resources": ["modeldeployments/finalizers"], "verbs": ["update"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]
# Cluster-wide only: the namespace watch (and its list at start), for namespaces being deleted.
NAMESPACE_RULES = [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]


def template(*sets: str, release: str = "md") -> list[Manifest]:
    args = ["template", release, str(CHART), "--namespace", "ops"]
    for value in sets:
        args += ["--set", value]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def only(docs: list[Manifest], kind: str) -> Manifest:
    [doc] = [doc for doc in docs if doc["kind"] == kind]
    return doc


def container(docs: list[Manifest]) -> Manifest:
    [operator] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(operator)


def env(docs: list[Manifest]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(docs)["env"]}


LEADER_ELECTION_KINDS = ["Role", "RoleBinding"]
LEADER_ELECTION_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
]


def leader_election(doc: Manifest) -> bool:
    return bool(doc["metadata"]["name"] == "md-modeldeploy-leader-election")


def assert_leader_election_rbac(docs: list[Manifest]) -> None:
    """The Lease lives in the release namespace: a Role there in either watch mode, for leases only."""
    [role] = [doc for doc in docs if doc["kind"] == "Role" and leader_election(doc)]
    [binding] = [doc for doc in docs if doc["kind"] == "RoleBinding" and leader_election(doc)]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "ops"
    assert role["rules"] == LEADER_ELECTION_RULES
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "md-modeldeploy", "namespace": "ops"}]
    assert "--leader-elect-namespace=ops" in container(docs)["args"]


def test_chart_metadata_and_lint() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["version"], chart["appVersion"]) == ("v2", "0.1.0", "0.1.0")
    result = helm("lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in result.stdout


def test_default_install_is_cluster_wide_with_exactly_the_operators_rules() -> None:
    docs = template()
    assert sorted(doc["kind"] for doc in docs) == sorted(
        [
            *CLUSTER_WIDE_IN_EVERY_MODE,
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            *LEADER_ELECTION_KINDS,
            "Deployment",
            "PodDisruptionBudget",
            "Service",
        ]
    )
    assert_leader_election_rbac(docs)
    [role] = [doc for doc in docs if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == "md-modeldeploy"]
    assert role["metadata"]["name"] == "md-modeldeploy"
    assert role["rules"] == EXPECTED_RULES + NAMESPACE_RULES
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "md-modeldeploy",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "md-modeldeploy", "namespace": "ops"}]
    assert not any(arg.startswith("--namespace") for arg in container(docs)["args"])
    assert only(docs, "ServiceAccount")["metadata"] == {
        "name": "md-modeldeploy",
        "namespace": "ops",
        "labels": only(docs, "ServiceAccount")["metadata"]["labels"],
    }


def test_namespaced_mode_has_a_role_per_namespace_and_nothing_cluster_scoped_but_what_is_by_nature() -> None:
    docs = template("watch.namespaces={team-a,team-b}")
    cluster_scoped = [doc["kind"] for doc in docs if doc["kind"] in CLUSTER_SCOPED]
    assert sorted(cluster_scoped) == sorted(CLUSTER_WIDE_IN_EVERY_MODE)
    assert_leader_election_rbac(docs)
    roles = {doc["metadata"]["namespace"]: doc for doc in docs if doc["kind"] == "Role" and not leader_election(doc)}
    bindings = {
        doc["metadata"]["namespace"]: doc for doc in docs if doc["kind"] == "RoleBinding" and not leader_election(doc)
    }
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for namespace in ("team-a", "team-b"):
        assert roles[namespace]["rules"] == EXPECTED_RULES
        assert bindings[namespace]["roleRef"]["kind"] == "Role"
        assert bindings[namespace]["subjects"] == [
            {"kind": "ServiceAccount", "name": "md-modeldeploy", "namespace": "ops"}
        ]
    args = container(docs)["args"]
    assert [arg for arg in args if arg.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    without_crd = template(
        "watch.namespaces={team-a}", "crds.enabled=false", "statusPolicy.enabled=false", "userRoles.enabled=false"
    )
    assert [doc["kind"] for doc in without_crd if doc["kind"] in CLUSTER_SCOPED] == []


def test_operator_pod_is_two_restricted_replicas_with_probes() -> None:
    docs = template()
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["serviceAccountName"] == "md-modeldeploy"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    operator = container(docs)
    assert operator["image"] == "modeldeploy/operator:0.1.0"
    assert operator["command"] == ["modeldeploy", "run"]
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    assert "--health-bind-address=:8081" in operator["args"]
    assert not any(arg.startswith("--health-endpoint") for arg in operator["args"])
    assert "--metrics-bind-address=:8080" in operator["args"]
    # The operator's own endpoint, which a standby serves too: kopf's would exist on the leader only.
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {port["name"]: port["containerPort"] for port in operator["ports"]} == {"metrics": 8080, "health": 8081}
    service = only(docs, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_replicas_spread_over_nodes_and_a_budget_keeps_one_through_a_drain() -> None:
    docs = template()
    deployment = only(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["spec"]["affinity"] == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": selector},
                    },
                }
            ]
        }
    }
    budget = only(docs, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["metadata"]["name"] == "md-modeldeploy"
    assert budget["metadata"]["namespace"] == "ops"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    assert only(template("podDisruptionBudget.maxUnavailable=50%"), "PodDisruptionBudget")["spec"][
        "maxUnavailable"
    ] == ("50%")
    # Namespaced mode changes none of it.
    assert only(template("watch.namespaces={team-a}"), "PodDisruptionBudget")["spec"] == budget["spec"]


def test_one_replica_has_no_budget_and_a_given_affinity_replaces_the_default() -> None:
    single = template("replicaCount=1")
    deployment = only(single, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # maxSurge 0: with one replica the old pod stops before the new one starts, as Recreate did.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert not [doc for doc in single if doc["kind"] == "PodDisruptionBudget"]
    assert not [doc for doc in template("podDisruptionBudget.enabled=false") if doc["kind"] == "PodDisruptionBudget"]
    term = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
    docs = template(
        f"{term}.matchExpressions[0].key=topology.kubernetes.io/zone",
        f"{term}.matchExpressions[0].operator=Exists",
    )
    affinity = only(docs, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert list(affinity) == ["nodeAffinity"]


def test_values_reach_the_operator() -> None:
    docs = template(
        "image.tag=1.2.3",
        "logLevel=debug",
        "logFormat=json",
        "runtimeImages.default=registry.example/runtime:2",
        "runtimeImages.onnx=registry.example/onnx:2",
        "workers=8",
        "analysis.prometheusURL=http://prometheus.monitoring:9090",
        "analysis.timeoutSeconds=5",
        "analysis.allowedPrometheusURLs={http://prometheus.team-a:9090,https://thanos.example/tenant-a}",
        "modelShutdown.preStopDelaySeconds=15",
        "modelShutdown.drainSeconds=10",
        "modelShutdown.terminationGracePeriodSeconds=60",
        "trafficRouting.gatewayAPI=true",
        "trafficRouting.istio=true",
    )
    operator = container(docs)
    assert operator["image"] == "modeldeploy/operator:1.2.3"
    assert "--verbose" in operator["args"]
    assert "--log-format=json" in operator["args"]
    assert env(docs) == {
        "MODELDEPLOY_RUNTIME_IMAGE": "registry.example/runtime:2",
        "MODELDEPLOY_RUNTIME_IMAGE_ONNX": "registry.example/onnx:2",
        "MODELDEPLOY_WORKERS": "8",
        "MODELDEPLOY_HISTORY_LIMIT": "10",
        "MODELDEPLOY_RETAINED_REVISIONS": "3",
        "MODELDEPLOY_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
        "MODELDEPLOY_PROMETHEUS_TIMEOUT_SECONDS": "5",
        "MODELDEPLOY_PROMETHEUS_ALLOWED_URLS": "http://prometheus.team-a:9090,https://thanos.example/tenant-a",
        "MODELDEPLOY_PRESTOP_DELAY_SECONDS": "15",
        "MODELDEPLOY_DRAIN_SECONDS": "10",
        "MODELDEPLOY_TERMINATION_GRACE_PERIOD_SECONDS": "60",
        "MODELDEPLOY_TRAFFIC_ROUTERS": "gatewayAPI,istio",
    }
    assert "--verbose" not in container(template())["args"]
    assert env(template())["MODELDEPLOY_TRAFFIC_ROUTERS"] == ""


def test_a_router_turned_on_adds_the_rights_for_its_route_kind_only() -> None:
    def route_rules(*values: str) -> list[tuple[str, ...]]:
        found = []
        for doc in template(*values):
            if doc["kind"] in ("ClusterRole", "Role"):
                for rule in doc.get("rules") or []:
                    if set(rule["apiGroups"]) & {"gateway.networking.k8s.io", "networking.istio.io"}:
                        found.append((doc["kind"], *rule["resources"], *rule["verbs"]))
        return found

    assert route_rules() == []
    verbs = ("get", "list", "watch", "create", "patch", "delete")
    assert route_rules("trafficRouting.gatewayAPI=true") == [("ClusterRole", "httproutes", *verbs)]
    assert route_rules("trafficRouting.istio=true", "watch.namespaces={a}") == [("Role", "virtualservices", *verbs)]


def test_by_default_a_spec_may_name_only_the_operators_own_prometheus() -> None:
    """An empty list: the operator allows prometheusURL alone (config.py reads the variable)."""
    assert env(template())["MODELDEPLOY_PROMETHEUS_ALLOWED_URLS"] == ""
    allowed = env(template("analysis.allowedPrometheusURLs={http://127.0.0.1:*}"))
    assert allowed["MODELDEPLOY_PROMETHEUS_ALLOWED_URLS"] == "http://127.0.0.1:*"


def test_status_policy_lets_only_the_operator_change_status_but_commands() -> None:
    docs = template()
    policy = only(docs, "ValidatingAdmissionPolicy")
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["metadata"]["name"] == "md-modeldeploy-status"
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["modeldeploy.io"],
            "apiVersions": ["*"],
            "operations": ["UPDATE"],
            "resources": ["modeldeployments", "modeldeployments/status"],
        }
    ]
    # The operator's identity is the chart's ServiceAccount, and its writes are never evaluated.
    [condition] = spec["matchConditions"]
    assert condition["expression"] == f'request.userInfo.username != "{OPERATOR}"'
    [validation] = spec["validations"]
    assert "'commands'" in validation["expression"]
    assert OPERATOR in validation["message"]
    assert "status.commands" in validation["message"]
    binding = only(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": "md-modeldeploy-status", "validationActions": ["Deny"]}

    named = template("serviceAccount.name=operator")
    assert (
        "system:serviceaccount:ops:operator"
        in only(named, "ValidatingAdmissionPolicy")["spec"]["validations"][0]["message"]
    )
    assert not [doc for doc in template("statusPolicy.enabled=false") if "AdmissionPolicy" in doc["kind"]]


def test_without_the_status_policy_the_install_notes_warn() -> None:
    notes = (CHART / "templates/NOTES.txt").read_text()
    assert "{{- if not .Values.statusPolicy.enabled }}" in notes
    assert "WARNING: statusPolicy.enabled is false" in notes


def test_namespaced_status_policy_binds_only_the_watched_namespaces() -> None:
    binding = only(template("watch.namespaces={team-a,team-b}"), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
            ]
        }
    }


def test_user_roles_are_aggregated_into_the_built_in_ones() -> None:
    roles = {doc["metadata"]["name"]: doc for doc in template() if doc["kind"] == "ClusterRole"}
    edit, view = roles["md-modeldeploy-edit"], roles["md-modeldeploy-view"]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k: v for k, v in edit["metadata"]["labels"].items() if k.startswith(aggregate)} == {
        f"{aggregate}admin": "true",
        f"{aggregate}edit": "true",
    }
    assert {k: v for k, v in view["metadata"]["labels"].items() if k.startswith(aggregate)} == {
        f"{aggregate}view": "true"
    }
    assert edit["rules"] == [
        {
            "apiGroups": ["modeldeploy.io"],
            "resources": ["modeldeployments"],
            "verbs": ["create", "update", "patch", "delete", "get", "list", "watch"],
        },
        {
            "apiGroups": ["modeldeploy.io"],
            "resources": ["modeldeployments/status"],
            "verbs": ["get", "patch", "update"],
        },
    ]
    assert view["rules"] == [
        {
            "apiGroups": ["modeldeploy.io"],
            "resources": ["modeldeployments", "modeldeployments/status"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    unaggregated = [doc for doc in template("userRoles.aggregate=false") if doc["kind"] == "ClusterRole"]
    assert not any(aggregate in key for doc in unaggregated for key in doc["metadata"]["labels"])
    names = {doc["metadata"]["name"] for doc in template("userRoles.enabled=false") if doc["kind"] == "ClusterRole"}
    assert names == {"md-modeldeploy"}


def test_crd_comes_from_the_generated_file_with_the_keep_policy() -> None:
    generated = yaml.safe_load((REPO_ROOT / "crds/modeldeployment.yaml").read_text())
    kept = only(template(), "CustomResourceDefinition")
    assert kept["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert kept == generated
    assert only(template("crds.keep=false"), "CustomResourceDefinition") == generated
    assert not [doc for doc in template("crds.enabled=false") if doc["kind"] == "CustomResourceDefinition"]


def test_service_monitor_is_optional() -> None:
    assert not [doc for doc in template() if doc["kind"] == "ServiceMonitor"]
    monitor = only(
        template("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"), "ServiceMonitor"
    )
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}


def test_namespace_is_not_created_unless_asked() -> None:
    assert not [doc for doc in template() if doc["kind"] == "Namespace"]
    namespace = only(template("namespace.create=true"), "Namespace")
    assert namespace["metadata"]["name"] == "ops"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("logFormat=xml", "logFormat"),
        ("logLevel=trace", "logLevel"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watch.namespaces={Not_A_Namespace}", "namespaces"),
        ("workers=0", "workers"),
        ("metrics.serviceMonitor.interval=often", "interval"),
        ("logformat=json", "logformat"),
        ("health.port=8080", "health.port"),
        ("replicaCount=0", "replicaCount"),
        ("podDisruptionBudget.maxUnavailable=0", "maxUnavailable"),
        ("analysis.allowedPrometheusURLs={prometheus:9090}", "allowedPrometheusURLs"),
        ("analysis.allowedPrometheusURLs={http://user@prometheus:9090}", "allowedPrometheusURLs"),
        ("analysis.allowedPrometheusURLs=http://prometheus:9090", "allowedPrometheusURLs"),
        ("modelShutdown.drainSeconds=-1", "drainSeconds"),
        ("modelShutdown.preStopDelaySeconds=5s", "preStopDelaySeconds"),
        # 5 + 5 + 3 > 12: the operator would refuse it at start (config.py), the chart says so first.
        ("modelShutdown.terminationGracePeriodSeconds=12", "terminationGracePeriodSeconds must be at least"),
        ("shard.selector.matchLabels.tier=-gold", "matchLabels"),
        ("shard.selector.matchExpressions[0].key=tier", "operator"),
        ("shard.selector.matchExpressions[0].operator=Gt", "operator"),
        ("shard.selector.matchLabel.tier=gold", "matchLabel"),
        ("shard.selector.matchExpressions={}", "matchExpressions"),
        ("leaderElection.leaseName=Shard_A", "leaseName"),
    ],
)
def test_a_wrong_value_fails_with_a_message_naming_it(value: str, named: str) -> None:
    result = helm("template", "md", str(CHART), "--set", value, check=False)
    assert result.returncode != 0, f"--set {value} rendered"
    assert named in result.stderr, result.stderr


def test_every_value_is_documented() -> None:
    """Each value of values.yaml has a row in docs/install.md; maps of Kubernetes fields count as one value."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    opaque = {"resources", "podSecurityContext", "securityContext", "affinity"}

    def leaves(node: dict[str, Any], prefix: str = "") -> list[str]:
        found = []
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and path not in opaque:
                found += leaves(value, f"{path}.")
            else:
                found.append(path)
        return found

    docs = (REPO_ROOT / "docs/install.md").read_text()
    undocumented = [path for path in leaves(values) if f"`{path}`" not in docs]
    assert not undocumented, f"values missing from the table in docs/install.md: {undocumented}"


def test_the_artifact_policy_is_rendered_only_for_listed_formats() -> None:
    assert not [doc for doc in template() if doc["metadata"]["name"].endswith("-artifacts")]
    docs = template("artifactPolicy.requireSha256For={sklearn,custom}", "watch.namespaces={team-a}")
    policy = next(
        doc
        for doc in docs
        if doc["kind"] == "ValidatingAdmissionPolicy" and doc["metadata"]["name"].endswith("-artifacts")
    )
    [validation] = policy["spec"]["validations"]
    assert 'object.spec.model.format in ["sklearn","custom"]' in validation["expression"]
    assert "spec.model.sha256 is required" in validation["messageExpression"]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]
    binding = next(
        doc
        for doc in docs
        if doc["kind"] == "ValidatingAdmissionPolicyBinding" and doc["metadata"]["name"].endswith("-artifacts")
    )
    assert binding["spec"]["policyName"] == "md-modeldeploy-artifacts"
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"]


SHARD_A = [
    "shard.selector.matchLabels.modeldeploy\\.io/shard=a",
    "shard.selector.matchExpressions[0].key=tier",
    "shard.selector.matchExpressions[0].operator=In",
    "shard.selector.matchExpressions[0].values={silver,gold}",
    "shard.selector.matchExpressions[1].key=legacy",
    "shard.selector.matchExpressions[1].operator=DoesNotExist",
]


def flag(docs: list[Manifest], name: str) -> str | None:
    values = [arg.split("=", 1)[1] for arg in container(docs)["args"] if arg.startswith(f"--{name}=")]
    assert len(values) <= 1
    return values[0] if values else None


def test_a_release_is_one_shard_with_its_selector_its_lease_and_its_status_policy() -> None:
    docs = template(*SHARD_A)
    text = flag(docs, "shard-selector")
    assert text == "modeldeploy.io/shard=a,tier in (silver,gold),!legacy"
    # The operator reads what the chart writes, and selects what the LabelSelector does.
    selector = parse_selector(text)
    assert selector.matches({"modeldeploy.io/shard": "a", "tier": "gold"})
    assert not selector.matches({"modeldeploy.io/shard": "a", "tier": "gold", "legacy": "yes"})
    assert not selector.matches({"modeldeploy.io/shard": "b", "tier": "gold"})
    # A Lease of its own, named after the release, so that shards in one namespace do not elect one leader.
    assert flag(docs, "leader-elect-lease-name") == "md-modeldeploy"
    binding = only(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"] == {
        "objectSelector": {
            "matchLabels": {"modeldeploy.io/shard": "a"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["silver", "gold"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    }
    namespaced = only(template(*SHARD_A, "watch.namespaces={team-a}"), "ValidatingAdmissionPolicyBinding")
    assert set(namespaced["spec"]["matchResources"]) == {"namespaceSelector", "objectSelector"}


def test_without_a_shard_the_release_keeps_the_operator_s_lease_and_no_selector() -> None:
    docs = template()
    assert flag(docs, "shard-selector") is None
    assert flag(docs, "leader-elect-lease-name") == "modeldeploy-operator"
    assert flag(template("watch.namespaces={team-a}"), "leader-elect-lease-name") == "modeldeploy-operator"
    kept = template(*SHARD_A, "leaderElection.leaseName=modeldeploy-operator")
    assert flag(kept, "leader-elect-lease-name") == "modeldeploy-operator", "kept across a change of selector"


def test_two_shards_install_side_by_side_without_a_name_in_common() -> None:
    """The second release leaves the CRD and the user roles to the first; nothing else they make shares a name."""
    first = template(*SHARD_A, release="models-a")
    second = template(
        "shard.selector.matchLabels.modeldeploy\\.io/shard=b",
        "crds.enabled=false",
        "userRoles.enabled=false",
        release="models-b",
    )

    def names(docs: list[Manifest]) -> set[tuple[str, str, str]]:
        return {(doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]) for doc in docs}

    assert names(first) & names(second) == set()
    assert flag(first, "leader-elect-lease-name") != flag(second, "leader-elect-lease-name")
    assert not [doc for doc in second if doc["kind"] == "CustomResourceDefinition"]
