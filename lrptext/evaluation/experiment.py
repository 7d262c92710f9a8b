"""`lrptext evaluate`: a dataset's test split, a model and a list of methods in; JSON and a figure out.

Text follows Arras et al. (2017): MoRF deletion on test documents the model classifies correctly (accuracy should
fall), LeRF deletion on those it misclassifies (accuracy should rise), relevance for the true label. A Hugging Face
model folder is evaluated on each document's first window, with that deletion (protocol "deletion") or with Ali
et al. (2022)'s generate and prune protocol (protocol "ali") on a random sample of test documents. Images:
pixel flipping (region perturbation) on correctly classified test images, MoRF, LRP composites against the
baselines."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrptext.evaluation.curves import Curve
from lrptext.evaluation.report import plot, write_json

IMAGE_DATASETS = ("fashion-mnist", "digits")


def _split_by_correctness(predicted: np.ndarray, truth: np.ndarray, limit: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of up to `limit` correctly (for MoRF) and wrongly (for LeRF) classified examples, in a seeded
    random order, so a limit draws a sample rather than the first documents."""
    order = np.random.default_rng(seed).permutation(len(truth))
    right = order[predicted[order] == truth[order]][:limit]
    wrong = order[predicted[order] != truth[order]][:limit]
    return {"morf": right, "lerf": wrong}


def _explainable(classifier: Any, texts: list[str]) -> list[int]:
    from lrptext.text.records import checked

    valid = [i for i, t in enumerate(texts) if checked(i, t).valid]
    tokens = classifier.tokenizer.pipe([texts[i] for i in valid])
    return [i for i, toks in zip(valid, tokens) if classifier.knows_a_word(toks)]


def evaluate_text(dataset: str, model: str, *, methods: Sequence[str], orders: Sequence[str], steps: int,
                  deletion: str, limit: int, composite: str | None, seeds: int, seed: int = 0,
                  progress: bool | None = None) -> tuple[list[Curve], dict[str, Any]]:
    from lrptext.datasets import load

    test = load(dataset).test
    texts, truth = list(test.texts), np.asarray(test.labels)
    excluded = 0
    began = time.perf_counter()
    if Path(model).suffix in (".joblib", ".pkl", ".pickle"):
        import joblib

        from lrptext.evaluation.bag_of_words import bow_word_deletion

        pipeline = joblib.load(model)  # trusted files only: unpickling runs code
        classes = list(pipeline.classes_)
        predicted = np.asarray([classes.index(p) for p in pipeline.predict(texts)])
        chosen = _split_by_correctness(predicted, truth, limit, seed)

        def run(order: str, idx: np.ndarray) -> list[Curve]:
            return bow_word_deletion(pipeline, [texts[i] for i in idx], [classes[truth[i]] for i in idx],
                                     methods=methods, orders=(order,), steps=steps, seeds=seeds, progress=progress)
        kind = f"{type(pipeline.steps[-1][1]).__name__} on {type(pipeline.steps[0][1]).__name__} features"
    else:
        from lrptext.evaluation.words import word_deletion
        from lrptext.text.classifier import DEFAULT_COMPOSITE, TextClassifier

        classifier = TextClassifier.load(model)
        keep = _explainable(classifier, texts)  # documents with no known word have nothing to delete
        excluded = len(texts) - len(keep)
        texts, truth = [texts[i] for i in keep], truth[keep]
        predicted = np.concatenate([classifier.predict(texts[s: s + 256]).argmax(1).numpy()
                                    for s in range(0, len(texts), 256)])
        chosen = _split_by_correctness(predicted, truth, limit, seed)

        def run(order: str, idx: np.ndarray) -> list[Curve]:
            return word_deletion(classifier, [texts[i] for i in idx], [int(truth[i]) for i in idx],
                                 methods=methods, orders=(order,), steps=steps, deletion=deletion,
                                 composite=composite or DEFAULT_COMPOSITE, seeds=seeds, progress=progress)
        kind = f"{classifier.model.arch} ({type(classifier.model).__name__}), composite " \
               f"{composite or DEFAULT_COMPOSITE}, deletion '{deletion}'"
    curves = [c for order in orders if len(chosen[order]) for c in run(order, chosen[order])]
    context = {"dataset": dataset, "model": str(model), "protocol": "deletion", "model_kind": kind,
               "test_documents": len(texts),
               "excluded_without_known_words": excluded,
               "test_accuracy": float((predicted == truth).mean()),
               "examples": {order: len(chosen[order]) for order in orders}, "steps": steps,
               "relevance_for": "the true label", "score": "the true label's logit", "cost": _cost(curves),
               "seconds": round(time.perf_counter() - began, 1)}
    return curves, context


