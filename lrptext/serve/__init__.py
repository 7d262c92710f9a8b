"""``lrptext serve``: a local web page to explore explanations and an HTTP JSON API on the same code (extra
``serve``: FastAPI and uvicorn). Only the models named when the server starts can be explained.

- ``models``: the served models (document classifiers, Hugging Face transformers, scikit-learn pipelines, image
  classifiers) and what each request may ask of them,
- ``batching``: concurrent requests merged into one pass through the kernels,
- ``corpus``: the words with the largest summed relevance per class over an uploaded corpus,
- ``app``: the routes, limits and errors; ``server``: the command line's entry point."""

from lrptext.serve.limits import Limits

__all__ = ["Limits", "create_app"]


def __getattr__(name: str):
    # create_app is imported on use, so that the command line (which imports lrptext.serve.server) and
    # lrptext.serve.Limits work without the web stack installed
    if name == "create_app":
        from lrptext.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'lrptext.serve' has no attribute {name!r}")
