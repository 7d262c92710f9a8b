"""The faithfulness tables of docs/transformers.md, read from the evaluation.json files that `lrptext evaluate
--model FOLDER` writes (--protocol ali or deletion), kept as benchmarks/results/transformer-faithfulness/
DATASET-PROTOCOL.json.

    python scripts/transformer_faithfulness.py benchmarks/results/transformer-faithfulness/*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cost(run: dict, method: str) -> str:
    cost = run["cost"][method]
    return f"{cost['evaluations']:g} | {1e3 * cost['seconds_per_explanation']:.1f}"


def ali_table(run: dict) -> list[str]:
    """Generate and prune summaries per method, best generate AUAC first."""
    by = {(c["method"], c["case"]): c for c in run["curves"]}
    methods = sorted({m for m, _ in by}, key=lambda m: ((m, "generate") not in by,
                                                         -by.get((m, "generate"), {"auac": 0})["auac"]))
    lines = ["| method | generate AUAC | generate AUPC | prune AUAC | prune AUPC | prune AU-MSE | evaluations | "
             "ms per explanation |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        g, p = by.get((m, "generate")), by.get((m, "prune"))
        cells = [f"{g['auac']:.3f} | {g['aupc']:.3f}" if g else "- | -",
                 f"{p['auac']:.3f} | {p['aupc']:.3f} | {p['au_mse']:.4f}" if p else "- | - | -"]
        lines.append(f"| {m} | {' | '.join(cells)} | {_cost(run, m)} |")
    return lines


def deletion_table(run: dict) -> list[str]:
    """MoRF and LeRF summaries per method, best MoRF AOPC first."""
    by = {(c["method"], c["order"]): c for c in run["curves"]}
    methods = sorted({m for m, _ in by}, key=lambda m: ((m, "morf") not in by,
                                                         -by.get((m, "morf"), {"aopc": 0})["aopc"]))
    lines = ["| method | MoRF AOPC | MoRF accuracy AUC | LeRF AOPC | LeRF accuracy AUC | evaluations | "
             "ms per explanation |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        f, b = by.get((m, "morf")), by.get((m, "lerf"))
        cells = [f"{f['aopc']:.3f} | {f['accuracy_auc']:.3f}" if f else "- | -",
                 f"{b['aopc']:.3f} | {b['accuracy_auc']:.3f}" if b else "- | -"]
        lines.append(f"| {m} | {' | '.join(cells)} | {_cost(run, m)} |")
    return lines


def render(path: Path) -> str:
    run = json.loads(path.read_text())
    examples = ", ".join(f"{k} {v}" for k, v in run["examples"].items())
    head = [f"**{run['dataset']}, {run['protocol']}** ({path.name}): test accuracy {run['test_accuracy']:.4f} on "
            f"the first windows; documents: {examples}; {run['window']}.", ""]
    return "\n".join(head + (ali_table(run) if run["protocol"] == "ali" else deletion_table(run))) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    for path in parser.parse_args().files:
        print(render(path))


if __name__ == "__main__":
    main()
