"""The web application: the explorer page, its static files and the JSON API (FastAPI).

Every error reaches the client as ``{"error": {"code", "message", "field"?}}`` with a 4xx status that says whose
it is; anything unexpected is logged with its traceback and answered with a 500 that holds no detail."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from lrptext.serve import schema
from lrptext.serve.batching import Batcher, Busy, TooSlow
from lrptext.serve.corpus import CorpusRequest, read_records, top_words
from lrptext.serve.limits import Limits
from lrptext.serve.models import RequestError, ServedModel, TextModel, TooLarge
from lrptext.text.render import BLUE, RED

logger = logging.getLogger("lrptext.serve")
STATIC = Path(__file__).resolve().parent / "static"
# The page loads nothing from elsewhere and runs no inline script; a document's text is only ever set as text.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **({"field": field} if field else {})}}
    return JSONResponse(body, status_code=status)


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413, from its Content-Length before it is read, or while it
    is read when it has none. Pure ASGI, so it holds for every route."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(413, "too_large", f"the request body is larger than this server's limit of "
                                             f"{self.limit:,} bytes; send fewer or smaller documents")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_large(scope, receive, send)
        received, exceeded, answered = 0, False, False

        async def counted() -> dict:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            nonlocal answered
            if exceeded:  # whatever the application answers to a cut-off body, the client learns why
                if not answered:
                    answered = True
                    await too_large(scope, receive, send)
                return
            await send(message)

        await self.app(scope, counted, guarded)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer (pure ASGI: no per-request task, unlike @app.middleware)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADER_BYTES]
            await send(message)

        await self.app(scope, receive, with_headers)


HEADER_BYTES = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


def create_app(models: dict[str, ServedModel], *, limits: Limits | None = None, batching: bool = True) -> FastAPI:
    """The application serving `models` (lrptext.serve.models.load_models)."""
    if not models:
        raise ValueError("create_app needs at least one model (lrptext.serve.models.load_models)")
    limits = limits or Limits()
    batcher = Batcher(enabled=batching, max_items=limits.max_documents, max_queued=limits.max_queued_documents,
                      timeout_s=limits.timeout_s)
    page = _page(models, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="lrptext", summary="Layer-wise Relevance Propagation for documents and images",
                  description="Explanations of the models this server was started with. Errors answer "
                              '{"error": {"code", "message", "field"}}.',
                  docs_url=None, redoc_url=None, lifespan=lifespan)  # the docs pages load scripts from a CDN
    app.state.batcher, app.state.models, app.state.limits = batcher, models, limits
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    errors = {code: {"model": schema.ErrorResponse} for code in (400, 413, 422, 503)}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.code, error.message, error.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            reason = first.get("ctx", {}).get("error", "decode error")
            return _error(400, "invalid_json", f"the request body is not valid JSON ({reason})")
        # pydantic's message without the input it echoes: a 2 MB document is not sent back
        return _error(422, "invalid_request", f"{'.'.join(location) or 'body'}: {first.get('msg', 'invalid')}",
                      ".".join(location) or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 400:  # the body could not be read as JSON text (e.g. invalid UTF-8)
            return _error(400, "invalid_json", "the request body is not JSON in UTF-8; send "
                                               "Content-Type: application/json with UTF-8 text")
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "the server failed on this request; its log has the details")

    def pick(name: str | None, kind: str) -> ServedModel:
        if name is None:
            model = next((m for m in models.values() if m.kind == kind), None)
            if model is None:
                raise ApiError(422, "unexplainable", f"this server has no {kind} model", "model")
            return model
        if name not in models:
            raise ApiError(422, "unexplainable", f"unknown model {name!r}; this server has "
                                                 f"{', '.join(models)} (GET /v1/models)", "model")
        model = models[name]
        if model.kind != kind:
            other = "/v1/explain-image" if model.kind == "image" else "/v1/explain"
            raise ApiError(422, "unexplainable", f"model {name!r} explains {model.kind}s: POST to {other}", "model")
        return model

    def checked_goal(model: ServedModel, composite, method, target, contrast, layers):
        try:
            return model.goal(composite, method, target, contrast, layers)
        except RequestError as error:
            raise ApiError(422, "unexplainable", str(error)) from None

    def too_many(n: int, what: str, field: str) -> None:
        if n > limits.max_documents:
            raise ApiError(413, "too_large", f"{n} {what} in one request; this server takes at most "
                                             f"{limits.max_documents} (split them into several requests)", field)

    async def explained(model: ServedModel, goal_: Any, items: list) -> list:
        return await submitted((model.name, goal_), items, lambda xs: model.prepare(xs, limits.max_characters),
                               lambda xs: model.run(xs, goal_))

    async def submitted(key: Any, items: list, prepare: Any, run: Any) -> list:
        try:
            return await batcher.submit(key, items, prepare, run)
        except Busy as error:
            raise ApiError(503, "busy", str(error)) from None
        except TooSlow as error:
            raise ApiError(503, "timeout", str(error)) from None
        except TooLarge as error:
            raise ApiError(413, "too_large", str(error)) from None
        except (ValueError, TypeError) as error:  # the documents' or labels' fault, said by the model's checks
            raise ApiError(422, "unexplainable", str(error)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", response_model=schema.Health, summary="Liveness and the batcher's counters")
    async def healthz() -> dict:
        s = batcher.stats
        return {"status": "ok", "queued": batcher.queued, "batches": s.batches, "requests": s.jobs,
                "inputs": s.items, "largest_batch": s.largest}

    @app.get("/v1/models", response_model=schema.ModelsResponse, summary="The models this server explains")
    async def list_models() -> dict:
        return {"models": [m.describe() for m in models.values()]}

    @app.post("/v1/explain", response_model=schema.ExplainResponse, responses=errors,
              summary="Explain documents: word relevance as `lrptext explain-text --format json` writes it")
    async def explain(request: schema.ExplainRequest) -> Response:
        model = pick(request.model, "text")
        too_many(len(request.texts), "documents", "texts")
        g = checked_goal(model, request.composite, request.method, request.target, request.contrast, request.layers)
        results = await explained(model, g, request.texts)
        body = {"model": model.name, "method": g.method, "composite": g.composite if g.method == "lrp" else None,
                "labels": model.labels, "documents": [r["document"] for r in results],
                "probabilities": [r["probabilities"] for r in results]}
        if g.layers:
            body["layers"] = [r["layers"] for r in results]
        return _json(body)

    @app.post("/v1/explain-image", response_model=schema.ImageResponse, responses=errors,
              summary="Explain images: relevance per pixel")
    async def explain_image(request: schema.ImageRequest) -> Response:
        model = pick(request.model, "image")
        too_many(len(request.images), "images", "images")
        g = checked_goal(model, request.composite, "lrp", request.target, request.contrast, False)
        images = []
        for i, encoded in enumerate(request.images):
            try:
                images.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError):
                raise ApiError(422, "invalid_request", f"images.{i} is not base64", f"images.{i}") from None
        results = await explained(model, g, images)
        return _json({"model": model.name, "composite": g.composite, "labels": model.labels, "results": results})

    @app.post("/v1/corpus", response_model=schema.CorpusResponse, responses=errors,
              summary="The words with the largest summed relevance per class over a small corpus")
    async def corpus(request: schema.CorpusRequest) -> Response:
        model = pick(request.model, "text")
        if not isinstance(model, TextModel):
            raise ApiError(422, "unexplainable", f"model {model.name!r} is a scikit-learn pipeline; the corpus view "
                                                 "needs a model of 'lrptext train'", "model")
        g = checked_goal(model, request.composite, "lrp", None, None, False)
        spec = CorpusRequest(request.data, request.format, request.text_field, request.label_field, g.composite,
                             request.top)
        rejected: list = []

        def prepare(specs: list[CorpusRequest]) -> list:
            documents, refused = read_records(specs[0], model, limits.max_corpus_documents, limits.max_characters)
            rejected.extend(refused)
            return [documents]

        (result,) = await submitted(("corpus", id(spec)), [spec], prepare,
                                    lambda xs: [top_words(model, xs[0], g.composite, request.top)])
        return _json({"model": model.name, **result, "rejected": rejected})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _json(body: dict) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, allow_nan=False), media_type="application/json")


def _page(models: dict[str, ServedModel], limits: Limits) -> str:
    """index.html with the report's colours and the limits the page tells its users."""
    settings = {"colours": {"for": list(RED), "against": list(BLUE)},
                "limits": {"max_body_bytes": limits.max_body_bytes, "max_documents": limits.max_documents,
                           "max_characters": limits.max_characters,
                           "max_corpus_documents": limits.max_corpus_documents}}
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    return text.replace("{{SETTINGS}}", json.dumps(settings).replace('"', "&quot;"))
