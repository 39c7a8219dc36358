"""What the benchmark scripts share: the repository's paths and running one `train.py` command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# Every benchmark script imports this module before it imports TensorFlow: TensorFlow's C++
# start-up messages off, as in `train.py`, unless the environment sets the level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs"

# The library of this checkout, as `train.py` (run from ROOT) imports it: a benchmark that records
# a run's per-image bits must not read them with another copy of `hbnn_larq` (an editable install
# of a different checkout, a worktree).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def binary_sign(a):
    """±1 with larq's convention sign(0) = +1, as NumPy (the sign a binarized layer applies)."""
    import numpy as np

    return np.where(np.asarray(a) >= 0, 1.0, -1.0)


def printable_command(cmd: list[str]) -> str:
    """`cmd` as a user would type it from the repository root (`python train.py ...`)."""
    return " ".join("python" if c == sys.executable else os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c
                    for c in cmd)


@contextlib.contextmanager
def sigterm_as_exit():
    """Within this block SIGTERM raises SystemExit instead of ending Python on the spot, so
    `subprocess.call`'s cleanup kills the child: a benchmark stopped with `kill` (a queue, a job
    scheduler) must not leave its `train.py` training on, unseen, beside the next run."""
    def exit_(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_train(cmd: list[str], run_dir: Path, log_path: Path) -> tuple[int, dict | None]:
    """Run one `train.py` command from the repository root, its output appended to `log_path`.
    Stopping this process (SIGINT or SIGTERM) stops the run too; it resumes from its last epoch.

    # Returns
    The exit code, and the run's `results.json` if it completed (None otherwise).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log, sigterm_as_exit():
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    results_path = run_dir / "results.json"
    complete = code == 0 and results_path.is_file()
    return code, json.loads(results_path.read_text()) if complete else None
