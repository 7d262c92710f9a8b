"""The models a server explains: only those named when it starts, each loaded once.

A served model turns a request's inputs into explanations in two steps, so that concurrent requests can share one
pass through the kernels (lrptext.serve.batching): ``prepare`` checks and tokenises one request's inputs (its
errors are that request's alone), ``run`` explains the prepared inputs of several requests together."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrptext.engine import Contrast
from lrptext.rules import COMPOSITES
from lrptext.text.checks import check_text
from lrptext.text.document import DocumentExplanation, words_of
from lrptext.text.tokens import Tokenizer

# The composites of transformers; text CNNs take the others but epsilon_gamma_box, which needs input bounds
# (pixels have them, token embeddings do not).
TRANSFORMER_COMPOSITES = ["attnlrp", "cp_lrp"]
CNN_COMPOSITES = [c for c in COMPOSITES if c not in (*TRANSFORMER_COMPOSITES, "epsilon_gamma_box")]
GRADIENT_METHODS = {"gi": "gradient × input", "ig": "integrated gradients"}
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


# Documents explained in one pass are padded to the longest of them; merging a short one with one this much longer
# costs more than the call it saves (benchmarks/serve_load.py; benchmarks/results/serve.md).
PADDING_RATIO = 1.25
SHORTEST = 8  # tokens: below this, a pass costs about the same whatever the length


def length_groups(lengths: list[int], ratio: float = PADDING_RATIO) -> list[list[int]]:
    """Indices of `lengths` grouped so that within a group the longest is at most `ratio` x the shortest."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and max(lengths[i], SHORTEST) <= ratio * max(lengths[groups[-1][0]], SHORTEST):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class RequestError(ValueError):
    """A request the model cannot answer as asked (an unknown label, an empty document): the client's to fix."""


class TooLarge(RequestError):
    """A request over one of the server's limits (a document's length, a corpus's size)."""


@dataclass(frozen=True)
class Goal:
    """What one request asks: the composite or gradient method, the target and contrast labels, per-layer totals."""

    composite: str
    method: str = "lrp"
    target: str | None = None
    contrast: str | None = None
    layers: bool = False


@dataclass
class ServedModel:
    name: str
    kind: str                           # "text" or "image": what it reads, so which route explains it
    labels: list[str]
    composites: list[str]
    default_composite: str
    methods: list[str] = field(default_factory=lambda: ["lrp"])
    contrast: bool = True               # whether a contrast label can be asked for
    layers: bool = False                # whether per-layer relevance totals can be asked for
    architecture: str = ""              # "cnn", "lstm", ... of lrptext train; "bert", "roberta", ... (transformers)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "architecture": self.architecture, "labels": self.labels,
                "composites": self.composites, "default_composite": self.default_composite, "methods": self.methods,
                "contrast": self.contrast, "layers": self.layers}

    def goal(self, composite: str | None, method: str | None, target: str | None, contrast: str | None,
             layers: bool) -> Goal:
        """A request's goal, checked against what this model offers."""
        composite = composite or self.default_composite
        method = method or "lrp"
        if composite not in self.composites:
            raise RequestError(f"unknown composite {composite!r} for model {self.name!r}; choose one of "
                               f"{', '.join(self.composites)}")
        if method not in self.methods:
            raise RequestError(f"method {method!r} is not available for model {self.name!r}; choose one of "
                               f"{', '.join(self.methods)}")
        for what, label in (("target", target), ("contrast", contrast)):
            if label is not None and label not in self.labels:
                raise RequestError(f"unknown {what} label {label!r}; model {self.name!r} has the labels "
                                   f"{', '.join(self.labels)}")
        if contrast is not None:
            if not self.contrast:
                raise RequestError(f"model {self.name!r} cannot explain a contrast; leave 'contrast' out")
            if target is None:
                raise RequestError("a contrast needs an explicit target label: give 'target' too")
            if contrast == target:
                raise RequestError(f"target and contrast are both {target!r}; a label against itself explains nothing")
        if layers and not self.layers:
            raise RequestError(f"per-layer relevance totals are not available for model {self.name!r}")
        if layers and method != "lrp":
            raise RequestError("per-layer relevance totals are LRP's; ask for them with method 'lrp'")
        return Goal(composite, method, target, contrast, layers)

    def prepare(self, items: list[Any], limit: int) -> list[Any]:
        raise NotImplementedError

    def run(self, prepared: list[Any], goal: Goal) -> list[dict[str, Any]]:
        raise NotImplementedError


