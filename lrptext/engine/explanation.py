"""The result of explain()."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Explanation:
    """Relevance per input element with the prediction it explains.

    relevance: like the input for float inputs, Tensor[B, T] per token for token ids (a tuple when the model
        takes several inputs; None for inputs that receive no relevance, such as offsets).
    prediction: the model's output (logits) Tensor[B, C].
    target: the explained class per sample; contrast: the class it is contrasted against (or None).
    initial: Σ of the initial relevance per sample (the target logit, or f_c − f_c').
    delta: conservation delta per sample, Σ input relevance − initial (≈ 0 for bias-free models with ε → 0).
    layer_relevance: with layers=True, Σ of the relevance at each node's output per sample, Tensor[B], by module
        path ("encoder.layer.0.output.dense"), by the calling module's path and the node for functions in a Hugging
        Face model ("encoder.layer.0.output:add_7"), else by node name ("add_7"); for the nodes whose output keeps
        an axis per sample, wherever the graph put it (a recurrent layer's time-first [T, B, H] too; found by a
        second forward pass with one more sample, the first repeated, where the inputs allow it); a node whose
        value the samples share (a broadcast parameter: position embeddings) is listed only for a batch of one,
        since its relevance in a batch is the sum over the samples; one that merges the samples with another axis
        ([B * T, D]) is not listed, nor a tuple output (a recurrent layer's: its items are).
    head_relevance: with layers=True, for each attention (scaled dot-product attention, or the product of the
        probabilities and V in eager attention) by the path of the module that calls it: Σ of the relevance at its
        output per sample and head, Tensor[B, H]; the heads' shares of the relevance through that attention.
    """

    relevance: torch.Tensor | tuple[torch.Tensor | None, ...]
    prediction: torch.Tensor
    target: torch.Tensor | None
    contrast: torch.Tensor | None
    initial: torch.Tensor
    delta: torch.Tensor
    layer_relevance: dict[str, torch.Tensor] | None = None
    head_relevance: dict[str, torch.Tensor] | None = None
