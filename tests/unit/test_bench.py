"""The benchmarks' pure parts, without a cluster: the operator's histograms read from /metrics and their quantiles,
the reaction path and the operator's writes from the API server's audit log, the yardstick pairs' readiness from
EndpointSlices, and memory settling (testkit/modeldeploy_testkit/bench/)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from modeldeploy_testkit.bench.common import (
    CpuWindow,
    EndpointCounts,
    PairRun,
    ScaleRun,
    Writes,
    all_ready_seconds,
    bare_deployment,
    bare_service,
    operator_writes,
    pair_ready_times,
    ready_endpoints,
    service_of,
)
from modeldeploy_testkit.bench.scale import (
    LatencyResult,
    Measurements,
    ScaleResult,
    build_report,
    counter_text,
    counter_without_events,
    detail_lines,
    figures_json,
)
from modeldeploy_testkit.bench.stages import (
    STAGES,
    Histogram,
    PathSample,
    Settling,
    Stage,
    between,
    first_write_after,
    histogram,
    median,
    operator_side_ms,
    parse_labels,
    path_medians,
    reaction_paths,
    read_stages,
    stage_figures,
)

NS = "bench-md-latency-abc123"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC).timestamp()


def stamp(offset_ms: float) -> str:
    """An audit timestamp `offset_ms` after EPOCH, with microseconds as the API server writes them."""
    return datetime.fromtimestamp(EPOCH + offset_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_event(
    agent: str,
    verb: str,
    resource: str,
    name: str,
    received_ms: float = 0.0,
    answered_ms: float = 0.0,
    namespace: str = NS,
    code: int = 200,
    subresource: str | None = None,
    stage: str = "ResponseComplete",
) -> dict[str, Any]:
    reference: dict[str, Any] = {"resource": resource, "namespace": namespace, "name": name}
    if subresource:
        reference["subresource"] = subresource
    return {
        "stage": stage,
        "verb": verb,
        "userAgent": agent,
        "objectRef": reference,
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": stamp(received_ms),
        "stageTimestamp": stamp(answered_ms),
    }


OPERATOR = "modeldeploy/0.1.0 (host_abc)"
BENCH = "bench/0.1.0 (modeldeploy_testkit.bench)"

# --- histograms -----------------------------------------------------------------------------------------------------


def test_labels_are_parsed_with_escapes() -> None:
    assert parse_labels('{kind="resource",le="0.005"}') == {"kind": "resource", "le": "0.005"}
    assert parse_labels('{message="say \\"hi\\"",le="+Inf"}') == {"message": 'say "hi"', "le": "+Inf"}
    assert parse_labels("{}") == {}


LINES = {
    "_bucket": {
        '{method="PATCH",le="0.001"}': 2.0,
        '{method="PATCH",le="0.002"}': 6.0,
        '{method="PATCH",le="+Inf"}': 8.0,
        '{method="GET",le="0.001"}': 1.0,
        '{method="GET",le="0.002"}': 1.0,
        '{method="GET",le="+Inf"}': 1.0,
    },
    "_sum": {'{method="PATCH"}': 0.02, '{method="GET"}': 0.0005},
    "_count": {'{method="PATCH"}': 8.0, '{method="GET"}': 1.0},
}


def test_a_histogram_is_read_for_one_label_set_or_summed_over_all() -> None:
    patch = histogram(LINES["_bucket"], LINES["_sum"], LINES["_count"], {"method": "PATCH"})
    assert patch.buckets == ((0.001, 2.0), (0.002, 6.0), (math.inf, 8.0))
    assert (patch.total, patch.count) == (0.02, 8.0)
    every = histogram(LINES["_bucket"], LINES["_sum"], LINES["_count"], {})
    assert every.buckets == ((0.001, 3.0), (0.002, 7.0), (math.inf, 9.0))
    assert every.count == 9.0
    assert histogram(LINES["_bucket"], LINES["_sum"], LINES["_count"], {"method": "PUT"}) == Histogram()


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.1, 0.0004),  # rank 0.8 of 2 in the first bucket, which starts at 0
        (0.5, 0.0015),  # rank 4: half-way through the second bucket's 4
        (0.75, 0.002),  # rank 6: the second bucket's upper bound
        (0.99, 0.002),  # rank 7.92 is in +Inf: the highest finite bound, as histogram_quantile says
    ],
)
def test_quantiles_are_estimated_as_prometheus_does(fraction: float, expected: float) -> None:
    patch = histogram(LINES["_bucket"], LINES["_sum"], LINES["_count"], {"method": "PATCH"})
    assert patch.quantile(fraction) == pytest.approx(expected)


def test_empty_buckets_are_skipped_and_nothing_observed_has_no_quantile() -> None:
    gap = Histogram(((0.001, 0.0), (0.002, 0.0), (0.005, 4.0), (math.inf, 4.0)), 0.012, 4.0)
    assert gap.quantile(0.5) == pytest.approx(0.0035)
    assert Histogram().quantile(0.5) is None
    assert Histogram().mean() is None
    assert gap.mean() == pytest.approx(0.003)


def test_a_run_is_the_difference_of_two_readings() -> None:
    before = Histogram(((0.001, 2.0), (math.inf, 3.0)), 0.01, 3.0)
    after = Histogram(((0.001, 5.0), (math.inf, 7.0)), 0.03, 7.0)
    run = after - before
    assert run.buckets == ((0.001, 3.0), (math.inf, 4.0))
    assert (run.total, run.count) == (pytest.approx(0.02), 4.0)
    assert after - Histogram() == after  # an operator that had not observed anything yet


def fake_metric_lines(scale: float) -> Any:
    """metric_lines() of an operator whose every stage saw `scale` observations of 1-2 ms."""

    def lines(name: str) -> dict[str, float]:
        if name.endswith("_bucket"):
            return {
                '{kind="resource",method="PATCH",le="0.001"}': 0.0,
                '{kind="resource",method="PATCH",le="0.002"}': scale,
                '{kind="resource",method="PATCH",le="+Inf"}': scale,
            }
        if name.endswith("_sum"):
            return {'{kind="resource",method="PATCH"}': 0.0015 * scale}
        return {'{kind="resource",method="PATCH"}': scale}

    return lines


def test_stages_are_read_subtracted_and_summed_along_the_path() -> None:
    calls: list[str] = []
    base = fake_metric_lines(2.0)

    def counting(name: str) -> dict[str, float]:
        calls.append(name)
        return dict(base(name))

    before = read_stages(counting)
    assert len(calls) == len(set(calls))  # one scrape per series name, shared by stages on one metric
    after = read_stages(fake_metric_lines(6.0))
    figures = {figure.label: figure for figure in stage_figures(between(before, after))}
    queue = figures["queue wait"]
    assert (queue.count, queue.p50_ms, queue.mean_ms) == (4, pytest.approx(1.5), pytest.approx(1.5))
    on_path = [stage for stage in STAGES if stage.on_path]
    assert len(on_path) == 4
    assert operator_side_ms(figures.values()) == pytest.approx(1.5 * 4)


def test_the_operator_side_is_unknown_when_a_stage_is_missing() -> None:
    stages = (Stage("a", "m_a", on_path=True), Stage("b", "m_b", on_path=True), Stage("c", "m_c"))
    reading = {"a": Histogram(((0.001, 1.0), (math.inf, 1.0)), 0.0005, 1.0), "b": Histogram()}
    assert operator_side_ms(stage_figures(reading, stages), stages) is None  # an operator without histogram b


# --- the reaction path -----------------------------------------------------------------------------------------------


def test_the_reaction_path_is_read_from_the_audit_log() -> None:
    events = [
        audit_event(BENCH, "patch", "modeldeployments", "lat-0000", 0.0, 2.0),
        audit_event(OPERATOR, "patch", "deployments", "lat-0000-5d8f7c", 6.0, 8.5),
        audit_event(OPERATOR, "patch", "deployments", "lat-0000-5d8f7c", 40.0, 41.0),  # a later write: not the first
        audit_event(OPERATOR, "patch", "services", "lat-0000", 9.0, 10.0),
        audit_event(BENCH, "patch", "modeldeployments", "lat-0001", 100.0, 101.0),
        audit_event("kopf/1.45.2", "patch", "deployments", "lat-0001-aa11bb", 105.0, 107.0),
        audit_event(OPERATOR, "patch", "deployments", "lat-00010-ffffff", 1.0, 1.5),  # lat-00010's, not lat-0001's
        audit_event(OPERATOR, "patch", "deployments", "lat-0002-cc22dd", 1.0, 1.5, namespace="elsewhere"),
        audit_event(BENCH, "patch", "modeldeployments", "lat-0002", 0.0, 1.0, subresource="status"),
    ]
    paths = reaction_paths(events, NS, ["lat-0000", "lat-0001", "lat-0002"], "bench/", ("modeldeploy/", "kopf/"))
    first = paths["lat-0000"]
    first.seen, first.child_seen = EPOCH + 0.003, EPOCH + 0.0095
    assert first.stretches() == {
        "stored -> seen by the benchmark": pytest.approx(1.0, abs=0.01),
        "stored -> operator's Deployment write received": pytest.approx(4.0, abs=0.01),
        "Deployment write received -> answered": pytest.approx(2.5, abs=0.01),
        "Deployment write answered -> seen by the benchmark": pytest.approx(1.0, abs=0.01),
    }
    assert paths["lat-0001"].stored == pytest.approx(EPOCH + 0.101)
    assert paths["lat-0001"].write_received == pytest.approx(EPOCH + 0.105)
    assert paths["lat-0002"] == PathSample("lat-0002")  # nothing in its namespace, and status is not its creation
    assert set(paths["lat-0002"].stretches().values()) == {None}


def test_path_medians_use_the_samples_that_know_both_ends() -> None:
    known = PathSample("a", stored=EPOCH, seen=EPOCH + 0.001, write_received=EPOCH + 0.004)
    other = PathSample("b", stored=EPOCH, seen=EPOCH + 0.003, write_received=EPOCH + 0.008)
    unknown = PathSample("c", stored=None, seen=EPOCH)
    medians = path_medians([known, other, unknown])
    assert medians["stored -> seen by the benchmark"] == pytest.approx(2.0, abs=0.01)
    assert medians["stored -> operator's Deployment write received"] == pytest.approx(6.0, abs=0.01)
    assert medians["Deployment write received -> answered"] is None
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([]) is None


def test_a_kubectl_patch_is_matched_to_the_revert_that_sent_it() -> None:
    events = [
        audit_event("kubectl/v1.33.1 (linux/amd64)", "patch", "modeldeployments", "revert", 50.0, 52.0),
        audit_event("kubectl/v1.33.1 (linux/amd64)", "patch", "modeldeployments", "revert", 1050.0, 1052.0),
        audit_event("kubectl/v1.33.1 (linux/amd64)", "patch", "modeldeployments", "other", 900.0, 901.0),
        audit_event(OPERATOR, "patch", "modeldeployments", "revert", 1000.0, 1001.0, subresource="status"),
    ]
    starts = [EPOCH, EPOCH + 0.9, EPOCH + 2.0]
    found = first_write_after(events, NS, "revert", "kubectl", "modeldeployments", starts)
    assert found == [pytest.approx(EPOCH + 0.05), pytest.approx(EPOCH + 1.05), None]


# --- the operator's writes -------------------------------------------------------------------------------------------


def test_operator_writes_are_counted_by_verb_and_kind_in_the_namespaces_asked() -> None:
    events = [
        audit_event(OPERATOR, "patch", "deployments", "m-0000-abc"),
        audit_event(OPERATOR, "patch", "services", "m-0000"),
        audit_event(OPERATOR, "patch", "modeldeployments", "m-0000", subresource="status"),
        audit_event(OPERATOR, "patch", "modeldeployments", "m-0000", subresource="status", code=409),
        audit_event(OPERATOR, "create", "events", "m-0000.1"),
        audit_event(OPERATOR, "delete", "deployments", "m-0000-old", code=404),
        audit_event("kopf/1.45.2", "patch", "modeldeployments", "m-0000"),
        audit_event(BENCH, "patch", "modeldeployments", "m-0001"),  # the benchmark's own write
        audit_event(OPERATOR, "update", "leases", "lease", namespace="modeldeploy-system"),
    ]
    writes = operator_writes(events, {NS})
    assert writes.by_verb_kind == {
        ("patch", "Deployment"): 1,
        ("patch", "Service"): 1,
        ("patch", "ModelDeployment/status"): 2,
        ("create", "Event"): 1,
        ("delete", "Deployment"): 1,
        ("patch", "ModelDeployment"): 1,
    }
    assert (writes.total, writes.without_events, writes.conflicts) == (7, 6, 1)
    assert writes.errors == {409: 1, 404: 1}
    assert writes.elsewhere == 1
    table = writes.table(2)
    assert table[0].split() == ["kind", "create", "update", "patch", "delete", "total"]
    assert table[1].split() == ["Deployment", "0.00", "0.00", "0.50", "0.50", "1.00"]
    assert table[3].split() == ["ModelDeployment/status", "0.00", "0.00", "1.00", "0.00", "1.00"]
    assert table[5].split() == ["ModelDeployment", "0.00", "0.00", "0.50", "0.00", "0.50"]  # a kind beyond the four


def test_no_writes_make_an_empty_table_of_zeros() -> None:
    table = Writes().table(0)
    assert all(set(line.split()[1:]) == {"0.00"} for line in table[1:])


def test_the_operator_counter_per_resource() -> None:
    counted = Counter({"apply Deployment": 10, "apply Service": 30, "patch ModelDeployment/status": 10})
    counted["create Event"] = 10
    assert counter_without_events(counted) == 50
    assert counter_text(counted, 10).split(", ")[0] == "apply Deployment 1.00"
    assert counter_text(Counter(), 10) == "none"


# --- the yardstick's pairs ------------------------------------------------------------------------------------------


def endpoint_slice(name: str, service: str, *ready: bool | None) -> dict[str, Any]:
    endpoints = []
    for index, state in enumerate(ready):
        conditions = {} if state is None else {"ready": state}
        endpoints.append({"addresses": [f"198.18.0.{index}"], "conditions": conditions})
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "endpoints": endpoints,
    }


def test_ready_endpoints_follow_the_api_reading_of_the_condition() -> None:
    assert ready_endpoints(endpoint_slice("s", "d-0000", True, False, None)) == 2  # unset counts as ready
    assert ready_endpoints({"metadata": {"name": "s"}, "endpoints": None}) == 0
    assert service_of(endpoint_slice("s", "d-0000")) == "d-0000"
    assert service_of({"metadata": {"name": "s"}}) == ""


def test_endpoints_are_summed_over_a_services_slices() -> None:
    counts = EndpointCounts()
    assert counts.observe("ADDED", endpoint_slice("d-0000-a", "d-0000")) == 0
    assert counts.observe("MODIFIED", endpoint_slice("d-0000-a", "d-0000", True, False)) == 1
    assert counts.observe("ADDED", endpoint_slice("d-0000-b", "d-0000", True)) == 2
    assert counts.observe("ADDED", endpoint_slice("d-0001-a", "d-0001", True)) == 1
    assert counts.observe("DELETED", endpoint_slice("d-0000-b", "d-0000", True)) == 1


def test_a_pair_is_ready_when_both_of_its_halves_are() -> None:
    deployments = {"d-0000": 1.0, "d-0001": 3.0, "d-0002": 2.0}
    services = {"d-0000": 2.5, "d-0001": 1.0}
    pairs = pair_ready_times(deployments, services)
    assert pairs == {"d-0000": 2.5, "d-0001": 3.0}
    assert all_ready_seconds(pairs, 2, started=0.5) == 2.5
    assert all_ready_seconds(pairs, 3, started=0.5) is None  # d-0002's Service never listed its endpoints
    assert all_ready_seconds({}, 0, started=0.0) is None


def test_the_bare_service_selects_the_bare_deployments_pods() -> None:
    deployment, service = bare_deployment("d-0007", NS), bare_service("d-0007", NS)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert bare_service("d-0008", NS)["spec"]["selector"].items() - pod_labels.items()
    assert service["metadata"]["name"] == deployment["metadata"]["name"]


# --- memory at rest -------------------------------------------------------------------------------------------------


def test_memory_settles_once_the_last_samples_lie_close() -> None:
    settling = Settling(window=3, tolerance_kib=100)
    assert not settling.add(40_000)
    assert not settling.add(48_000)  # still growing
    assert not settling.add(48_050)
    assert settling.add(48_090)  # 48,000 .. 48,090: within 100 KiB
    assert not Settling(window=3).settled()


# --- the scale report: figures beside their goals -------------------------------------------------------------------


def run_of(count: int, seconds_: float | None) -> ScaleRun:
    return ScaleRun(count, seconds_, count if seconds_ else 0, 1.0, [], 0, 0.5, 1.0)


def audit_writes(per_resource: dict[tuple[str, str], int], resources: int, conflicts: int = 0) -> Writes:
    writes = Writes()
    for (verb, kind), number in per_resource.items():
        writes.by_verb_kind[(verb, kind)] += number * resources
        writes.by_kind[kind] += number * resources
        writes.by_verb[verb] += number * resources
    writes.conflicts = conflicts
    return writes


ONE_EACH = {("patch", "Deployment"): 1, ("patch", "Service"): 1, ("patch", "ModelDeployment/status"): 1}


def measurements(**changes: Any) -> Measurements:
    """A run of 10 resources and 4 latency samples that meets every goal, but for `changes`."""
    latency_stage = read_stages(fake_metric_lines(3.0))
    paths = {
        "lat-0000": PathSample("lat-0000", EPOCH, EPOCH + 0.001, EPOCH + 0.008, EPOCH + 0.010, EPOCH + 0.0105),
    }
    values: dict[str, Any] = {
        "count": 10,
        "samples": 4,
        "idle": 60.0,
        "timeout": 120.0,
        "yard": PairRun(run_of(10, 10.0), 9.0, 10.0),
        "scale": ScaleResult(run_of(10, 12.0), audit_writes(ONE_EACH, 10), 12.5, {"resource Ready": "x"}, 12.2, {}),
        "latency": LatencyResult([4.0, 5.0, 6.0, 9.0], audit_writes(ONE_EACH, 4), [], {}, paths, latency_stage),
        "scale_counted": Counter({"apply Deployment": 10, "create Event": 10}),
        "latency_counted": Counter(),
        "idle_writes": Writes(),
        "idle_metric": 0.0,
        "rest": {"VmRSS": 50 * 1024, "VmHWM": 52 * 1024},
        "rest_waited": 3.0,
        "rest_settled": True,
        "at_scale": {"VmRSS": 90 * 1024, "VmHWM": 99 * 1024},
        "at_end": {"VmRSS": 91 * 1024, "VmHWM": 101 * 1024},
        "cpu_total": 30.0,
        "cpu_scale": 20.0,
        "cpu_windows": {
            "yardstick": CpuWindow(40.0, {"kube-apiserver": 40.0, "benchmark": 4.0}),
            "scale run": CpuWindow(50.0, {"kube-apiserver": 55.0, "benchmark": 4.0, "operator": 20.0}),
        },
        "problem_lines": 0,
        "cleanup_problem_lines": 0,
    }
    values.update(changes)
    return Measurements(**values)


def verdicts(m: Measurements) -> dict[str, bool | None]:
    return {row.figure: row.met for row in build_report(m).rows}


def test_a_run_that_meets_every_goal_is_reported_so() -> None:
    m = measurements()
    assert build_report(m).short() == []
    assert m.ratio == pytest.approx(1.2)
    lines = detail_lines(m)
    assert any("the watch delivering the event" in line for line in lines)
    assert any(line.split()[:2] == ["Deployment", "0.00"] for line in lines)
    figures = figures_json(m, build_report(m))
    json.dumps(figures)  # the JSON file can be written
    assert figures["scale_ratio_to_yardstick"] == 1.2
    assert figures["writes_per_resource"]["scale"]["per_resource_children_and_status"] == 3.0
    assert figures["writes_per_resource"]["scale"]["without_events"] == 30  # the total, as the audit log counted


@pytest.mark.parametrize(
    ("changes", "short"),
    [
        # 13.1 s against 10 s of pairs: past 1.3x
        ({"scale": ScaleResult(run_of(10, 13.1), audit_writes(ONE_EACH, 10), 14, {}, None, {})}, "scale: 10"),
        # the yardstick did not finish: no ratio, so not met
        ({"yard": PairRun(run_of(10, None), 9.0, None)}, "scale: 10"),
        (
            {"latency": LatencyResult([4.0, 10.5, 11.0, 12.0], Writes(), [], {}, {}, {})},
            "reaction latency p50 (4 samples)",
        ),
        ({"latency": LatencyResult([4.0, 5.0, 6.0, 31.0], Writes(), [], {}, {}, {})}, "reaction latency p99"),
        (
            {
                "scale": ScaleResult(
                    run_of(10, 12.0), audit_writes({**ONE_EACH, ("patch", "Service"): 4}, 10), 12, {}, None, {}
                )
            },
            "operator writes per new resource, children + status (scale run, 10 at once)",
        ),
        (
            {"scale": ScaleResult(run_of(10, 12.0), audit_writes(ONE_EACH, 10, conflicts=1), 12, {}, None, {})},
            "409 Conflict answers (scale run, 10 at once)",
        ),
        ({"idle_writes": audit_writes({("patch", "ModelDeployment/status"): 1}, 1)}, "operator writes in 60 s idle"),
        ({"rest": {"VmRSS": 61 * 1024, "VmHWM": 61 * 1024}}, "operator memory at rest, no resource (VmRSS)"),
        ({"at_scale": {"VmRSS": 90 * 1024, "VmHWM": 101 * 1024}}, "operator peak memory at 10 resources (VmHWM)"),
        ({"problem_lines": 2}, "operator log: lines that are not routine"),
    ],
)
def test_each_goal_is_judged(changes: dict[str, Any], short: str) -> None:
    found = verdicts(measurements(**changes))
    missed = [figure for figure, met in found.items() if met is False]
    assert [figure for figure in missed if figure.startswith(short)], found
    assert len(missed) == 1, missed


def test_events_do_not_count_toward_the_writes_goal_but_are_shown() -> None:
    with_events = audit_writes({**ONE_EACH, ("patch", "Deployment"): 2, ("create", "Event"): 3}, 10)
    m = measurements(scale=ScaleResult(run_of(10, 12.0), with_events, 12, {}, None, {}))
    row = next(row for row in build_report(m).rows if row.figure.startswith("operator writes per new resource"))
    assert (row.value, row.met) == ("4.00", True)
    assert row.note.startswith("Events 3.00 more")


def test_the_report_says_whose_cpu_a_run_took() -> None:
    m = measurements()
    lines = detail_lines(m)
    start = next(i for i, line in enumerate(lines) if line.startswith("CPU seconds by process"))
    table = lines[start + 2 : start + 8]
    assert table[0].split() == ["process", "yardstick", "scale", "run"]
    assert table[1].split() == ["benchmark", "4.0s", "4.0s"]
    assert table[2].split() == ["kube-apiserver", "40.0s", "55.0s"]
    assert table[3].split() == ["operator", "0.0s", "20.0s"]
    assert table[4].split() == ["all", "of", "them", "44.0s", "79.0s"]
    assert table[5].split()[-2:] == [f"{40.0 * (os.cpu_count() or 1):.1f}s", f"{50.0 * (os.cpu_count() or 1):.1f}s"]