class TextModel(ServedModel):
    """A document classifier of `lrptext train` (or the bundled one)."""

    def __init__(self, name: str, classifier: Any):
        self.classifier = classifier
        has_embedding = isinstance(getattr(classifier.model, "embedding", None), torch.nn.Embedding)
        super().__init__(name, "text", list(classifier.labels), list(CNN_COMPOSITES), classifier.default_composite,
                         methods=["lrp", *GRADIENT_METHODS] if has_embedding else ["lrp"], layers=True,
                         architecture=str(getattr(classifier.model, "arch", type(classifier.model).__name__)))

    def prepare(self, texts: list[str], limit: int) -> list[tuple[str, list]]:
        """(text, tokens) per document; a document that cannot be explained is refused, with its index."""
        prepared = []
        for i, text in enumerate(texts):
            _check_document(text, i, limit)
            tokens = self.classifier.tokenize([text])[0]
            if not self.classifier.knows_a_word(tokens):
                raise RequestError(f"document {i} {self.unreadable}; nothing in it can be explained")
            prepared.append((text, tokens))
        return prepared

    @property
    def unreadable(self) -> str:
        return f"has no word in the vocabulary of model {self.name!r}"

    def read_length(self, tokens: list) -> int:
        """The tokens of a document one pass reads: what a merged pass pads to."""
        return min(len(tokens), self.classifier.max_tokens)

    def units(self, texts: list[str]) -> list[list]:
        """The tokens whose relevance the corpus view sums per class: the model's own."""
        return self.classifier.tokenize(texts)

    def run(self, prepared: list[tuple[str, list]], goal: Goal) -> list[dict[str, Any]]:
        """One pass per group of documents of similar length (a pass pads every document to its longest)."""
        results: list[dict[str, Any]] = [{} for _ in prepared]
        for group in length_groups([self.read_length(tokens) for _, tokens in prepared]):
            for i, result in zip(group, self._run([prepared[i] for i in group], goal)):
                results[i] = result
        return results

    def _run(self, prepared: list[tuple[str, list]], goal: Goal) -> list[dict[str, Any]]:
        c = self.classifier
        texts = [t for t, _ in prepared]
        tokens = [k for _, k in prepared]
        target, contrast = c.goal_indices(goal.target, goal.contrast)
        if goal.method == "lrp":
            docs = c.explain_tokens(texts, tokens, target=target, contrast=contrast, composite=goal.composite)
        else:
            docs = self._gradient(texts, tokens, target, contrast, goal.method)
        results = [_text_result(d) for d in docs]
        if goal.layers:
            for result, totals in zip(results, self._layer_totals(texts, tokens, docs, contrast, goal.composite)):
                result["layers"] = [{"layer": name, "relevance": total} for name, total in totals.items()]
        return results

    def _gradient(self, texts: list[str], tokens: list[list], target: int | None, contrast: int | None,
                  method: str) -> list[DocumentExplanation]:
        """Gradient x input or integrated gradients at the token embeddings (the baselines of lrptext evaluate)."""
        from lrptext.evaluation.words import embedding_attribution

        c = self.classifier
        kept, rows, truncated = c.rows(tokens)
        with torch.no_grad():
            probs = c.model(*c.model.inputs(rows)).softmax(dim=1)
        predicted = probs.argmax(dim=1)
        goal = predicted if target is None else torch.full_like(predicted, target)
        against = None if contrast is None else torch.full_like(predicted, contrast)
        scores, _ = embedding_attribution(method, c, rows, goal, against=against)
        docs = []
        for i, text in enumerate(texts):
            pairs = list(zip(kept[i], scores[i, : len(rows[i])].tolist()))
            p, t = int(predicted[i]), int(goal[i])
            docs.append(DocumentExplanation(
                text=text, labels=c.labels, prediction=c.labels[p], score=float(probs[i, p]), target=c.labels[t],
                target_score=float(probs[i, t]), words=words_of(text, pairs), token_relevance=pairs,
                truncated=truncated[i], contrast=None if contrast is None else c.labels[contrast],
                probabilities=tuple(probs[i].tolist())))
        return docs

    def _layer_totals(self, texts: list[str], tokens: list[list], docs: list[DocumentExplanation],
                      contrast: int | None, composite: str) -> list[dict[str, float]]:
        """Per document, Σ relevance at each layer's output from the model's output down to its input, for the
        label its words were explained for."""
        c = self.classifier
        _, rows, _ = c.rows(tokens)
        target = torch.tensor([c.labels.index(d.target) for d in docs])
        goal: Any = Contrast(target, torch.full_like(target, contrast)) if contrast is not None else target
        e = c.explainer(composite).explain(c.model.inputs(rows), target=goal, layers=True)
        return [{name: float(total[i]) for name, total in e.layer_relevance.items()} for i in range(len(rows))]


