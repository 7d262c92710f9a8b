"""Recurrent classifier benchmark: the bidirectional LSTM classifier of `lrptext train --arch lstm` (embedding 64,
64 hidden units per direction, 2 classes, packed sequences), explained by lrptext against the floor, torch's forward
+ the gradient of the target logit w.r.t. the embedding output, at batch 1 and 64 x 400 tokens (every token real).

    python benchmarks/recurrent.py [--rounds 7]

Timing: the methods take turns in every round (interleaved), medians over rounds, ratios to the floor of the same
run. Where the time goes: the sweep over time alone (the C++ kernel, both directions) and the forward pass alone,
timed at the same sizes. Peak memory: each method once in a fresh process (benchmarks/memory.py). Writes
benchmarks/results/recurrent.json and recurrent.md.
"""

from __future__ import annotations

import environment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402

import lrptext  # noqa: E402
from lrptext.kernels import recurrent  # noqa: E402
from lrptext.models.recurrent_models import LSTMClassifier  # noqa: E402
from memory import cpu_peak_extra_bytes  # noqa: E402

ROWS = {"b1x400": (1, 400), "b64x400": (64, 400)}
METHODS = ["forward+gradient", "lrptext (C++ sweep)", "lrptext (torch sweep)"]
VOCAB = 20_000


def model_and_ids(batch: int, length: int) -> tuple[LSTMClassifier, torch.Tensor]:
    torch.manual_seed(0)
    model = LSTMClassifier(VOCAB, 2).eval()
    ids = torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))
    return model, ids


def methods(model: LSTMClassifier, ids: torch.Tensor) -> dict:
    explainers = {"lrptext (C++ sweep)": lrptext.Explainer(model, composite="epsilon", backend="cpp"),
                  "lrptext (torch sweep)": lrptext.Explainer(model, composite="epsilon", backend="torch")}

    def floor() -> torch.Tensor:
        captured = {}

        def leaf(module, args, output):
            captured["e"] = output.detach().requires_grad_(True)
            return captured["e"]

        handle = model.embedding.register_forward_hook(leaf)
        try:
            with torch.enable_grad():
                logits = model(ids)
                target = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
                (grad,) = torch.autograd.grad(target, captured["e"])
        finally:
            handle.remove()
        return grad

    table = {"forward+gradient": floor}
    for name, explainer in explainers.items():
        table[name] = lambda explainer=explainer: explainer.explain(ids).relevance
    return table


def parts(model: LSTMClassifier, ids: torch.Tensor, rounds: int) -> dict[str, float]:
    """Medians (ms) of the forward pass alone and of the C++ sweep alone (both directions, as one explanation
    runs it)."""
    B, T, H = ids.shape[0], ids.shape[1], model.rnn.hidden_size
    g = torch.Generator().manual_seed(2)
    arrays = [torch.rand(B, T, H, generator=g) for _ in range(5)]
    w = torch.randn(H, H, generator=g) / H ** 0.5
    lengths = torch.full((B,), T, dtype=torch.int64)
    last = torch.zeros(B, H)

    def sweep():
        for reverse in (False, True):
            recurrent.sweep(True, *arrays[:4], w, arrays[4], last, lengths, scale=None, bias=None, epsilon=1e-6,
                            bias_factor=0.0, inputs=model.embedding.embedding_dim, reverse=reverse)

    def forward():
        with torch.no_grad():
            model(ids)

    out = {}
    for name, fn in (("forward", forward), ("sweep (C++, both directions)", sweep)):
        fn()
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = 1e3 * statistics.median(times)
    return out


def timed(row: str, rounds: int) -> dict:
    model, ids = model_and_ids(*ROWS[row])
    table = methods(model, ids)
    for fn in table.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {m: [] for m in table}
    for _ in range(rounds):
        for name, fn in table.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    medians = {m: 1e3 * statistics.median(v) for m, v in times.items()}
    e = lrptext.Explainer(model, composite="epsilon", backend="cpp", bias_factor=1.0).explain(ids)
    torch_e = lrptext.Explainer(model, composite="epsilon", backend="torch", bias_factor=1.0).explain(ids)
    return {"batch": ROWS[row][0], "tokens": ROWS[row][1], "median_ms": medians,
            "ratio": {m: medians[m] / medians["forward+gradient"] for m in medians},
            "parts_ms": parts(model, ids, rounds),
            "check": {"max_abs_delta_bias_factor_1": float(e.delta.abs().max()),
                      "cpp_vs_torch_max_abs": float((e.relevance - torch_e.relevance).abs().max())}}


def peak_child(row: str, method: str) -> None:
    model, ids = model_and_ids(*ROWS[row])
    fn = methods(model, ids)[method]
    fn()
    print(json.dumps(cpu_peak_extra_bytes(fn) / 2 ** 20))


def peaks(row: str) -> dict[str, float]:
    out = {}
    for method in METHODS:
        child = subprocess.run([sys.executable, __file__, "--peak-memory-of", json.dumps([row, method])],
                               capture_output=True, text=True, check=True)
        out[method] = json.loads(child.stdout.strip().splitlines()[-1])
    return out


def render(run: dict) -> str:
    env = run["environment"]
    lines = ["# Recurrent classifier: LRP against forward + gradient\n",
             f"Generated by `python benchmarks/recurrent.py` ({env['cpu']}, {env['torch_threads']} threads, torch "
             f"{env['torch']}). The model: `lrptext train --arch lstm`'s bidirectional LSTM (embedding 64, 64 hidden "
             "units per direction, packed sequences, last hidden states -> linear), seeded random weights, float32; "
             "every token real. Medians of interleaved rounds; ratios to the floor of the same run.\n",
             "| row | forward + gradient (ms) | lrptext, C++ sweep (ms) | ratio | lrptext, torch sweep (ms) | ratio | "
             "forward alone (ms) | sweep alone, C++ (ms) | peak MiB: floor / C++ / torch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row, r in run["rows"].items():
        m, q, p = r["median_ms"], r["ratio"], r["parts_ms"]
        mem = r.get("peak_mib", {})
        memory = " / ".join(f"{mem[k]:.1f}" for k in METHODS) if mem else "-"
        lines.append(f"| {row} | {m['forward+gradient']:.2f} | {m['lrptext (C++ sweep)']:.2f} | "
                     f"{q['lrptext (C++ sweep)']:.2f}x | {m['lrptext (torch sweep)']:.2f} | "
                     f"{q['lrptext (torch sweep)']:.2f}x | {p['forward']:.2f} | "
                     f"{p['sweep (C++, both directions)']:.2f} | {memory} |")
    lines.append("")
    for row, r in run["rows"].items():
        lines.append(f"- {row}: with bias_factor 1 the largest |sum of relevance - logit| is "
                     f"{r['check']['max_abs_delta_bias_factor_1']:.2e}; C++ and torch sweeps differ by at most "
                     f"{r['check']['cpp_vs_torch_max_abs']:.2e}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--peak-memory-of")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    if args.peak_memory_of:
        peak_child(*json.loads(args.peak_memory_of))
        return
    torch.set_grad_enabled(True)
    run = {"environment": environment.describe(), "rows": {}}
    for row in ROWS:
        run["rows"][row] = timed(row, args.rounds)
        if not args.no_memory:
            run["rows"][row]["peak_mib"] = peaks(row)
        print(row, json.dumps(run["rows"][row]), file=sys.stderr)
    results = HERE / "results"
    (results / "recurrent.json").write_text(json.dumps(run, indent=1) + "\n")
    (results / "recurrent.md").write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