PROTOCOLS = ("deletion", "ali")


def _model_classes(model_labels: list[str], dataset_labels: list[str]) -> tuple[list[int], str]:
    """The model's output index for each of the data set's labels, and how they were matched."""
    if set(dataset_labels) <= set(model_labels):
        return [model_labels.index(name) for name in dataset_labels], "by name"
    if len(model_labels) == len(dataset_labels):
        return list(range(len(dataset_labels))), (f"by position: the model's labels {model_labels} are not the data "
                                                  f"set's {dataset_labels}")
    raise ValueError(f"the model's {len(model_labels)} labels {model_labels} do not match the data set's "
                     f"{len(dataset_labels)} labels {dataset_labels}; evaluate it on the data it was trained for")


def _cost(curves: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Each method's model evaluations and seconds per explanation, averaged over its curves weighted by their
    documents (MoRF and LeRF explain different documents; generate and prune share one explanation each)."""
    cost: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(c.method for c in curves):
        mine = [c for c in curves if c.method == method]
        n = sum(c.examples for c in mine)
        cost[method] = {"evaluations": round(sum(c.evaluations * c.examples for c in mine) / n, 1),
                        "seconds_per_explanation": sum(c.seconds_per_explanation * c.examples for c in mine) / n}
    return cost


def evaluate_transformer(dataset: str, model: str, *, protocol: str, methods: Sequence[str], orders: Sequence[str],
                         steps: int, deletion: str, limit: int, composite: str | None, seeds: int, seed: int = 0,
                         progress: bool | None = None) -> tuple[list[Any], dict[str, Any]]:
    """A Hugging Face model folder on a text data set's test split, each document read in its first window."""
    from lrptext.datasets import load
    from lrptext.evaluation.curves import ORDERS
    from lrptext.evaluation.fractions import CASES
    from lrptext.evaluation.transformer_tokens import (
        LRP_COMPOSITES,
        Perturbed,
        expand_methods,
        first_windows,
        generate_and_prune,
        token_deletion,
    )
    from lrptext.text.classifier import TextClassifier
    from lrptext.text.records import checked
    from lrptext.text.subwords import pieces_of

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    # orders and methods are checked before the test split is read and predicted
    allowed = CASES if protocol == "ali" else ORDERS
    if not orders or any(o not in allowed for o in orders):
        raise ValueError(f"protocol {protocol!r} takes orders {', '.join(allowed)}, got {', '.join(orders) or 'none'}")
    expand_methods(methods, None)
    data = load(dataset)
    classifier = TextClassifier.load(model)
    began = time.perf_counter()
    classes, matched = _model_classes(classifier.labels, list(data.label_names))
    texts = list(data.test.texts)
    valid = [i for i, t in enumerate(texts) if checked(i, t).valid]
    pieces = pieces_of(classifier.tokenizer, [texts[i] for i in valid])
    keep = [i for i, p in zip(valid, pieces) if p.ids]  # a document without a token has nothing to perturb
    excluded = len(texts) - len(keep)
    texts, truth = [texts[i] for i in keep], np.asarray([classes[y] for y in np.asarray(data.test.labels)[keep]])
    windows = first_windows(classifier, texts)
    predicted = Perturbed(classifier, "remove").logits(windows.rows).argmax(1).numpy()  # nothing removed
    composites = [composite] if composite else list(LRP_COMPOSITES)
    options = {"methods": methods, "composites": composites, "seeds": seeds, "progress": progress}
    if protocol == "deletion":
        chosen = _split_by_correctness(predicted, truth, limit, seed)
        curves: list[Any] = [c for order in orders if len(chosen[order]) for c in token_deletion(
            classifier, [texts[i] for i in chosen[order]], [int(truth[i]) for i in chosen[order]], orders=(order,),
            steps=steps, deletion=deletion, **options)]
        examples = {order: len(chosen[order]) for order in orders}
        setting = {"steps": steps, "deletion": deletion, "score": "the true label's logit"}
    else:
        idx = np.random.default_rng(seed).permutation(len(texts))[:limit]
        curves = generate_and_prune(classifier, [texts[i] for i in idx], [int(truth[i]) for i in idx], cases=orders,
                                    **options)
        examples = {case: len(idx) for case in orders}
        setting = {"fractions": curves[0].fractions if curves else [],
                   "replacement": f"the unknown token {classifier.tokenizer.unk_token}",
                   "score": "accuracy, the true label's probability and logit, the probabilities' MSE"}
    config = classifier.model.config
    context = {"dataset": dataset, "model": str(model), "protocol": protocol,
               "model_kind": f"{type(classifier.model).__name__} ({config.model_type}), LRP composites "
                             f"{', '.join(composites)}",
               "window": f"the first window of each document: {classifier.max_length} tokens with the special "
                         f"tokens ({classifier.window} pieces); explanations and perturbations on it alone",
               "test_documents": len(texts), "documents_longer_than_the_window": int(sum(windows.longer)),
               "excluded_without_tokens": excluded, "labels_matched": matched,
               "test_accuracy": float((predicted == truth).mean()), "examples": examples, **setting,
               "relevance_for": "the true label",
               "cost": _cost(curves),
               "seconds": round(time.perf_counter() - began, 1)}
    return curves, context


def evaluate_images(dataset: str, model: str, *, methods: Sequence[str], composites: Sequence[str], steps: int,
                    region: int, fill: str, limit: int, seeds: int, seed: int = 0,
                    progress: bool | None = None) -> tuple[list[Curve], dict[str, Any]]:
    from lrptext.datasets.images import load_images
    from lrptext.evaluation.pixels import pixel_flipping
    from lrptext.image import ImageClassifier

    data = load_images(dataset)
    classifier = ImageClassifier.load(model)
    began = time.perf_counter()
    predicted = np.concatenate([classifier.predict(data.test_images[s: s + 1024]).argmax(1).numpy()
                                for s in range(0, len(data.test_labels), 1024)])
    idx = _split_by_correctness(predicted, data.test_labels, limit, seed)["morf"]
    curves = pixel_flipping(classifier, data.test_images[idx], data.test_labels[idx].tolist(),
                            composites=composites if "lrp" in methods else (),
                            baselines=[m for m in methods if m != "lrp"], orders=("morf",), region=region,
                            steps=steps, fill=fill, seeds=seeds, progress=progress)
    context = {"dataset": dataset, "model": str(model), "test_images": int(len(data.test_labels)),
               "test_accuracy": float((predicted == data.test_labels).mean()), "examples": {"morf": len(idx)},
               "region": region, "fill": fill, "steps": steps, "relevance_for": "the true label",
               "score": "the true label's logit", "seconds": round(time.perf_counter() - began, 1)}
    return curves, context


def write_results(curves: Sequence[Any], context: dict[str, Any], out: str | Path, *, unit: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(curves, out / "evaluation.json", **context)
    plot(curves, out / "curves.png", unit=unit, title=f"{context['dataset']}: {context['model']}")
    return out