class TransformerModel(TextModel):
    """A Hugging Face sequence classifier in a local model folder (TextClassifier.from_pretrained, as
    `explain-text --model FOLDER` reads it), explained with AttnLRP or CP-LRP; long documents are read in windows,
    never truncated. Its words for the corpus view are spaCy's, each the sum of the subword pieces starting in it."""

    def __init__(self, name: str, classifier: Any):
        self.classifier = classifier
        self.words = Tokenizer()
        ServedModel.__init__(self, name, "text", list(classifier.labels), list(TRANSFORMER_COMPOSITES),
                             classifier.default_composite, layers=True,
                             architecture=str(getattr(classifier.model.config, "model_type", "transformer")))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_length": self.classifier.max_length}

    @property
    def unreadable(self) -> str:
        return f"gives the tokenizer of model {self.name!r} no token"

    def read_length(self, tokens: list) -> int:
        return min(len(tokens), self.classifier.window)

    def units(self, texts: list[str]) -> list[list]:
        return list(self.words.pipe(texts))

    def _layer_totals(self, texts: list[str], tokens: list[list], docs: list[DocumentExplanation],
                      contrast: int | None, composite: str) -> list[dict[str, float]]:
        c = self.classifier
        return c.layer_relevance(texts, [c.labels.index(d.target) for d in docs], contrast=contrast,
                                 composite=composite)


class PipelineModel(ServedModel):
    """A scikit-learn vectorizer + classifier pipeline saved with joblib (served only with --allow-pickle)."""

    def __init__(self, name: str, pipeline: Any):
        from lrptext.integrations.sklearn import LINEAR_NAMES, check_word_analyzer, split_pipeline

        vectorizer, classifier = split_pipeline(pipeline)
        if vectorizer is None:
            raise ValueError(f"model {name!r}: a pipeline served for documents needs a CountVectorizer or "
                             "TfidfVectorizer as its first step")
        check_word_analyzer(vectorizer)
        self.pipeline = pipeline
        self.classes = list(classifier.classes_)
        linear = type(classifier).__name__ in LINEAR_NAMES
        super().__init__(name, "text", [str(c) for c in self.classes], ["lrp0", "epsilon"],
                         "lrp0" if linear else "epsilon", contrast=False, architecture=type(classifier).__name__)

    def prepare(self, texts: list[str], limit: int) -> list[str]:
        for i, text in enumerate(texts):
            _check_document(text, i, limit)
        return list(texts)

    def run(self, texts: list[str], goal: Goal) -> list[dict[str, Any]]:
        from lrptext.integrations.sklearn import explain_texts

        target = None if goal.target is None else self.classes[self.labels.index(goal.target)]
        return [_text_result(d) for d in explain_texts(self.pipeline, texts, target=target, composite=goal.composite)]


