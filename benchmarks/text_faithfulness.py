"""Which explanation is most faithful for each kind of text classifier: every LRP composite and every baseline in
one table, word deletion on SpamAssassin's test split (the protocol of `lrptext evaluate`, docs/faithfulness.md),
with each method's cost per explanation. The text default (lrptext.text.classifier.DEFAULT_COMPOSITE) is chosen
from it.

    python benchmarks/text_faithfulness.py [--limit 200] [--models cnn,bag,mlp,svm]

A run of some of the models replaces their rows in the results and keeps the others' (same --limit, --seeds).

Models: the bundled CNN; a bag of embeddings and a TF-IDF MLP trained by `lrptext train` with their defaults
(seed 0; cached under the lrptext cache); a TF-IDF + linear SVM pipeline (scikit-learn, seeded). Writes
benchmarks/results/text_faithfulness.json and .md.
"""

from __future__ import annotations

import environment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse
import json
import time
from pathlib import Path

from lrptext.datasets import cache_dir
from lrptext.evaluation.experiment import evaluate_text

DATASET = "spam-assassin"
COMPOSITES = ["epsilon", "epsilon_plus", "epsilon_gamma", "epsilon_alpha2_beta1", "lrp0"]
BASELINES = ["gi", "ig", "occlusion", "sa", "random"]
MODELS = ("cnn", "bag", "mlp", "svm")
# how a deleted word leaves each model: the CNN's embedding is zeroed (the document keeps its length, as in Arras et
# al. 2017); the bag and the TF-IDF models have no per-position embedding, so the word is removed from the text
DELETION = {"cnn": "zero", "bag": "remove", "mlp": "remove", "svm": "remove"}
OUT = Path(__file__).resolve().parent / "results"


def model_path(name: str) -> str:
    """The model file of `name`, trained once into the cache where it is not bundled."""
    if name == "cnn":
        return "default"
    folder = cache_dir() / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    if name == "svm":
        path = folder / "spam-svm.joblib"
        if not path.exists():
            import joblib
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.pipeline import make_pipeline
            from sklearn.svm import LinearSVC

            from lrptext.datasets import load

            train = load(DATASET).train
            pipeline = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2), LinearSVC(C=1.0, random_state=0))
            pipeline.fit(list(train.texts), list(train.labels))  # classes_ = label indices, as evaluate expects
            joblib.dump(pipeline, path)
        return str(path)
    path = folder / f"spam-{name}.pt"
    if not path.exists():
        from lrptext.cli import main as cli

        if cli(["train", "--dataset", DATASET, "--arch", name, "--seed", "0", "--out", str(path), "--quiet"]) != 0:
            raise SystemExit(f"training the {name} model failed")
    return str(path)


def rows_for(name: str, limit: int, seeds: int) -> list[dict]:
    """One row per (method, composite): MoRF and LeRF summaries and the cost per explanation."""
    path = model_path(name)
    runs = [("lrp", c) for c in COMPOSITES] if name != "svm" else [("lrp", None)]
    runs += [(b, None) for b in BASELINES]
    rows = []
    for method, composite in runs:
        began = time.perf_counter()
        try:
            curves, context = evaluate_text(DATASET, path, methods=[method], orders=["morf", "lerf"], steps=25,
                                            deletion=DELETION[name], limit=limit, composite=composite, seeds=seeds,
                                            progress=False)
        except ValueError as refused:  # a baseline this kind of model cannot take (e.g. no embedding layer)
            rows.append({"model": name, "method": method, "composite": composite, "refused": str(refused)})
            print(f"{name:4s} {method:10s} refused: {refused}", flush=True)
            continue
        row = {"model": name, "method": method, "composite": composite, "model_kind": context["model_kind"],
               "deletion": DELETION[name],
               "test_accuracy": context["test_accuracy"], "examples": context["examples"],
               "seconds": round(time.perf_counter() - began, 1)}
        for c in curves:
            row[c.order] = {"aopc": c.aopc, "accuracy_auc": c.accuracy_auc}
            row["evaluations"] = c.evaluations
            row.setdefault("ms_per_explanation", {})[c.order] = 1e3 * c.seconds_per_explanation
        rows.append(row)
        print(f"{name:4s} {method:10s} {composite or '':22s} MoRF AOPC {row['morf']['aopc']:.3f}  LeRF AOPC "
              f"{row['lerf']['aopc']:.3f}  {row['ms_per_explanation']['morf']:.1f} ms", flush=True)
    return rows


def render(run: dict) -> str:
    env = run["environment"]
    lines = ["# Text faithfulness: every composite and baseline", "",
             f"{env['cpu']} ({env['cores']} cores), torch {env['torch']}, threads {env['torch_threads']}. Word "
             f"deletion on {DATASET}'s test split as `lrptext evaluate` does it (docs/faithfulness.md): relevance "
             f"for the true label, 25 words deleted (the CNN's embedding zeroed; for the other models removed from "
             "the text), "
             f"MoRF on {run['limit']} correctly classified test e-mails (seeded draw), LeRF on the misclassified "
             f"ones (at most {run['limit']}); random averaged over {run['seeds']} seeds. AOPC: the mean drop of the "
             "true label's logit over the deletion steps (MoRF: higher is more faithful; LeRF: lower). Cost: model "
             "evaluations (forward and backward passes) and milliseconds per explanation, a model's rows all "
             "measured in one run on this shared machine (ratios between its methods carry over, absolute times "
             "and comparisons across models less). Regenerate: "
             "`python benchmarks/text_faithfulness.py`.", ""]
    for model in run["models"]:
        refused = [r for r in run["rows"] if r["model"] == model and "refused" in r]
        rows = [r for r in run["rows"] if r["model"] == model and "refused" not in r]
        lines += [f"## {model}: {rows[0]['model_kind'].split(', composite')[0]}", "",
                  f"Test accuracy {rows[0]['test_accuracy']:.4f}; MoRF on {rows[0]['examples']['morf']}, LeRF on "
                  f"{rows[0]['examples']['lerf']} e-mails.", "",
                  "| method | composite | MoRF AOPC | MoRF accuracy AUC | LeRF AOPC | evaluations | ms per "
                  "explanation |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in sorted(rows, key=lambda r: -r["morf"]["aopc"]):
            lines.append(f"| {r['method']} | {r['composite'] or '-'} | {r['morf']['aopc']:.3f} | "
                         f"{r['morf']['accuracy_auc']:.3f} | {r['lerf']['aopc']:.3f} | {r['evaluations']} | "
                         f"{r['ms_per_explanation']['morf']:.1f} |")
        lines += [f"| {r['method']} | not applicable: {r['refused']} | | | | | |" for r in refused] + [""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    models = args.models.split(",")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; models: {', '.join(MODELS)}")
    rows = [row for name in models for row in rows_for(name, args.limit, args.seeds)]
    previous = args.out / "text_faithfulness.json"
    if previous.exists() and set(models) != set(MODELS):  # a subset run replaces those models' rows only
        kept = json.loads(previous.read_text())
        if (kept["limit"], kept["seeds"]) == (args.limit, args.seeds):
            rows = [r for r in kept["rows"] if r["model"] not in models] + rows
            models = [m for m in MODELS if m in models or m in kept["models"]]
    run = {"environment": environment.describe(), "limit": args.limit, "seeds": args.seeds, "models": models,
           "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text_faithfulness.json").write_text(json.dumps(run, indent=2) + "\n")
    (args.out / "text_faithfulness.md").write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
