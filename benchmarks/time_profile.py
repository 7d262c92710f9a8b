"""Where one explanation's time goes: torch.profiler over lrptext on one workload of benchmarks/workloads.py, the
top operators and kernels by self time (device time on a GPU). For the Speed and CUDA issues' profiling notes.

    python benchmarks/time_profile.py --workload "W3 VGG-16" --batch 32 --device cuda --composite epsilon
"""

from __future__ import annotations

import environment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import lrptext
from workloads import BOX, workloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W3 VGG-16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--composite", default="epsilon")
    parser.add_argument("--backend", default="cpp")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = False
    cuda = args.device.startswith("cuda")
    extra = (args.batch,) if args.workload.startswith("W3") and args.batch not in (1, 4) else ()
    found = [w for w in workloads(args.device, extra) if w[0] == args.workload and w[1] == args.batch]
    if not found:
        raise SystemExit(f"no workload {args.workload!r} at batch {args.batch}")
    _, _, model, x, _, _ = found[0]
    params = BOX if args.composite == "epsilon_gamma_box" else {}
    explainer = lrptext.Explainer(model, composite=args.composite, backend=args.backend, **params)
    for _ in range(2):  # warm-up: weights prepared, cuBLAS loaded
        explainer.explain(x)
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            explainer.explain(x)
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"{args.workload} batch {args.batch}, {args.composite}, backend {args.backend}, {args.device}; 3 calls")
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
