"""Kernel micro-benchmark: the C++ kernels against the same maths written in torch (lrptext's torch backend),
and against torch's forward + input-gradient of the same layer (the cost floor), as same-run ratios.

    python benchmarks/kernels.py [--rounds 15] [--out benchmarks/results]

Writes kernels.json and kernels.md to the output folder.
"""

from __future__ import annotations

import environment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from lrptext import kernels as K
from lrptext.rules import Epsilon, Gamma, ZPlus
from timing import interleaved

RULES = {"epsilon": Epsilon(), "zplus": ZPlus(), "gamma": Gamma()}


def layer_cases() -> dict[str, dict]:
    """Each case: the layer's forward, its inputs, and a relevance call per backend and rule."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    cases = {}
    x, w, b = rand(64, 2048).relu(), rand(1024, 2048) / 45, rand(1024) / 10
    cases["dense 64x2048->1024"] = dict(
        forward=lambda v: F.linear(v, w, b), x=x,
        relevance=lambda r, z, rule, backend: K.dense_relevance(x, w, b, r, z=z, rule=rule, backend=backend))
    x1, w1, b1 = rand(64, 300, 400), rand(100, 300, 5) / 40, rand(100) / 10  # W1's conv on embeddings
    cases["conv1d 64x300x400 k5->100"] = dict(
        forward=lambda v: F.conv1d(v, w1, b1), x=x1,
        relevance=lambda r, z, rule, backend: K.conv1d_relevance(x1, w1, b1, r, z=z, rule=rule, backend=backend,
                                                                 reduce_channels=True))
    x2, w2, b2 = rand(4, 64, 56, 56).relu(), rand(64, 64, 3, 3) / 24, rand(64) / 10
    cases["conv2d 4x64x56x56 k3->64"] = dict(
        forward=lambda v: F.conv2d(v, w2, b2, padding=1), x=x2,
        relevance=lambda r, z, rule, backend: K.conv2d_relevance(x2, w2, b2, r, z=z, padding=1, rule=rule,
                                                                 backend=backend))
    return cases


def run(rounds: int) -> list[dict]:
    rows = []
    for name, case in layer_cases().items():
        z = case["forward"](case["x"])
        r = z.relu()

        def floor(case=case, r=r):
            v = case["x"].clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(case["forward"](v), v, r)
            return grad

        methods = {"forward+gradient": floor}
        for rule_name, rule in RULES.items():
            zz = z if rule_name != "zplus" else None
            for backend in ("cpp", "torch"):
                methods[f"{rule_name}/{backend}"] = (
                    lambda case=case, r=r, zz=zz, rule=rule, backend=backend: case["relevance"](r, zz, rule, backend))
        times = interleaved(methods, rounds=rounds)
        base = times["forward+gradient"]["median_s"]
        for rule_name in RULES:
            cpp, ref = times[f"{rule_name}/cpp"]["median_s"], times[f"{rule_name}/torch"]["median_s"]
            rows.append({"layer": name, "rule": rule_name, "cpp_ms": 1e3 * cpp, "torch_ms": 1e3 * ref,
                         "floor_ms": 1e3 * base, "torch_over_cpp": ref / cpp, "cpp_over_floor": cpp / base,
                         "spread_ms": {k: [1e3 * v["p10_s"], 1e3 * v["p90_s"]] for k, v in times.items()
                                       if k.startswith(rule_name) or k == "forward+gradient"}})
    # the fused embedding kernel against its torch expression
    ids = torch.randint(0, 20000, (64, 400), generator=torch.Generator().manual_seed(1))
    rel = torch.randn(64, 400, 300)
    times = interleaved({
        "cpp": lambda: K.embedding_relevance(ids, rel, num_embeddings=20000, padding_idx=0, backend="cpp"),
        "torch": lambda: K.embedding_relevance(ids, rel, num_embeddings=20000, padding_idx=0, backend="torch"),
    }, rounds=rounds)
    cpp, ref = times["cpp"]["median_s"], times["torch"]["median_s"]
    rows.append({"layer": "embedding 64x400x300 (sum over D)", "rule": "-", "cpp_ms": 1e3 * cpp,
                 "torch_ms": 1e3 * ref, "floor_ms": None, "torch_over_cpp": ref / cpp, "cpp_over_floor": None})
    return rows


def markdown(rows: list[dict], env: dict) -> str:
    lines = [
        "# Kernel micro-benchmark",
        "",
        f"CPU: {env['cpu']} ({env['cores']} cores), threads: torch {env['torch_threads']}, lrptext "
        f"{env['lrptext_threads']}, OMP_WAIT_POLICY={env['omp_wait_policy']}, torch {env['torch']}, lrptext "
        f"{env['lrptext']}. Medians of interleaved rounds in one process, float32.",
        "",
        "`torch/cpp` > 1 means the C++ kernel is faster than the same maths in torch; `cpp/floor` is the kernel's "
        "time over torch's forward + input-gradient of the layer (ε gets the forward's z, z⁺ recomputes its own).",
        "",
        "| layer | rule | cpp ms | torch ms | floor ms | torch/cpp | cpp/floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        floor = "-" if r["floor_ms"] is None else f"{r['floor_ms']:.2f}"
        ratio = "-" if r["cpp_over_floor"] is None else f"{r['cpp_over_floor']:.2f}"
        lines.append(f"| {r['layer']} | {r['rule']} | {r['cpp_ms']:.2f} | {r['torch_ms']:.2f} | {floor} | "
                     f"{r['torch_over_cpp']:.2f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    env = environment.describe()
    rows = run(args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    table = markdown(rows, env)
    (args.out / "kernels.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
