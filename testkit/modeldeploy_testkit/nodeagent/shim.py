"""Container shim: runs one container process, forwards signals to it and records how it ended.

    python -I shim.py STATE_PREFIX -- COMMAND [ARGS...]

The node agent starts it inside the pod's network namespace as the leader of a new session, with the container's
environment, working directory and log file as stdout/stderr. It writes STATE_PREFIX.pid (the container
process's PID and start time) once the process runs and STATE_PREFIX.exit (exit code, signal, times) when it
ends, then kills whatever is left of its process group, as the end of a container's PID namespace would. It
outlives the agent, so a restarted agent can adopt the container and still learn its exit code.

Standard library only, and nothing imported from the agent: it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(path: Path, payload: dict[str, object]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload))
    os.replace(partial, path)


def _start_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: shim.py STATE_PREFIX -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    prefix = Path(argv[0])
    command = argv[2:]
    started_at = _now()
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as error:
        print(f"shim: cannot start {command[0]}: {error}", file=sys.stderr, flush=True)
        ended = {"exitCode": 128, "signal": 0, "reason": "StartError", "message": str(error)}
        _write(Path(f"{prefix}.exit"), {**ended, "startedAt": started_at, "finishedAt": _now()})
        return 128

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    _write(Path(f"{prefix}.pid"), {"pid": child.pid, "startTicks": _start_ticks(child.pid), "startedAt": started_at})
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    finished_at = _now()
    sig = -code if code < 0 else 0
    exit_code = 128 + sig if sig else code
    _write(
        Path(f"{prefix}.exit"),
        {"exitCode": exit_code, "signal": sig, "startedAt": started_at, "finishedAt": finished_at},
    )
    # The container is over: nothing it started may outlive it (the shim itself goes too).
    if os.getpgrp() == os.getpid():
        time.sleep(0.05)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
