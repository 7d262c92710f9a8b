"""The faithfulness tables of docs/transformers.md and docs/recurrent.md, read from the evaluation.json files that
`lrptext evaluate --model ...` writes (--protocol ali or deletion), kept under benchmarks/results/
(transformer-faithfulness/DATASET-PROTOCOL.json, recurrent-faithfulness/DATASET-ARCH.json).

    python scripts/faithfulness_tables.py benchmarks/results/transformer-faithfulness/*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cost(run: dict, method: str) -> str:
    cost = run["cost"][method]
    return f"{cost['evaluations']:g} | {1e3 * cost['seconds_per_explanation']:.1f}"


# Each protocol's columns: (heading, curve case, summary, format); the first column orders the rows.
COLUMNS = {
    "ali": [("generate AUAC", "generate", "auac", ".3f"), ("generate AUPC", "generate", "aupc", ".3f"),
            ("prune AUAC", "prune", "auac", ".3f"), ("prune AUPC", "prune", "aupc", ".3f"),
            ("prune AU-MSE", "prune", "au_mse", ".4f")],
    "deletion": [("MoRF AOPC", "morf", "aopc", ".3f"), ("MoRF accuracy AUC", "morf", "accuracy_auc", ".3f"),
                 ("LeRF AOPC", "lerf", "aopc", ".3f"), ("LeRF accuracy AUC", "lerf", "accuracy_auc", ".3f")],
}


def table(run: dict) -> list[str]:
    """The protocol's summaries per method, best first by its first column; methods without it last."""
    columns = COLUMNS[run["protocol"]]
    case_key = "case" if run["protocol"] == "ali" else "order"
    by = {(c["method"], c[case_key]): c for c in run["curves"]}
    _, first_case, first, _ = columns[0]
    methods = sorted({m for m, _ in by}, key=lambda m: ((m, first_case) not in by,
                                                        -by.get((m, first_case), {first: 0})[first]))
    lines = ["| method | " + " | ".join(h for h, *_ in columns) + " | evaluations | ms per explanation |",
             "|---|" + "---:|" * (len(columns) + 2)]
    for m in methods:
        cells = [format(by[m, case][key], fmt) if (m, case) in by else "-" for _, case, key, fmt in columns]
        lines.append(f"| {m} | {' | '.join(cells)} | {_cost(run, m)} |")
    return lines


def render(path: Path) -> str:
    run = json.loads(path.read_text())
    examples = ", ".join(f"{k} {v}" for k, v in run["examples"].items())
    if "window" in run:  # a Hugging Face model folder
        title, read = "", f"on the first windows; documents: {examples}; {run['window']}"
    else:  # a model file of `lrptext train`: its architecture names the table
        title, read = f", {run['model_kind'].split(' (')[0]}", f"({run['model_kind']}); documents: {examples}"
    head = [f"**{run['dataset']}, {run['protocol']}{title}** ({path.name}): test accuracy "
            f"{run['test_accuracy']:.4f} {read}.", ""]
    return "\n".join(head + table(run)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    for path in parser.parse_args().files:
        print(render(path))


if __name__ == "__main__":
    main()
