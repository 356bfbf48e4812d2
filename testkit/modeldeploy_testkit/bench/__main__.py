"""Run the benchmarks: all of `make bench` (scale, canary, gitops, analysis, in that order), or the ones named.

    .venv/bin/python -m modeldeploy_testkit.bench                          # scale, canary, gitops, analysis
    .venv/bin/python -m modeldeploy_testkit.bench canary gitops            # only these, in this order
    .venv/bin/python -m modeldeploy_testkit.bench scale --quick canary --samples 3
    .venv/bin/python -m modeldeploy_testkit.bench cluster --skip-up        # `make bench-cluster`
    .venv/bin/python -m modeldeploy_testkit.bench scale --help             # one benchmark's options

Options after a name belong to that benchmark. The first one that fails ends the run with its exit status, as
`make` stopped at the first failing command. README.md beside this file says what each figure means.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# Name -> what it measures. The ones `make bench` runs come first, in its order.
BENCHMARKS = {
    "scale": "the operator: N ModelDeployments Ready against bare pairs, reaction latency, its stages, writes, memory",
    "canary": "how exact timed pauses are, and how fast a spec revert gets back to 100% stable",
    "gitops": "how fast a `git revert` of a version brings the serving version back, through Argo CD",
    "analysis": "how fast canary analysis takes a failing version out of traffic (as root)",
    "cluster": "the control plane's own yardstick (`make bench-cluster`; it restarts the control plane)",
    "runtime": "what the model server adds to a small model's latency (run by `scale` at its end)",
}
DEFAULT = ["scale", "canary", "gitops", "analysis"]


def plan(argv: list[str]) -> list[tuple[str, list[str]]]:
    """The benchmarks to run, each with the arguments that follow its name."""
    runs: list[tuple[str, list[str]]] = []
    for word in argv:
        if word in BENCHMARKS:
            runs.append((word, []))
        elif runs:
            runs[-1][1].append(word)
        else:
            raise SystemExit(f"unknown benchmark {word!r}: choose from {', '.join(BENCHMARKS)} (options follow a name)")
    return runs or [(name, []) for name in DEFAULT]


def usage() -> str:
    lines = [__doc__ or "", "Benchmarks:"]
    lines += [f"  {name:<10}{what}" for name, what in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    for name, arguments in plan(words):
        entry: Callable[[list[str]], int] = importlib.import_module(f"modeldeploy_testkit.bench.{name}").main
        status = entry(arguments)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
