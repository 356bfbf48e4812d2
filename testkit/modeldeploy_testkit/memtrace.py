"""Run `modeldeploy` with Python's allocation tracing, to say where the operator's memory goes.

    python -m modeldeploy_testkit.memtrace REPORT -- run --namespace ... (the arguments of `modeldeploy`)

tracemalloc records every allocation Python makes (not the interpreter's own arenas, not C libraries' mallocs,
which is why the figures add up to less than the resident size). A thread takes a snapshot every second and keeps
the one taken when the traced total was largest; REPORT gets that snapshot grouped by file and by line, written
again at most every REPORT_EVERY_SECONDS while a new peak comes (grouping a large snapshot takes seconds, and a
process stopped with SIGKILL runs no exit hook), and once more at exit with the snapshot at exit beside it.
Tracing slows the process down (about 2x) and costs memory of its own, so a benchmark run under it says where
memory goes, never how much the operator needs.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import tracemalloc
from pathlib import Path

SNAPSHOT_EVERY_SECONDS = 1.0
REPORT_EVERY_SECONDS = 15.0
TOP_LINES = 40
FRAMES = 4


def _grouped(snapshot: tracemalloc.Snapshot, key: str, limit: int) -> list[str]:
    ignored = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    stats = snapshot.filter_traces(ignored).statistics(key)
    total = sum(stat.size for stat in stats)
    lines = [f"  total {total / 2**20:.1f} MiB in {sum(stat.count for stat in stats):,} blocks"]
    for stat in stats[:limit]:
        frame = stat.traceback[0]
        lines.append(f"  {stat.size / 2**20:8.2f} MiB {stat.count:9,} blocks  {frame.filename}:{frame.lineno}")
    return lines


class PeakKeeper:
    def __init__(self, report: Path) -> None:
        self.report = report
        self.peak: tracemalloc.Snapshot | None = None
        self.peak_size = 0
        self.reported_size = 0
        self.reported_at = 0.0
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def watch(self) -> None:
        while not self.stopped.wait(SNAPSHOT_EVERY_SECONDS):
            current, _ = tracemalloc.get_traced_memory()
            if current > self.peak_size:
                self.peak_size = current
                self.peak = tracemalloc.take_snapshot()
            due = time.monotonic() - self.reported_at >= REPORT_EVERY_SECONDS
            if due and self.peak_size > self.reported_size:
                self.write_peak()

    def _peak_lines(self) -> list[str]:
        _, traced_peak = tracemalloc.get_traced_memory()
        lines = [f"traced peak {traced_peak / 2**20:.1f} MiB (between snapshots); largest snapshot:"]
        if self.peak is not None:
            lines += ["by file:", *_grouped(self.peak, "filename", TOP_LINES)]
            lines += ["by line:", *_grouped(self.peak, "lineno", TOP_LINES)]
        return lines

    def write_peak(self) -> None:
        with self.lock:
            size = self.peak_size
            self.report.write_text("\n".join(self._peak_lines()) + "\n")
            self.reported_size, self.reported_at = size, time.monotonic()

    def write_at_exit(self) -> None:
        self.stopped.set()
        with self.lock:
            at_exit = tracemalloc.take_snapshot()
            lines = self._peak_lines()
            lines += ["at exit, by file:", *_grouped(at_exit, "filename", TOP_LINES)]
            lines += ["at exit, by line:", *_grouped(at_exit, "lineno", TOP_LINES)]
            self.report.write_text("\n".join(lines) + "\n")


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    report = Path(sys.argv[1])
    tracemalloc.start(FRAMES)
    keeper = PeakKeeper(report)
    threading.Thread(target=keeper.watch, name="memtrace", daemon=True).start()
    atexit.register(keeper.write_at_exit)
    from modeldeploy.cli.main import main as modeldeploy_main

    sys.argv = ["modeldeploy", *sys.argv[3:]]
    return modeldeploy_main() or 0


if __name__ == "__main__":
    sys.exit(main())
