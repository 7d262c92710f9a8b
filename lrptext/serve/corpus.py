"""The words with the largest summed relevance per class over a small uploaded corpus, each with the documents it
occurs in: the corpus-level view of docs/top-words.md, for a JSON-lines or CSV file sent to the server.

With a label field, each document is explained for its own label and counted under it (as docs/top-words.md does
for the test split); without one, for its predicted label. Words are the model's tokens, lower-cased (for a
transformer, spaCy's words, each the sum of the subword pieces starting in it)."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrptext.serve.models import RequestError, TextModel, TooLarge
from lrptext.text.records import CorpusReader


@dataclass(frozen=True)
class CorpusRequest:
    data: str
    format: str               # "jsonl" or "csv"
    text_field: str
    label_field: str | None
    composite: str
    top: int


def read_records(request: CorpusRequest, model: TextModel, max_documents: int,
                 max_characters: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(documents, rejected records): every valid record as {index, line, text, label}, and every invalid one as
    {line, reason}; more than max_documents valid records is an error."""
    if request.format not in ("jsonl", "csv"):
        raise RequestError(f"unknown corpus format {request.format!r}; choose jsonl or csv")
    with tempfile.TemporaryDirectory(prefix="lrptext-corpus-") as folder:
        path = Path(folder) / f"corpus.{request.format}"
        path.write_text(request.data, encoding="utf-8", errors="surrogatepass")
        reader = CorpusReader(path, request.format, text_field=request.text_field, id_field=request.label_field)
        documents, rejected = [], []
        try:
            for record in reader:
                reason = record.error or _refusal(record, model, max_characters, request.label_field)
                if reason:
                    rejected.append({"line": record.line, "reason": reason})
                    continue
                if len(documents) == max_documents:
                    raise TooLarge(f"the corpus has more than {max_documents} documents, this server's limit; "
                                       "upload a smaller sample")
                documents.append({"index": len(documents), "line": record.line, "text": record.text,
                                  "label": None if record.id is None else str(record.id)})
        except TooLarge:
            raise
        except ValueError as error:  # e.g. a CSV header without the text column
            raise RequestError(str(error).replace(f"{path}: ", "", 1)) from None
    if not documents:
        raise RequestError("the corpus holds no document that can be explained"
                           + (f" (first refusal, line {rejected[0]['line']}: {rejected[0]['reason']})" if rejected
                              else ""))
    return documents, rejected


def _refusal(record: Any, model: TextModel, max_characters: int, label_field: str | None) -> str | None:
    if len(record.text) > max_characters:
        return f"{len(record.text):,} characters, more than this server's {max_characters:,}"
    if label_field:
        if record.id is None:
            return f"no '{label_field}' field"
        if str(record.id) not in model.labels:
            return f"label {str(record.id)!r} is not one of the model's ({', '.join(model.labels)})"
    return None


def top_words(model: TextModel, documents: list[dict[str, Any]], composite: str, top: int) -> dict[str, Any]:
    """Explains every document and sums its tokens' relevance per class (see the module's docstring)."""
    classifier = model.classifier
    explained: dict[int, Any] = {}
    labelled = [d for d in documents if d["label"] is not None]
    groups = ({label: [d for d in labelled if d["label"] == label] for label in model.labels} if labelled
              else {None: documents})
    for label, group in groups.items():
        for start in range(0, len(group), 32):
            batch = group[start: start + 32]
            tokens = model.units([d["text"] for d in batch])
            keep = [i for i, t in enumerate(tokens) if classifier.knows_a_word(t)]
            docs = classifier.explain_tokens([batch[i]["text"] for i in keep], [tokens[i] for i in keep],
                                             target=None if label is None else classifier.label_index(label),
                                             composite=composite)
            explained.update({batch[i]["index"]: doc for i, doc in zip(keep, docs)})
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    places: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for index, doc in explained.items():
        for token, relevance in doc.token_relevance:
            sums[doc.target][token.norm] += relevance
            counts[doc.target][token.norm] += 1
            places[doc.target][token.norm].add(index)
    classes = []
    for label in model.labels:
        ranked = sorted(sums[label].items(), key=lambda kv: kv[1], reverse=True)[:top]
        classes.append({
            "label": label,
            "documents": sum(1 for d in explained.values() if d.target == label),
            "words": [{"word": word, "relevance": total, "occurrences": counts[label][word],
                       "documents": sorted(places[label][word])} for word, total in ranked],
        })
    for d in documents:
        doc = explained.get(d["index"])
        d["prediction"] = doc.prediction if doc else None
        d["explained"] = doc.target if doc else None
    return {"by": "label" if labelled else "prediction", "composite": composite, "classes": classes,
            "documents": documents, "unexplained": [d["index"] for d in documents if d["index"] not in explained]}
