"""The API's requests and answers as pydantic models: FastAPI checks requests against them and writes the OpenAPI
description (GET /openapi.json) from them. The tests check real answers against the answer models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExplainRequest(Request):
    texts: list[str] = Field(min_length=1, description="the documents to explain (at most the server's "
                                                       "max_documents, each at most max_characters)")
    model: str | None = Field(None, description="a model name of GET /v1/models (default: the first text model)")
    composite: str | None = Field(None, description="an LRP composite the model offers (default: its default)")
    method: Literal["lrp", "gi", "ig"] = Field(
        "lrp", description="lrp, or a baseline: gi (gradient × input), ig (integrated gradients, 32 steps)")
    target: str | None = Field(None, description="the label to explain (default: the predicted one)")
    contrast: str | None = Field(None, description="explain target rather than this label (needs target)")
    layers: bool = Field(False, description="also return Σ relevance at each layer's output (LRP only; for a "
                                            "transformer, the mean over the document's windows)")


class ImageRequest(Request):
    images: list[str] = Field(min_length=1, description="PNG files (or any format Pillow reads), base64-encoded; "
                                                        "of the model's size and channels")
    model: str | None = Field(None, description="an image model of GET /v1/models (default: the first)")
    composite: str | None = None
    target: str | None = None
    contrast: str | None = None


class CorpusRequest(Request):
    data: str = Field(description="the corpus file's content: JSON lines or CSV with a header")
    format: Literal["jsonl", "csv"]
    text_field: str = Field("text", description="the JSON field or CSV column holding the text")
    label_field: str | None = Field(None, description="a field holding each document's label: documents are then "
                                                      "explained for it and counted under it")
    model: str | None = None
    composite: str | None = None
    top: int = Field(20, ge=1, le=100, description="words per class")


class Word(BaseModel):
    text: str
    start: int
    end: int
    relevance: float


class Document(BaseModel):
    """One document exactly as `lrptext explain-text --format json` writes it."""

    model_config = ConfigDict(extra="forbid")
    prediction: str
    target: str
    score: float
    contrast: str | None = None
    truncated: bool
    windows: int | None = Field(None, description="transformers: the windows the document was read in")
    special: dict[str, float] | None = Field(None, description="transformers: the relevance of the tokens in no "
                                                               "word ([CLS], [SEP], whitespace pieces)")
    words: list[Word]


class LayerTotal(BaseModel):
    layer: str
    relevance: float


class ExplainResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    method: str
    composite: str | None = Field(description="null for the gradient methods")
    labels: list[str]
    documents: list[Document]
    probabilities: list[list[float]] = Field(description="per document, one per label in the order of labels")
    layers: list[list[LayerTotal]] | None = Field(None, description="per document, from the output layer down")


class ImageResult(BaseModel):
    prediction: str
    target: str
    score: float
    contrast: str | None = None
    probabilities: list[float]
    relevance: list[list[float]] = Field(description="per pixel, summed over the colour channels")


class ImageResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    composite: str
    labels: list[str]
    results: list[ImageResult]


class CorpusWord(BaseModel):
    word: str
    relevance: float
    occurrences: int
    documents: list[int] = Field(description="indices into documents")


class CorpusClass(BaseModel):
    label: str
    documents: int
    words: list[CorpusWord]


class CorpusDocument(BaseModel):
    index: int
    line: int
    text: str
    label: str | None
    prediction: str | None
    explained: str | None = Field(description="the label its relevance was counted under")


class Rejected(BaseModel):
    line: int
    reason: str


class CorpusResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    by: Literal["label", "prediction"]
    composite: str
    classes: list[CorpusClass]
    documents: list[CorpusDocument]
    unexplained: list[int] = Field(description="documents with no word of the model's vocabulary")
    rejected: list[Rejected]


class ModelInfo(BaseModel):
    name: str
    kind: Literal["text", "image"] = Field(description="what it explains: text at POST /v1/explain, images at "
                                                       "POST /v1/explain-image")
    architecture: str = Field(description="cnn, lstm, vgg, ... (lrptext train's --arch), a scikit-learn "
                                          "estimator's class, or a Hugging Face model type (bert, roberta, ...)")
    labels: list[str]
    composites: list[str]
    default_composite: str
    methods: list[str]
    contrast: bool
    layers: bool
    size: int | None = None
    channels: int | None = None
    max_length: int | None = Field(None, description="transformers: tokens per window, special tokens included; "
                                                     "longer documents are read in overlapping windows")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]
    queued: int
    batches: int
    requests: int
    inputs: int
    largest_batch: int


class Error(BaseModel):
    code: str = Field(description="invalid_json, invalid_request, too_large, unexplainable, not_found, busy, "
                                  "timeout, internal")
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: Error