class ImageModel(ServedModel):
    """An image classifier of `lrptext train` (or the bundled Fashion-MNIST CNN); inputs are image files' bytes."""

    def __init__(self, name: str, classifier: Any):
        from lrptext.image.classifier import composite_names

        self.classifier = classifier
        composites = [c for c in composite_names() if c not in TRANSFORMER_COMPOSITES]
        super().__init__(name, "image", list(classifier.labels), composites, "epsilon_gamma_box",
                         architecture=str(getattr(classifier.model, "arch", type(classifier.model).__name__)))
        self.size, self.channels = classifier.size, classifier.channels

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "size": self.size, "channels": self.channels}

    def prepare(self, images: list[bytes], limit: int) -> list[np.ndarray]:
        from lrptext.image.files import read_image

        return [read_image(io.BytesIO(data), self.channels, self.size, name=f"image {i}")
                for i, data in enumerate(images)]

    def run(self, images: list[np.ndarray], goal: Goal) -> list[dict[str, Any]]:
        c = self.classifier
        target = None if goal.target is None else c.labels.index(goal.target)
        if goal.contrast is not None:
            target = Contrast(target, c.labels.index(goal.contrast))
        e = c.explain(np.stack(images), composite=goal.composite, target=target)
        probs = e.prediction.softmax(dim=1)
        results = []
        for i in range(len(images)):
            predicted, explained = int(probs[i].argmax()), int(e.target[i])
            results.append({
                "prediction": c.labels[predicted], "target": c.labels[explained], "score": float(probs[i, predicted]),
                **({"contrast": goal.contrast} if goal.contrast else {}),
                "probabilities": probs[i].tolist(),
                # summed over the colour channels: one value per pixel, as the heatmaps of explain-image
                "relevance": e.relevance[i].sum(0).tolist(),
            })
        return results


def _check_document(text: Any, index: int, limit: int) -> None:
    if isinstance(text, str) and len(text) > limit:
        raise TooLarge(f"document {index} has {len(text):,} characters; this server explains documents of up to "
                           f"{limit:,} (split it into parts, e.g. paragraphs)")
    check_text(text, index)


def _text_result(doc: DocumentExplanation) -> dict[str, Any]:
    """The document as `explain-text --format json` writes it, and its probabilities per label beside it."""
    return {"document": doc.to_dict(), "probabilities": list(doc.probabilities)}


def load_model(spec: str, *, allow_pickle: bool = False) -> ServedModel:
    """A model named on the command line: ``PATH`` or ``NAME=PATH``; PATH may be ``default`` (the bundled text model),
    ``default-image`` (the bundled image model) or a Hugging Face model folder. The name defaults to the file's
    stem, or the folder's name."""
    name, _, path = spec.rpartition("=")
    if path in ("default", "default-image"):
        from lrptext.models.store import DEFAULTS

        file = DEFAULTS["image" if path == "default-image" else "text"]
    else:
        file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"--model {spec}: {file} does not exist")
    name = name or (file.resolve().name if file.is_dir() else file.stem)
    if file.is_dir():
        if not (file / "config.json").is_file():
            raise ValueError(f"--model {spec}: {file} is a folder without config.json; the folders lrptext serve "
                             "loads are Hugging Face sequence classifiers (config.json, model.safetensors, "
                             "tokenizer.json), as 'lrptext explain-text --model FOLDER' does")
        from lrptext.text.classifier import TextClassifier

        # local files only, and no code from the folder: transformers' trust_remote_code stays off
        return TransformerModel(name, TextClassifier.from_pretrained(file))
    if file.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ValueError(f"--model {spec}: {file.suffix} files are unpickled, which runs any code they hold; "
                             "serve one only if you trust it, with --allow-pickle")
        import joblib

        return PipelineModel(name, joblib.load(file))
    from lrptext.models.store import kind_of

    if kind_of(file) == "image":
        from lrptext.image import ImageClassifier

        return ImageModel(name, ImageClassifier.load(file))
    from lrptext.text.classifier import TextClassifier

    return TextModel(name, TextClassifier.load(file))


def load_models(specs: list[str], *, allow_pickle: bool = False) -> dict[str, ServedModel]:
    """The models by name (the bundled text and image models when none are named); names must be unique."""
    models: dict[str, ServedModel] = {}
    for spec in specs or ["default", "default-image"]:
        model = load_model(spec, allow_pickle=allow_pickle)
        if model.name in models:
            raise ValueError(f"two models are named {model.name!r}; name them with --model NAME=PATH")
        models[model.name] = model
    return models
