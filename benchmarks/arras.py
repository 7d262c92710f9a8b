"""Arras et al. (2017), "What is relevant in a text document?", reproduced with lrptext: word deletion on
20 Newsgroups for a CNN and a TF-IDF linear SVM, LRP against sensitivity analysis and random deletion; the cost
of each method per explanation on the same documents; and pixel flipping on the bundled Fashion-MNIST CNN for
three LRP composites against random.

    lrptext data fetch 20newsgroups
    python benchmarks/arras.py --cnn 20ng-cnn.pt      # the CNN of docs/20newsgroups.md (trained if missing)

Writes benchmarks/results/faithfulness.json, docs/faithfulness.md and the figures docs/faithfulness-*.png.
Protocol (as in the paper): relevance for the true class, computed once on the intact document; MoRF deletion
on correctly classified test documents, LeRF on misclassified ones, up to 25 words; the CNN's deleted words get
the zero embedding, the SVM's are removed from the text before TF-IDF is computed again.
"""

from __future__ import annotations

import environment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lrptext.datasets import cache_dir, load
from lrptext.evaluation.experiment import evaluate_images, evaluate_text
from lrptext.evaluation.report import plot
from lrptext.evaluation.words import word_deletion
from lrptext.text.classifier import TextClassifier

ROOT = Path(__file__).resolve().parent.parent
CNN_RECIPE = ["--dataset", "20newsgroups", "--arch", "cnn", "--dim", "50", "--channels", "100", "--vectors",
              "glove-6b-50d", "--learning-rate", "2e-3", "--vocab-size", "30000", "--seed", "0", "--quiet"]


def train_cnn(path: Path) -> None:
    print(f"training the CNN of docs/20newsgroups.md into {path} (about 10 minutes on 2 cores)", flush=True)
    subprocess.run([sys.executable, "-m", "lrptext.cli", "train", *CNN_RECIPE, "--out", str(path)], check=True)


def train_svm(path: Path) -> None:
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    data = load("20newsgroups")
    texts, labels = data.train.texts + data.validation.texts, data.train.labels + data.validation.labels
    pipeline = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2), LinearSVC(C=1.0, dual="auto"))
    pipeline.fit(texts, labels)
    joblib.dump(pipeline, path)


def costs(model: Path, documents: int, methods: list[str]) -> list[dict]:
    """Explanations per second and model evaluations per explanation of each method on the same documents."""
    classifier = TextClassifier.load(model)
    test = load("20newsgroups").test
    idx = np.random.default_rng(1).permutation(len(test.texts))[:documents]
    texts, labels = [test.texts[i] for i in idx], [test.labels[i] for i in idx]
    rows = []
    for method in methods:
        curve = word_deletion(classifier, texts, labels, methods=(method,), steps=1, composite="epsilon",
                              progress=False)[0]
        rows.append({"method": method, "documents": documents, "evaluations": curve.evaluations,
                     "seconds_per_explanation": curve.seconds_per_explanation,
                     "explanations_per_second": 1 / curve.seconds_per_explanation})
        print("cost:", rows[-1], flush=True)
    return rows


