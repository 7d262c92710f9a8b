"""What a benchmark result depends on: CPU, threads, versions, OpenMP wait policy. Imported first by every
benchmark so that OMP_WAIT_POLICY=PASSIVE is set before torch starts its pool (docs/performance.md, "Measuring on a
shared machine": with the default spin-wait, 2-thread timings there jump to scheduler ticks)."""

from __future__ import annotations

import os
import platform

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def describe() -> dict:
    import numpy
    import torch

    import lrptext

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "lrptext_threads": lrptext.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "lrptext": lrptext.__version__,
        "build": lrptext.build_info(),
    }
