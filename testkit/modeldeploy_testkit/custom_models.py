"""Small `custom`-format models (runtime/README.md) whose behaviour a canary analysis must judge, and their traffic.

Each model is one Python file with a class `Model` whose `predict(X)` the runtime calls once per request with the
rows as an ndarray. All of them answer from the first feature of each row, so the same requests give outputs that
are equal (a healthy version), equal but sometimes failed (a flaky one), or moved (a shifted one).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from modeldeploy_testkit.agent_pods import Artifact

ECHO_FIRST_FEATURE = '''
import numpy as np


class Model:
    """Answers each row's first feature."""

    def predict(self, X):
        return np.asarray(X, dtype=float)[:, 0]
'''

FAILS_EVERY_FIFTH_CALL = '''
import threading

import numpy as np


class Model:
    """Answers each row's first feature, but every 5th call raises: 20% of the requests fail."""

    def __init__(self):
        # The runtime's worker serves requests on several threads: count under a lock, so exactly 1 in 5 fails.
        self._lock = threading.Lock()
        self._calls = 0

    def predict(self, X):
        with self._lock:
            self._calls += 1
            call = self._calls
        if call % 5 == 0:
            raise RuntimeError(f"call {call} fails on purpose: every 5th call does")
        return np.asarray(X, dtype=float)[:, 0]
'''

SLOW_ANSWERS = '''
import time

import numpy as np


class Model:
    """Answers each row's first feature, after 5 seconds."""

    def predict(self, X):
        time.sleep(5)
        return np.asarray(X, dtype=float)[:, 0]
'''

SHIFTED_OUTPUTS = '''
import numpy as np


class Model:
    """The same requests, moved outputs: half the first feature plus one half, so [0, 1] lands in [0.5, 1]."""

    def predict(self, X):
        return np.asarray(X, dtype=float)[:, 0] * 0.5 + 0.5
'''

# Ten rows per request, first features spread over (0, 1) in the middle of the runtime's output buckets (0.1 apart):
# every request adds ten observations to the prediction histogram, spread evenly, so the echo model's output
# distribution is uniform and the shifted model's is that squeezed into (0.5, 1) (a KS distance of 0.5).
SPREAD_ROWS = [[round(0.05 + 0.1 * index, 2), 1.0] for index in range(10)]
PAYLOAD: dict[str, Any] = {"data": {"ndarray": SPREAD_ROWS}}


def write_custom_model(directory: Path, name: str, source: str) -> Artifact:
    """`source` written as `<directory>/<name>.py`: an artifact of format custom, pinned by its digest (the SHA-256
    of the file's bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(source.lstrip())
    return Artifact(path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest(), format="custom")
