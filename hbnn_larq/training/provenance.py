"""What `results.json` and the benchmarks record about where a result was measured."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import larq as lq
import numpy as np
import tensorflow as tf

from hbnn_larq.precision import cpu_bf16_flags


def versions() -> dict:
    """The versions of Python and of the packages a result depends on."""
    import larq_compute_engine as lce
    import tf_keras

    import hbnn_larq

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
            "larq": lq.__version__, "larq_compute_engine": getattr(lce, "__version__", "unknown"),
            "numpy": np.__version__, "hbnn_larq": hbnn_larq.__version__}


def machine() -> dict:
    """The CPU model, the usable cores, the CPU's bfloat16 flags, the platform and the host name."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": cpu, "cores": usable, "bf16_cpu_flags": cpu_bf16_flags(), "platform": platform.platform(),
            "hostname": platform.node()}
