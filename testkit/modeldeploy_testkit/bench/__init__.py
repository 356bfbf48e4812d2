"""The benchmarks (README.md beside this file): `python -m modeldeploy_testkit.bench [NAME [OPTIONS]] ...`."""

from __future__ import annotations

import argparse


def options(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of one benchmark, its module's docstring as the help."""
    return argparse.ArgumentParser(
        prog=f"python -m modeldeploy_testkit.bench {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
