"""``lrptext serve``: a local web page to explore explanations and an HTTP JSON API on the same code (extra
``serve``: FastAPI and uvicorn). Only the models named when the server starts can be explained.

- ``models``: the served models (document classifiers, scikit-learn pipelines, image classifiers) and what each
  request may ask of them,
- ``batching``: concurrent requests merged into one pass through the kernels,
- ``corpus``: the words with the largest summed relevance per class over an uploaded corpus,
- ``app``: the routes, limits and errors; ``server``: the command line's entry point."""

from lrptext.serve.limits import Limits

__all__ = ["Limits", "create_app"]


def create_app(*args, **kwargs):
    """The ASGI application (lrptext.serve.app.create_app); imported on use, so that ``lrptext.serve.Limits`` works
    without the web stack."""
    from lrptext.serve.app import create_app as create

    return create(*args, **kwargs)
