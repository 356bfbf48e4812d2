"""Run the failure suite: every case (`make chaos`), or the ones named, full size or `--short`.

    .venv/bin/python -m modeldeploy_testkit.chaos                    # every case, full size, a random seed
    .venv/bin/python -m modeldeploy_testkit.chaos R1 R6 --seed 42    # only these, repeating a printed seed
    .venv/bin/python -m modeldeploy_testkit.chaos --short            # the short versions `make test` runs

Prints a table of figures beside their goals and exits 1 when one falls short. The figures also go to
.cluster/chaos/<time>/figures.json, with each operator's log beside them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from types import ModuleType

from modeldeploy_testkit.chaos.common import CaseReport, ChaosRun, log, new_run, save, table

# Case -> module, in the order `make chaos` runs them (the soak last: it is the longest).
CASES = {
    "R1": "kill",
    "R3": "watch_gap",
    "R4": "apiserver",
    "R5": "editors",
    "R6": "failover",
    "R8": "prometheus",
    "R10": "soak",
}


def case_module(case: str) -> ModuleType:
    return importlib.import_module(f"modeldeploy_testkit.chaos.{CASES[case]}")


def run_case(run: ChaosRun, case: str) -> CaseReport:
    """One case, whatever happens in it: an exception is a failed case with its message, not the end of the run."""
    module = case_module(case)
    log(f"== {case} {module.TITLE} (seed {run.seed}{', short' if run.short else ''})")
    started = time.monotonic()
    report = CaseReport(case=case, title=module.TITLE, seed=run.seed, short=run.short, seconds=0.0)
    try:
        report.figures = list(module.run(run))
    # Any exception: the table says which case broke and how, and the other cases still run.
    except Exception as error:
        traceback.print_exc()
        report.error = f"{type(error).__name__}: {error}"[:300]
    report.seconds = time.monotonic() - started
    return report


def run_short(case: str, seed: int | None = None) -> CaseReport:
    """The short version of one case, as `make test` runs it: its table printed, its report returned."""
    run = new_run(seed, short=True)
    report = run_case(run, case)
    print(table([report]))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy_testkit.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"cases to run (default all): {', '.join(CASES)}")
    parser.add_argument("--seed", type=int, help="repeat a run: the seed it printed (default: a random one)")
    parser.add_argument("--short", action="store_true", help="the short versions, as `make test` runs them")
    args = parser.parse_args(argv)
    unknown = [case for case in args.cases if case.upper() not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}: choose from {', '.join(CASES)}")
    chosen = [case.upper() for case in args.cases] or list(CASES)
    run = new_run(args.seed, args.short)
    log(f"seed {run.seed}; logs in {run.directory}")
    reports = [run_case(run, case) for case in chosen]
    print()
    print(table(reports))
    print(f"\nseed {run.seed}; figures in {save(reports, run.directory)}")
    return 0 if all(report.ok for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