def write_doc(text: str) -> None:
    """docs/faithfulness.md: this benchmark's part, then the sections other scripts write into it (each between
    HTML comment markers, such as scripts/image_docs.py's Grad-CAM section), kept as they are."""
    path = ROOT / "docs" / "faithfulness.md"
    doc = path.read_text() if path.exists() else ""
    kept = doc[doc.index("<!-- "):] if "<!-- " in doc else ""
    path.write_text(text.rstrip("\n") + ("\n\n" + kept if kept else "\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn", type=Path, default=cache_dir() / "models" / "20ng-cnn.pt")
    parser.add_argument("--svm", type=Path, default=cache_dir() / "models" / "20ng-tfidf-svm.joblib")
    parser.add_argument("--limit", type=int, default=500, help="documents per order (drawn at random, seeded)")
    parser.add_argument("--images", type=int, default=500, help="Fashion-MNIST test images for pixel flipping")
    parser.add_argument("--render", action="store_true", help="only rewrite docs/faithfulness.md from the JSON")
    args = parser.parse_args()
    if args.render:
        results = json.loads((ROOT / "benchmarks" / "results" / "faithfulness.json").read_text())
        write_doc(render(results))
        return
    for path, train in ((args.cnn, train_cnn), (args.svm, train_svm)):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            train(path)
    began = time.perf_counter()
    results: dict = {"environment": environment.describe()}
    figures = {}
    for name, model in (("cnn", args.cnn), ("svm", args.svm)):
        curves, context = evaluate_text("20newsgroups", str(model), methods=["lrp", "sa", "random"],
                                        orders=["morf", "lerf"], steps=25, deletion="zero", limit=args.limit,
                                        composite="epsilon", seeds=5)
        results[name] = {**context, "curves": [c.to_dict() for c in curves]}
        figures[name] = ROOT / "docs" / f"faithfulness-20ng-{name}.png"
        plot(curves, figures[name], unit="words", title=f"20 Newsgroups, {context['model_kind']}")
        print(name, "done", flush=True)
    results["cost"] = costs(args.cnn, 50, ["lrp", "sa", "gi", "ig", "occlusion"])
    curves, context = evaluate_images("fashion-mnist", "default", methods=["lrp", "random"],
                                      composites=["epsilon", "epsilon_plus_flat", "epsilon_gamma_box"], steps=50,
                                      region=2, fill="noise", limit=args.images, seeds=5)
    results["fashion"] = {**context, "curves": [c.to_dict() for c in curves]}
    figures["fashion"] = ROOT / "docs" / "faithfulness-fashion.png"
    plot(curves, figures["fashion"], unit="2x2 regions", title="Fashion-MNIST CNN (bundled), pixel flipping")
    results["seconds"] = round(time.perf_counter() - began, 1)
    (ROOT / "benchmarks" / "results" / "faithfulness.json").write_text(json.dumps(results, indent=2) + "\n")
    write_doc(render(results))
    print(render(results))


def _table(curves: list[dict], order: str, marks: tuple[int, ...] = (0, 5, 10, 25)) -> list[str]:
    lines = ["| method | AOPC | accuracy AUC | " + " | ".join(f"accuracy after {k}" for k in marks) + " |",
             "|---|---:|---:|" + "---:|" * len(marks)]
    for c in (c for c in curves if c["order"] == order):
        cells = [f"{c['accuracy'][k]:.3f}" if k < len(c["accuracy"]) else "-" for k in marks]
        lines.append(f"| {c['method']} | {c['aopc']:.3f} | {c['accuracy_auc']:.3f} | " + " | ".join(cells) + " |")
    return lines


def findings(r: dict) -> list[str]:
    """What the numbers say, stated from the numbers, including where LRP does not come out ahead."""
    out = []
    for name, title in (("cnn", "CNN"), ("svm", "TF-IDF SVM")):
        curves = {(c["method"], c["order"]): c for c in r[name]["curves"]}
        lrp, sa, rnd = (curves[m, "morf"] for m in ("lrp", "sa", "random"))
        ahead = lrp["accuracy_auc"] < sa["accuracy_auc"] < rnd["accuracy_auc"] and lrp["aopc"] > sa["aopc"]
        out.append(f"- {title}, MoRF: after 10 deleted words accuracy is {lrp['accuracy'][10]:.2f} with LRP, "
                   f"{sa['accuracy'][10]:.2f} with SA and {rnd['accuracy'][10]:.2f} with random deletion; "
                   + ("LRP's curve falls fastest and its AOPC is the largest." if ahead
                      else "LRP's curve does NOT fall fastest on both summaries here."))
        lrp, sa, rnd = (curves[m, "lerf"] for m in ("lrp", "sa", "random"))
        out.append(f"- {title}, LeRF: deleting the words LRP finds least relevant (those speaking against the true "
                   f"class) lifts accuracy on misclassified documents from 0 to {lrp['accuracy'][-1]:.2f} after 25; "
                   f"SA reaches {sa['accuracy'][-1]:.2f}, random {rnd['accuracy'][-1]:.2f}. SA cannot do this: a "
                   "squared gradient has no sign, so its 'least relevant' words are merely unimportant ones.")
    cost = {c["method"]: c for c in r["cost"]}
    out.append(f"- Cost: LRP takes {1e3 * cost['lrp']['seconds_per_explanation']:.1f} ms per document, "
               f"{cost['lrp']['seconds_per_explanation'] / cost['sa']['seconds_per_explanation']:.1f}x a gradient "
               f"(SA) in the same batches, against {1e3 * cost['ig']['seconds_per_explanation']:.0f} ms for "
               f"integrated gradients and {1e3 * cost['occlusion']['seconds_per_explanation']:.0f} ms for occlusion.")
    f = {c["method"]: c for c in r["fashion"]["curves"]}
    rnd = f["random"]
    for method, c in f.items():
        if method == "random":
            continue
        beats = c["aopc"] > rnd["aopc"] and c["accuracy_auc"] < rnd["accuracy_auc"]
        out.append(f"- Fashion-MNIST, {method}: AOPC {c['aopc']:.2f} against random's {rnd['aopc']:.2f}, accuracy "
                   f"AUC {c['accuracy_auc']:.3f} against {rnd['accuracy_auc']:.3f}: "
                   + ("better than random on both." if beats else "NOT better than random on both."))
    if f["lrp:epsilon_plus_flat"]["accuracy_auc"] >= rnd["accuracy_auc"]:
        out.append("  The flat rule at the first layer ignores the pixel values: it spreads each first-layer "
                   "neuron's relevance evenly over its 3x3 window, so the map says where relevant neurons sit, "
                   "smoothed, rather than which pixels they read; flipping 2x2 regions in that order is no better "
                   "than chance here. epsilon_gamma_box (z^B at the first layer, which weighs pixels by their "
                   "contribution within the input's bounds) does better; plain epsilon, the least smoothed, best. "
                   "This is one model and one perturbation (uniform noise); we have not tested others.")
    return out


def render(r: dict) -> str:
    env = r["environment"]
    lines = ["# Faithfulness: word deletion (Arras et al. 2017) and pixel flipping", "",
             f"Generated by `python benchmarks/arras.py` ({env['cpu']}, {env['cores']} cores, torch {env['torch']}, "
             f"{r['seconds']:.0f} s); every number below is in `benchmarks/results/faithfulness.json`. Relevance "
             "is computed for the true class on the intact input; the score is the true class's logit. AOPC: mean "
             "drop of that score over 0..K deletions; accuracy AUC: mean accuracy over 0..K. MoRF (most relevant "
             "first, correctly classified documents): a faithful method has a high AOPC and a low accuracy AUC. "
             "LeRF (least relevant first, misclassified documents): accuracy should rise, so a high accuracy AUC "
             "and a low (negative) AOPC.", "", "## Findings", "", *findings(r), ""]
    for name, title in (("cnn", "CNN"), ("svm", "TF-IDF linear SVM")):
        m = r[name]
        lines += [f"## 20 Newsgroups, {title}", "",
                  f"{m['model_kind']}; test accuracy {m['test_accuracy']:.4f} on {m['test_documents']:,} documents; "
                  f"MoRF on {m['examples']['morf']} correctly classified and LeRF on {m['examples']['lerf']} "
                  "misclassified test documents (drawn at random, seeded); random deletion averaged over 5 seeds.",
                  "", f"![{title}](faithfulness-20ng-{name}.png)", "", "MoRF:", "", *_table(m["curves"], "morf"),
                  "", "LeRF:", "", *_table(m["curves"], "lerf"), ""]
    lines += ["## Cost per explanation (20 Newsgroups CNN, the same 50 test documents)", "",
              "| method | model evaluations | ms per explanation | explanations per second |", "|---|---:|---:|---:|"]
    for c in r["cost"]:
        lines.append(f"| {c['method']} | {c['evaluations']} | {1e3 * c['seconds_per_explanation']:.1f} | "
                     f"{c['explanations_per_second']:.1f} |")
    f = r["fashion"]
    lines += ["", "Integrated gradients uses 32 steps; occlusion deletes each of a document's tokens once (its "
              "evaluations are the mean token count plus one).", "",
              "## Pixel flipping, Fashion-MNIST CNN (bundled)", "",
              f"{f['examples']['morf']} correctly classified test images (test accuracy {f['test_accuracy']:.4f}); "
              f"{f['region']}x{f['region']} regions replaced by uniform noise in order of relevance, up to "
              f"{f['steps']} of 196; random order averaged over 5 seeds.", "",
              "![Fashion-MNIST](faithfulness-fashion.png)", "", *_table(f["curves"], "morf", (0, 10, 25, 50)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
