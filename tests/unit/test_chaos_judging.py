"""How the failure suite judges a resource from its body: acted on by the operator, converged, and the figure that
says whether every change was acted on in time. Pure functions over manifests; no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy_testkit.chaos.common import acted_figure, is_acted_on, is_converged


def body(generation: int, spec_version: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "fraud", "generation": generation},
        "spec": {"model": {"version": spec_version}},
        "status": status,
    }


@pytest.mark.parametrize(
    ("resource", "acted", "converged"),
    [
        # The new revision is the canary, pods not Ready yet: acted on, not converged.
        (
            body(
                2,
                "2.0.0",
                observedGeneration=2,
                phase="Progressing",
                stable={"version": "1.0.0"},
                canary={"version": "2.0.0"},
            ),
            True,
            False,
        ),
        # Status of the previous generation: the operator has not seen the edit.
        (
            body(
                3,
                "3.0.0",
                observedGeneration=2,
                phase="Progressing",
                stable={"version": "1.0.0"},
                canary={"version": "2.0.0"},
            ),
            False,
            False,
        ),
        # This generation, but naming another version: not acted on (an edit lost would look like this).
        (body(2, "2.0.0", observedGeneration=2, phase="Healthy", stable={"version": "1.0.0"}), False, False),
        # Promoted and Healthy.
        (body(2, "2.0.0", observedGeneration=2, phase="Healthy", stable={"version": "2.0.0"}), True, True),
        # No status yet.
        (body(1, "1.0.0"), False, False),
    ],
)
def test_acted_on_and_converged(resource: dict[str, Any], acted: bool, converged: bool) -> None:
    assert (is_acted_on(resource), is_converged(resource)) == (acted, converged)


def test_the_acted_figure_fails_on_a_change_never_acted_on_even_when_the_others_were_quick() -> None:
    assert acted_figure("acted", [1.0, 2.0], 2, 60.0).ok
    missing = acted_figure("acted", [1.0, 2.0], 3, 60.0)
    assert not missing.ok
    assert "2 of 3" in missing.note
    assert not acted_figure("acted", [1.0, 61.0], 2, 60.0).ok
