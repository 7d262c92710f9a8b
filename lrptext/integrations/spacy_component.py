"""The spaCy pipeline component ``"lrptext"``: classifies each Doc and sets the relevance of its tokens.

    nlp = spacy.blank("en")
    nlp.add_pipe("lrptext", config={"model": "default", "composite": "epsilon", "target": None})
    # "model": a file from 'lrptext train' or a Hugging Face model folder; "composite": None takes the
    # model's default (epsilon, or attnlrp for a transformer)
    doc = nlp("FREE money!!! Click here")
    doc.cats                  # {"ham": 0.01, "spam": 0.99}
    doc._.relevance           # one value per token (whitespace tokens: 0.0)
    doc[3]._.relevance, doc[0:2]._.relevance

The factory is declared under the ``spacy_factories`` entry point, so ``add_pipe("lrptext")`` works without
importing lrptext first. ``nlp.pipe(texts, batch_size=N)`` explains each batch in one pass through the kernels.
The component explains the Doc's own tokens (looked up lower-cased in the model's vocabulary), so it follows
whatever tokenizer the pipeline has.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, Span, Token as SpacyToken
from spacy.util import minibatch

from lrptext.text.classifier import TextClassifier
from lrptext.text.document import DocumentExplanation, words_of
from lrptext.text.render import html_report
from lrptext.text.tokens import Token

MODEL_FILE = "model.pt"
MODEL_FOLDER = "model"  # a Hugging Face model travels as a folder


def install_extensions() -> None:
    """Doc._.relevance holds the values; Token and Span read them from the Doc (no state in the component)."""
    if not Doc.has_extension("relevance"):
        Doc.set_extension("relevance", default=None)
    for name in ("relevance_target", "relevance_truncated"):
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=None)
    if not SpacyToken.has_extension("relevance"):
        SpacyToken.set_extension("relevance", getter=lambda t: None if t.doc._.relevance is None
                                 else t.doc._.relevance[t.i])
    if not Span.has_extension("relevance"):
        Span.set_extension("relevance", getter=lambda s: None if s.doc._.relevance is None
                           else sum(s.doc._.relevance[s.start: s.end]))


class RelevanceComponent:
    def __init__(self, nlp: Language, name: str, *, model: str, composite: str | None, target: str | None,
                 batch_size: int):
        install_extensions()
        self.name = name
        self.model = model
        self.composite = composite
        self.target = target
        self.batch_size = batch_size
        try:
            self.classifier = TextClassifier.load(model)
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"spaCy component '{name}': config 'model' = {model!r} cannot be loaded: "
                             f"{error}") from None
        if target is not None:
            self.classifier.label_index(target)

    def __call__(self, doc: Doc) -> Doc:
        return self._annotate([doc])[0]

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        for batch in minibatch(stream, size=batch_size or self.batch_size):
            yield from self._annotate(list(batch))

    def _annotate(self, docs: list[Doc]) -> list[Doc]:
        tokens = [[Token(t.text, t.idx, t.idx + len(t.text)) for t in doc if not t.is_space] for doc in docs]
        positions = [[t.i for t in doc if not t.is_space] for doc in docs]
        target = None if self.target is None else self.classifier.label_index(self.target)
        explained = self.classifier.explain_tokens([d.text for d in docs], tokens, target=target,
                                                   composite=self.composite or self.classifier.default_composite)
        for doc, where, result in zip(docs, positions, explained):
            values = [0.0] * len(doc)  # whitespace tokens, and tokens past the model's window, get none
            for i, (_, r) in zip(where, result.token_relevance):
                values[i] = float(r)
            doc.cats = dict(zip(self.classifier.labels, result.probabilities))
            doc._.relevance = values
            doc._.relevance_target = result.target
            doc._.relevance_truncated = result.truncated
        return docs

    # -- serialisation: the model file travels with the pipeline ----------------------------------------------
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.classifier.save(path / (MODEL_FOLDER if self.classifier.windowed else MODEL_FILE))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> RelevanceComponent:
        folder = Path(path) / MODEL_FOLDER
        self.classifier = TextClassifier.load(folder if folder.is_dir() else Path(path) / MODEL_FILE)
        return self


@Language.factory(
    "lrptext",
    assigns=["doc.cats", "doc._.relevance", "doc._.relevance_target", "doc._.relevance_truncated",
             "token._.relevance", "span._.relevance"],
    default_config={"model": "default", "composite": None, "target": None, "batch_size": 32},
)
def make_component(nlp: Language, name: str, model: str, composite: str | None, target: str | None,
                   batch_size: int) -> RelevanceComponent:
    return RelevanceComponent(nlp, name, model=model, composite=composite, target=target, batch_size=batch_size)


def render_html(docs: Doc | Iterable[Doc], *, title: str = "lrptext: word relevance") -> str:
    """The HTML report of lrptext explain-text for Docs annotated by the component."""
    docs = [docs] if isinstance(docs, Doc) else list(docs)
    explanations = []
    for doc in docs:
        if doc._.relevance is None:
            raise ValueError("the Doc has no relevance: run it through a pipeline with the 'lrptext' component")
        pairs = [(Token(t.text, t.idx, t.idx + len(t.text)), float(doc._.relevance[t.i])) for t in doc
                 if not t.is_space]
        labels = list(doc.cats)
        prediction = max(doc.cats, key=doc.cats.get)
        target = doc._.relevance_target
        explanations.append(DocumentExplanation(
            text=doc.text, labels=labels, prediction=prediction, score=doc.cats[prediction], target=target,
            target_score=doc.cats[target], words=words_of(doc.text, pairs), token_relevance=pairs,
            truncated=bool(doc._.relevance_truncated), probabilities=tuple(doc.cats.values())))
    return html_report(explanations, title=title)
