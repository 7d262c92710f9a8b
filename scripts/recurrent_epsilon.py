"""Word deletion (MoRF, LeRF) of an LSTM/GRU classifier's LRP explanations for several epsilons of the recurrent
layers' rule, on the documents `lrptext evaluate` draws (seed 0) from the test split, or from the validation split
(which chose the recurrent models' default): the tables of docs/recurrent.md.

    python scripts/recurrent_epsilon.py MODEL.pt [--split validation] [--limit 100] [--epsilons 1e-6,1e-3,1e-2,1e-1,1]
"""

from __future__ import annotations

import argparse

import numpy as np

from lrptext.datasets import load
from lrptext.evaluation.experiment import _explainable, _split_by_correctness
from lrptext.evaluation.words import word_deletion
from lrptext.rules.composites import COMPOSITES
from lrptext.text.classifier import TextClassifier


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--dataset", default="spam-assassin")
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--epsilons", default="1e-6,1e-4,1e-3,3e-3,1e-2,3e-2,1e-1,1")
    args = parser.parse_args()
    classifier = TextClassifier.load(args.model)
    split = getattr(load(args.dataset), args.split)
    keep = _explainable(classifier, list(split.texts))
    texts, truth = [split.texts[i] for i in keep], np.asarray(split.labels)[keep]
    predicted = np.concatenate([classifier.predict(texts[s: s + 256]).argmax(1).numpy()
                                for s in range(0, len(texts), 256)])
    chosen = _split_by_correctness(predicted, truth, args.limit, 0)
    print("| recurrent rule | MoRF AOPC | MoRF accuracy after 10 | LeRF AOPC | LeRF accuracy after 10 |")
    print("|---|---:|---:|---:|---:|")
    for eps in map(float, args.epsilons.split(",")):
        composite = COMPOSITES["epsilon"](recurrent_epsilon=eps)
        cells = []
        for order in ("morf", "lerf"):
            idx = chosen[order]
            (curve,) = word_deletion(classifier, [texts[i] for i in idx], [int(truth[i]) for i in idx],
                                     methods=("lrp",), orders=(order,), composite=composite, progress=False)
            cells += [f"{curve.aopc:.3f}", f"{curve.accuracy[10]:.3f}"]
        print(f"| Epsilon({eps:g}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
