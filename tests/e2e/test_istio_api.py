"""Istio's traffic API on the local control plane: the CRDs of Istio's API module, installed by the gateway kit (no
Istio data plane runs here, so nothing routes by them; what is checked is the API the operator writes to).

The API server accepts a VirtualService that splits by weight and mirrors, the shape the operator writes, and
keeps it as written; it refuses malformed ones with the offending field in the message, and stores nothing.
The CRDs are installed by a session fixture (testkit/scripts/gateway-up.sh crds), fetched first when they are not
cached; the tests are skipped only when they cannot be fetched here, and say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from modeldeploy_testkit.cluster import Cluster
from modeldeploy_testkit.gateway import Backend, virtual_service
from modeldeploy_testkit.resources import get

pytestmark = [pytest.mark.gateway, pytest.mark.usefixtures("gateway_crds")]

VIRTUAL_SERVICE = "virtualservice.networking.istio.io"
NAME = "scorer"


def weighted_with_mirror(namespace: str) -> dict[str, Any]:
    return virtual_service(
        NAME,
        namespace,
        [NAME],
        [Backend(f"{NAME}-stable", 80, 90), Backend(f"{NAME}-canary", 80, 10)],
        mirror=Backend(f"{NAME}-shadow", 80),
        mirror_percent=100.0,
    )


def test_a_weighted_virtual_service_with_a_mirror_is_accepted_as_written(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(weighted_with_mirror(namespace)))

    stored = get(cluster, VIRTUAL_SERVICE, NAME, "-n", namespace)
    assert stored["apiVersion"] == "networking.istio.io/v1"
    http = stored["spec"]["http"][0]
    assert [(r["destination"]["host"], r["destination"]["port"]["number"], r["weight"]) for r in http["route"]] == [
        (f"{NAME}-stable", 80, 90),
        (f"{NAME}-canary", 80, 10),
    ]
    assert http["mirror"] == {"host": f"{NAME}-shadow", "port": {"number": 80}}
    assert http["mirrorPercentage"] == {"value": 100}


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def mangle(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mangle


def _drop(path: list[str | int]) -> Callable[[dict[str, Any]], None]:
    def mangle(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mangle


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        pytest.param(
            _set(["spec", "http", 0, "route", 0, "weight"], "ninety"), "spec.http[0].route[0].weight", id="weight"
        ),
        pytest.param(
            _drop(["spec", "http", 0, "route", 1, "destination"]), "spec.http[0].route[1].destination", id="dest"
        ),
        pytest.param(_drop(["spec", "http", 0, "mirror", "host"]), "spec.http[0].mirror.host", id="mirror-host"),
        pytest.param(
            _set(["spec", "http", 0, "mirrorPercentage", "value"], "all"), "mirrorPercentage.value", id="percent"
        ),
    ],
)
def test_a_malformed_virtual_service_is_refused_with_the_field_named(
    cluster: Cluster, namespace: str, mangle: Callable[[dict[str, Any]], None], field: str
) -> None:
    body = weighted_with_mirror(namespace)
    mangle(body)

    result = cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)

    assert result.returncode != 0, f"the API server accepted a malformed VirtualService:\n{result.stdout}"
    assert field in result.stderr, result.stderr
    assert "is invalid" in result.stderr, result.stderr
    absent = cluster.kubectl("get", VIRTUAL_SERVICE, NAME, "-n", namespace, "--ignore-not-found", "-o", "name")
    assert absent.stdout.strip() == ""
