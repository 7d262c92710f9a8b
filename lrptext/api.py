"""lrptext.explain(): the one entry point for every kind of model. A torch module goes to the engine; a fitted
scikit-learn classifier or Pipeline to its integration (lrptext.integrations.sklearn), which the engine never
imports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from lrptext import engine

if TYPE_CHECKING:
    import torch

    from lrptext.engine.targets import Target
    from lrptext.rules import Composite


def explain(model: Any, inputs: Any, *, target: Target = None, composite: str | Composite | None = None,
            backend: str = "auto", output_relevance: torch.Tensor | None = None, layers: bool = False,
            **options: Any) -> Any:
    """Explain `model`'s prediction on `inputs` with LRP. One-off: build an Explainer to explain many batches.

    model: an nn.Module (composite default "epsilon_plus"), or a fitted scikit-learn classifier or
    vectorizer + classifier Pipeline (see lrptext.integrations.sklearn): raw texts then give a list of
    DocumentExplanation with word relevance, a feature matrix an Explanation of the features."""
    if not isinstance(model, nn.Module) and hasattr(model, "predict"):
        from lrptext.integrations import sklearn as sk

        ignored = [name for name, given in (("output_relevance", output_relevance is not None), ("layers", layers),
                                            *((k, True) for k in options)) if given]
        if ignored:
            raise ValueError(f"{', '.join(ignored)}: not available for scikit-learn models, which lrptext explains "
                             "through an equivalent torch network; leave them out, or explain a torch model")
        return sk.explain_estimator(model, inputs, target=target, composite=composite, backend=backend)
    return engine.explain(model, inputs, target=target, composite=composite, backend=backend,
                          output_relevance=output_relevance, layers=layers, **options)
