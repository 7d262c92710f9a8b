"""`lrptext serve`: loads the models named on the command line and runs the application with uvicorn."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import sys

from lrptext.serve.limits import Limits

logger = logging.getLogger("lrptext.serve")


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = Limits()
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH",
                   help="a model to serve (repeatable): a file of 'lrptext train', 'default' (the bundled SpamAssassin "
                        "CNN), 'default-image' (the bundled Fashion-MNIST CNN), a Hugging Face model folder "
                        "(config.json, model.safetensors, tokenizer.json; explained with attnlrp or cp_lrp), or a "
                        "scikit-learn pipeline (.joblib, with --allow-pickle); named after the file or folder unless "
                        "NAME= is given. Default: both bundled models. Nothing else can be loaded while the server "
                        "runs")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow --model .joblib/.pkl files: unpickling runs any code they hold; trusted files only")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the API has no authentication)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-batching", action="store_true",
                   help="explain every request in its own pass through the kernels instead of merging concurrent "
                        "ones (benchmarks/serve_load.py measures both)")
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                   help=f"largest request body: documents, a corpus or images (default {defaults.max_body_bytes:,})")
    p.add_argument("--max-documents", type=int, default=defaults.max_documents,
                   help=f"documents per request (default {defaults.max_documents})")
    p.add_argument("--max-characters", type=int, default=defaults.max_characters,
                   help=f"characters per document (default {defaults.max_characters:,})")
    p.add_argument("--max-corpus-documents", type=int, default=defaults.max_corpus_documents,
                   help=f"documents in an uploaded corpus (default {defaults.max_corpus_documents})")
    p.add_argument("--timeout", type=float, default=defaults.timeout_s,
                   help=f"seconds a request may wait and compute before it gets 503 (default {defaults.timeout_s:g})")


def serve(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise RuntimeError("lrptext serve needs its web stack: pip install 'lrptext[serve]'")
    import uvicorn

    from lrptext.serve.app import create_app
    from lrptext.serve.models import load_models

    limits = Limits(max_body_bytes=args.max_body_bytes, max_documents=args.max_documents,
                    max_characters=args.max_characters, max_corpus_documents=args.max_corpus_documents,
                    timeout_s=args.timeout)
    models = load_models(args.model, allow_pickle=args.allow_pickle)
    app = create_app(models, limits=limits, batching=not args.no_batching)
    if not _is_loopback(args.host):
        print(f"lrptext serve: listening on {args.host}, reachable from other machines; the API has no "
              "authentication: put it behind one", file=sys.stderr)
    names = ", ".join(f"{m.name} ({m.kind})" for m in models.values())
    print(f"lrptext serve: {names} on http://{_url_host(args.host)}:{args.port}/ (API: /v1/explain, "
          "/v1/models, /openapi.json)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
