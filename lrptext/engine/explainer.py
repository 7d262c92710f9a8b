"""The Explainer: everything that depends only on the model (graph, rules, rule-modified weights) is prepared once;
each explain() call runs one recorded forward pass and one relevance pass."""

from __future__ import annotations

import gc
import inspect
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from lrptext import _native, kernels
from lrptext.engine.assign import SupportTable, assign_rules, check_static_support, support_rows
from lrptext.engine.explanation import Explanation
from lrptext.engine.propagate import Layer, RelevancePass, batch_axes, forward
from lrptext.engine.targets import Target, initial_relevance
from lrptext.graph import Graph, Node, capture
from lrptext.graph.capture import export, forward_parameters
from lrptext.layers import CANONIZERS as CANONIZER_PASSES, KINDS
from lrptext.rules.composites import Composite, composite as resolve_composite
from lrptext.rules.rule import Epsilon, LinearRule

CANONIZERS = tuple(CANONIZER_PASSES)
TOKEN_IDS = "input_ids"  # the keyword of token ids in Hugging Face models' forward
TOKENIZER_EXTRAS = {"token_type_ids", "special_tokens_mask", "offset_mapping", "overflow_to_sample_mapping", "length"}
_MASK_AND_IDS = ("attention_mask", "token_type_ids")  # keyword inputs that hold whole numbers, whatever their dtype


def _as_integers(name: str, value: Any) -> Any:
    """A float attention mask of 0s and 1s (some pipelines make one) or float token types as integers, which the
    model reads the same: captured as floats, they would be inputs relevance flows through (a mask's products
    with the hidden states refused as gates) and take the model's compute dtype."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return value
    whole = value == value.round()
    if name == "attention_mask":
        whole &= (value == 0) | (value == 1)
    if not bool(whole.all()):
        raise ValueError(f"input '{name}' must hold {'0s and 1s' if name == 'attention_mask' else 'whole numbers'}, "
                         f"got {value[~whole].flatten()[0].item()!r}; lrptext has no rule for a soft mask: pass "
                         f"{name}.round().long() or a tokenizer's own {name}")
    return value.long()


def _promote(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 compute in float32; float32 and float64 stay."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in t. A finite sum proves it (any NaN or infinity makes the sum NaN or infinite) in one
    reduction, where torch.isfinite takes several passes and a bool tensor (docs/performance.md); only a sum that
    overflows needs the element-wise check."""
    return math.isfinite(t.sum().item()) or bool(torch.isfinite(t).all())


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of the model, read from each module's own tables: model.modules() and
    model.parameters() build names and generators on the way (a third of a millisecond per explanation for a
    6-layer encoder); plain loops, without generator expressions, take 0.05 ms there."""
    tensors: list[torch.Tensor] = []
    stack, seen = [model], set()
    append, push = tensors.append, stack.append
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        for t in m._parameters.values():
            if t is not None:
                append(t)
        for t in m._buffers.values():
            if t is not None:
                append(t)
        for c in m._modules.values():
            if c is not None:
                push(c)
    return tensors


def _state_versions(model: nn.Module) -> list[tuple[int, int, int]]:
    """Changes in place bump a tensor's version; a replaced parameter changes its identity and storage."""
    return [(id(t), t.data_ptr(), t._version) for t in _tensors(model)]


def _spread(t: torch.Tensor) -> torch.Tensor:
    """A view of 16 elements of t spread over its rows and its columns: a step through the flat tensor whole rows
    long plus 0.38 of a row (a multiple of the row length alone would read one column only)."""
    n, row = t.numel(), t.shape[-1] if t.dim() else 1
    step = max(1, n // 16)
    if step >= row:
        step = step - step % row + int(0.381966 * row)
    return t.detach().reshape(-1)[::step][:16]


def _samples(model: nn.Module) -> list[tuple[torch.Tensor, list]]:
    """16 elements spread over each parameter and buffer of the model, as views (which read the tensor as it is
    then) and their values now: an edit through .data (p.data.mul_(2), p.data -= lr * p.grad) bumps no version,
    but shows in the samples of any tensor whose elements it all changes."""
    views = [_spread(t) for t in _tensors(model) if t.numel() and t.device.type == "cpu"]
    return [(view, view.tolist()) for view in views]


class _CollectorPaused:
    """Python's cycle collector off while explanations run: a pass makes thousands of short-lived objects, which
    start collections that walk every object of the process (a loaded tokenizer and model: hundreds of
    thousands), about 2% of a 6-layer encoder's explanation at batch 1 (docs/performance.md); the pass's objects
    go by reference counting (they form no cycles). Back on when the last of concurrent explanations ends, if it
    was on before the first began (so a gc.disable() that another thread makes meanwhile is undone then)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._running == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._running += 1

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0 and self._was_enabled:
                gc.enable()


_COLLECTOR_PAUSED = _CollectorPaused()


class Explainer:
    """Explains one model with one set of rules; reuse it across calls.

    >>> explainer = Explainer(model, composite="epsilon_plus")
    >>> explanation = explainer.explain(inputs, target=None)

    composite: a name from lrptext.rules.COMPOSITES (parameters as keyword arguments, e.g. low=, high= for
    "epsilon_gamma_box") or a Composite. layer_map: {module type: rule} and name_map: {qualified name: rule}
    refine it. canonizers: ("batchnorm",) folds BatchNorm into the layer before it (on copies), () disables it.
    bias_factor (Arras et al. 2017): 0 lets biases and stabilisers keep their share; 1 spreads it over each layer's
    inputs, which conserves relevance (dense, convolution and recurrent layers under the epsilon rule).
    The model is never modified: no hooks, no parameter or flag changes; explanations follow eval semantics
    (dropout off, BatchNorm running statistics) whatever model.training says. Rule-modified weights are cached
    and rebuilt when the model's parameters change in place (optimizer steps, load_state_dict).
    """

    def __init__(self, model: nn.Module, *, composite: str | Composite = "epsilon_plus",
                 layer_map: Mapping[Any, Any] | None = None, name_map: Mapping[str, Any] | None = None,
                 canonizers: Sequence[str] = CANONIZERS, backend: str = "auto", bias_factor: float = 0.0,
                 **composite_params: Any):
        unknown = sorted(set(canonizers) - set(CANONIZERS))
        if unknown:
            raise ValueError(f"unknown canonizers {unknown}; available: {', '.join(CANONIZERS)}")
        if backend not in kernels.BACKENDS:
            raise ValueError(f"'backend' must be one of {', '.join(kernels.BACKENDS)}, got {backend!r}")
        if isinstance(bias_factor, bool) or not isinstance(bias_factor, (int, float)) or not 0 <= bias_factor <= 1:
            raise ValueError(f"'bias_factor' must be a number in [0, 1] (0: biases absorb their share, 1: it is "
                             f"redistributed over each layer's inputs, which conserves relevance), got {bias_factor!r}")
        self.bias_factor = float(bias_factor)
        self.model = model
        self.composite = resolve_composite(composite, **composite_params)
        self.layer_map, self.name_map = dict(layer_map or {}), dict(name_map or {})
        self.canonizers = tuple(canonizers)
        self.backend = backend
        self._build()

    def _build(self) -> None:
        self._graphs: dict[Key, tuple[Graph, dict[str, Any]]] = {}
        self._signature = forward_parameters(self.model)
        # *args, **kwargs or keyword-only arguments: every argument is an input, none may be left out
        self._plain_signature = _plain_signature(self.model)
        self._parameters = [p.name for p in self._signature]
        # forward(input_ids, attention_mask=None, ...): a Hugging Face encoder or a module wrapping one, which
        # torch.fx cannot trace: captured by torch.export, inputs by keyword
        self.keyword_inputs = TOKEN_IDS in self._parameters
        self.graph, self.rules = self._graph(_default_key(self.model))
        # whether a weight computes in float64 (converting the parameters changes their storage, which rebuilds)
        self._weights64 = any(_promote(n.params["weight"].dtype) == torch.float64 for n in self.graph.nodes
                              if n.params.get("weight") is not None)
        # by node object: each graph of this Explainer (optional arguments given or not, keyword sets) has its own
        # nodes, and a name may stand for another layer in another graph
        self._layers: dict[tuple[int, torch.dtype], Layer] = {}
        self._versions = _state_versions(self.model)
        self._samples = _samples(self.model)

    def _graph(self, key: Key) -> tuple[Graph, dict[str, Any]]:
        """The graph (and its rules) for a call that gives forward's arguments `key` (see Key)."""
        if key not in self._graphs:
            graph = _capture(self.model, key, self.canonizers)
            rules = assign_rules(graph, self.composite, self.layer_map, self.name_map)
            check_static_support(graph, rules)
            _check_bias_factor(graph, self.bias_factor)
            self._graphs[key] = graph, rules
        return self._graphs[key]

    def support_table(self) -> SupportTable:
        return support_rows(self.graph, self.rules)

    # -- weights in the compute dtype, with rule-modified copies, once per (node, dtype) ---------------------
    # (a weight moved to another device is another tensor: the Explainer builds its layers again then, as for any
    # parameter changed in place)
    def _layer(self, node: Node, dtype: torch.dtype, rules: dict[str, Any] | None = None) -> Layer:
        key = (id(node), dtype)
        layer = self._layers.get(key)
        if layer is None:
            rules = self.rules if rules is None else rules
            w = node.params["weight"].detach().to(dtype)
            bias = node.params.get("bias")
            b = None if bias is None else bias.detach().to(dtype)
            prepared = (None, None)
            if isinstance(rules.get(node.name), LinearRule):
                w, b = w.contiguous(), None if b is None else b.contiguous()
                modified = kernels.prepare_weights(rules[node.name], w, backend=self.backend)
                prepared = (modified.weight_a, modified.weight_b)
            layer = self._layers[key] = Layer(w, b, prepared)
        return layer

    def _compute_dtype(self, inputs: tuple[Any, ...]) -> torch.dtype:
        return torch.float64 if self._weights64 or any(
            isinstance(x, torch.Tensor) and x.dtype == torch.float64 for x in inputs) else torch.float32

    def _keyword_inputs(self, inputs: Any) -> tuple[tuple[Any, ...], Graph, dict[str, Any]]:
        """A tokenizer's BatchEncoding or a dict (input_ids, attention_mask, token_type_ids...) as the graph's
        inputs; a tensor alone is the token ids."""
        given = dict(inputs) if isinstance(inputs, Mapping) else {TOKEN_IDS: inputs}
        # what a tokenizer returns beside the model's inputs, and token types for a forward that takes none
        given = {k: v for k, v in given.items() if k in self._parameters or k not in TOKENIZER_EXTRAS}
        unknown = sorted(set(given) - set(self._parameters))
        if unknown or TOKEN_IDS not in given:
            raise ValueError(f"{type(self.model).__name__}.forward takes {self._parameters}; got {sorted(given)}: pass "
                             f"'{TOKEN_IDS}' (and 'attention_mask' for a padded batch), e.g. a tokenizer's output")
        for name, value in given.items():
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"input '{name}' must be a torch.Tensor, got {type(value).__name__}; ask the tokenizer "
                                "for tensors with return_tensors='pt'")
        for name in _MASK_AND_IDS:
            if name in given:
                given[name] = _as_integers(name, given[name])
        names = tuple(k for k in self._parameters if given.get(k) is not None)
        key = Key("export", names, tuple(str(given[k].dtype) for k in names))
        graph, rules = self._graph(key)
        return tuple(given[node.qualified_name] for node in graph.inputs), graph, rules

    def _check_inputs(self, inputs: Any) -> tuple[tuple[Any, ...], Graph, dict[str, Any]]:
        """The inputs as a tuple, and the graph and rules for them."""
        if self.keyword_inputs:
            inputs, graph, rules = self._keyword_inputs(inputs)
        else:
            if isinstance(inputs, Mapping):
                raise TypeError(f"{type(self.model).__name__}.forward takes {self._parameters} by position: pass a "
                                "tensor or a tuple of tensors, not a dict")
            inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
            parameters = self._signature
            if not self._plain_signature:  # *args, **kwargs, keyword-only: one tensor per traced input
                graph, rules = self.graph, self.rules
                if len(inputs) != len(graph.inputs):
                    names = [n.qualified_name for n in graph.inputs]
                    raise ValueError(f"the model's forward takes {len(names)} input(s) {names}, got {len(inputs)}; "
                                     "pass a tuple with one tensor per argument")
                return self._checked(inputs, graph, rules)
            absent = [p for x, p in zip(inputs, parameters) if x is None] + parameters[len(inputs):]
            if not 0 < len(inputs) <= len(parameters) or any(p.default is not None for p in absent):
                names = [p.name for p in parameters]
                raise ValueError(f"the model's forward takes {len(names)} input(s) {names}, got {len(inputs)}; pass a "
                                 "tuple with one tensor per argument (those that default to None may be None or left "
                                 "out at the end)")
            present = tuple(p.name for x, p in zip(inputs, parameters) if x is not None)
            graph, rules = self._graph(Key("fx", present if absent else None))
            inputs = tuple(x for x in inputs if x is not None)
        return self._checked(inputs, graph, rules)

    def _checked(self, inputs: tuple[Any, ...], graph: Graph, rules: dict[str, Any]
                 ) -> tuple[tuple[Any, ...], Graph, dict[str, Any]]:
        """The inputs, refused unless they are tensors on the model's device."""
        devices = graph.weight_devices
        for i, x in enumerate(inputs):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"input {i} ('{graph.inputs[i].qualified_name}') must be a torch.Tensor, got "
                                f"{type(x).__name__}")
            if devices and x.device not in devices:
                target_device = str(next(iter(devices)))
                raise ValueError(f"input {i} is on {x.device} but the model's parameters are on "
                                 f"{', '.join(map(str, devices))}; move the input with .to({target_device!r})")
        return inputs, graph, rules

    def explain(self, inputs: Any, *, target: Target = None, output_relevance: torch.Tensor | None = None,
                layers: bool = False) -> Explanation:
        """Relevance of every input element for the target logit (None: the predicted class per sample; an int;
        one per sample; or Contrast(c, c')), or for a given output_relevance Tensor[B, C]."""
        if _state_versions(self.model) != self._versions or any(v.tolist() != was for v, was in self._samples):
            self._build()  # parameters changed (in place, or through .data) since the weights were prepared
        inputs, graph, rules = self._check_inputs(inputs)
        dtype = self._compute_dtype(inputs)
        inputs = tuple(x.detach().to(dtype) if x.is_floating_point() else x.detach() for x in inputs)
        for i, x in enumerate(inputs):
            if x.is_floating_point() and not _all_finite(x):
                raise ValueError(f"input {i} ('{graph.inputs[i].qualified_name}') holds NaN or infinity; "
                                 "relevance of non-finite values is undefined, so clean the input first")
        with _COLLECTOR_PAUSED:
            relevance, logits, initial_sum, target_t, contrast, sums, segments, heads = self._run(
                graph, rules, inputs, dtype, target, output_relevance, layers)
        per_input: list[torch.Tensor | None] = []
        for node, x in zip(graph.inputs, inputs):
            if self.keyword_inputs and node.qualified_name != TOKEN_IDS:
                per_input.append(None)  # the mask, token types: their embeddings' share is absorbed, as a bias's
                continue
            if node.name in relevance:
                if not _all_finite(relevance[node.name]):
                    # Run again with a check after every node, to name the node and the rule it came from.
                    with _COLLECTOR_PAUSED:
                        self._run(graph, rules, inputs, dtype, target, output_relevance, layers,
                                  locate_non_finite=True)
                    raise ValueError(f"the relevance of input '{node.qualified_name}' came out NaN or infinite from "
                                     "finite inputs")
                per_input.append(relevance[node.name])
            elif x.is_floating_point():
                per_input.append(torch.zeros_like(x))  # relevance never reached it (e.g. all of it went to biases)
            else:
                per_input.append(None)
        if self.keyword_inputs:  # Tensor[B, T] of the token ids
            per_input = [r for node, r in zip(graph.inputs, per_input) if node.qualified_name == TOKEN_IDS]
            graph = Graph(nodes=graph.nodes, inputs=[n for n in graph.inputs if n.qualified_name == TOKEN_IDS],
                          output=graph.output)
        return Explanation(
            relevance=per_input[0] if len(per_input) == 1 else tuple(per_input),
            prediction=logits,
            target=target_t,
            contrast=contrast,
            initial=initial_sum,
            delta=_delta(graph, inputs, per_input, segments, initial_sum),
            layer_relevance=sums if layers else None,
            head_relevance=heads if layers else None,
        )

    def _run(self, graph: Graph, rules: dict[str, Any], inputs: tuple[torch.Tensor, ...], dtype: torch.dtype,
             target: Target, output_relevance: torch.Tensor | None, layers: bool,
             locate_non_finite: bool = False) -> tuple:
        def layer(node: Node) -> Layer:
            return self._layer(node, dtype, rules)

        with torch.no_grad():
            # the C++ core computes the small layers' forward pass too, unless the torch backend was asked for
            core = self.backend != "torch" and _native.core is not None
            state, carries = forward(graph, inputs, rules, layer, core)
            try:
                logits = state.values[graph.output.name]
                initial, target_t, contrast = initial_relevance(logits, target, output_relevance)
                initial_sum = initial.sum(1)  # before the pass, whose kernels may overwrite the relevance they take
                # per-layer sums need every node's relevance, so the fused embedding path is off when they are
                # asked for
                relevance_pass = RelevancePass(graph, rules, state, carries, self.backend, fuse=not layers,
                                               bias_factor=self.bias_factor)
                if layers:
                    relevance_pass.batch_axes = batch_axes(graph, inputs, state, rules, layer, core)
                if locate_non_finite:
                    relevance_pass.on_relevance = lambda node, arg, r: _check_finite(node, rules.get(node.name), r,
                                                                                     dtype)
                relevance, sums = relevance_pass.run(initial, layers)
            finally:
                state.close()
        return (relevance, logits, initial_sum, target_t, contrast, sums, relevance_pass.segments,
                relevance_pass.head_sums)


# Kinds whose rules leave a share to a bias or an offset that bias_factor does not redistribute (yet).
_WITHOUT_BIAS_FACTOR = ("layer_norm", "attention", "softmax", "product")


def _check_bias_factor(graph: Graph, bias_factor: float) -> None:
    """bias_factor != 0 only where every layer's rule can redistribute its bias share: dense, convolution and
    recurrent layers under the epsilon rule (they check their rule), and the kinds without a bias."""
    if not bias_factor:
        return
    for node in graph.nodes:
        if node.kind.name in _WITHOUT_BIAS_FACTOR:
            raise ValueError(f"bias_factor={bias_factor}: {node.op} at '{node.qualified_name}' ({node.kind.name}) "
                             "keeps its bias's share under its rule, which has no bias factor; leave bias_factor at 0")


def _check_finite(node: Node, rule: Any, r: torch.Tensor, dtype: torch.dtype) -> None:
    """The error for relevance that a node's rule turned NaN or infinite, with the remedy for that rule."""
    if _all_finite(r):
        return
    parameter = "epsilon" if isinstance(rule, Epsilon) else "stabilizer"
    stabilizer = getattr(rule, parameter, None)
    if isinstance(rule, Epsilon) and rule.epsilon == 0:
        remedy = "LRP-0 (Epsilon(0)) divides by z where z = 0: give it a positive epsilon, e.g. Epsilon(1e-6)"
    elif stabilizer == 0:
        remedy = (f"its stabilizer is 0 and a denominator is exactly 0: give {type(rule).__name__} a positive "
                  "stabilizer (the default is 1e-6)")
    elif dtype != torch.float64:
        remedy = f"a denominator near 0 or an overflow in {dtype}: explain in float64 (pass the input as float64)"
        remedy += f" or give the rule a larger {parameter}" if stabilizer is not None else ""
    else:
        remedy = "an overflow even in float64" + (f": give the rule a larger {parameter}" if stabilizer is not None
                                                   else "; scale the model's weights or inputs down")
    raise ValueError(f"relevance became NaN or infinite at {node.op} ('{node.qualified_name}') under {rule!r}: "
                     f"{remedy}")


def _delta(graph: Graph, inputs: tuple[torch.Tensor, ...], per_input: list[torch.Tensor | None],
           segments: dict[str, torch.Tensor], initial_sum: torch.Tensor) -> torch.Tensor:
    """Σ input relevance − Σ initial relevance per sample; one number for the whole batch where the output's
    batch is not the input's (a model that pools or reshapes its batch), as samples cannot be matched then."""
    batch = {r.shape[0] for node, r in zip(graph.inputs, per_input) if r is not None and node.name not in segments}
    batch |= {int(s.max()) + 1 if s.numel() else 0 for s in segments.values()}
    if batch != {initial_sum.shape[0]}:
        total = sum(float(r.sum()) for r in per_input if r is not None)
        return initial_sum.new_tensor([total - float(initial_sum.sum())])
    total = torch.zeros_like(initial_sum)
    for node, r in zip(graph.inputs, per_input):
        if r is None:
            continue
        if node.name in segments:  # 1-D ids of bags: sum each token into its bag's sample
            total = total.index_add(0, segments[node.name], r.to(total.dtype))
        else:
            total = total + r.reshape(r.shape[0], -1).sum(1)
    return total - initial_sum


def explain(model: nn.Module, inputs: Any, *, target: Target = None, composite: str | Composite | None = None,
            backend: str = "auto", output_relevance: torch.Tensor | None = None, layers: bool = False,
            **options: Any) -> Explanation:
    """Explain a torch `model`'s prediction on `inputs` with LRP (composite default "epsilon_plus"). One-off: build
    an Explainer to explain many batches. lrptext.explain() also takes fitted scikit-learn estimators."""
    return Explainer(model, composite=composite or "epsilon_plus", backend=backend, **options).explain(
        inputs, target=target, output_relevance=output_relevance, layers=layers)


class Key(NamedTuple):
    """What a graph is captured for: by torch.fx ("fx") with forward's arguments `names` given (None: all; the
    others, which default to None, are absent), or by torch.export ("export") with those keyword arguments."""

    mode: str
    names: tuple[str, ...] | None
    dtypes: tuple[str, ...] | None = None  # export: the keyword tensors' dtypes (None: token ids and masks as int64)


def _plain_signature(model: nn.Module) -> bool:
    """forward takes positional arguments only (no *args, **kwargs or keyword-only ones)."""
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return all(p.kind in plain for p in inspect.signature(model.forward).parameters.values())


def _default_key(model: nn.Module) -> Key:
    """What a model is captured for before it sees an input: its token ids and mask by keyword (a Hugging Face
    encoder), or its arguments without those that default to None."""
    parameters = forward_parameters(model)
    names = [p.name for p in parameters]
    if TOKEN_IDS in names:
        keys = tuple(k for k in (TOKEN_IDS, "attention_mask") if k in names)
        return Key("export", keys, ("torch.int64",) * len(keys))
    if not _plain_signature(model):
        return Key("fx", None)
    required = tuple(p.name for p in parameters if p.default is inspect.Parameter.empty)
    optional = [p for p in parameters if p.name not in required]
    if not optional or any(p.default is not None for p in optional):
        return Key("fx", None)
    return Key("fx", required)


def _capture(model: nn.Module, key: Key, canonizers: Sequence[str]) -> Graph:
    """The graph for `key`: positional inputs by torch.fx; keyword ones by torch.export, from an example of token
    ids 0 and a mask of ones for two sequences of 8 in the call's dtypes, whatever the call's own sizes (an example
    of one sequence, or of length 1, would fix that size in the graph): batch and length stay dynamic."""
    passes = [CANONIZER_PASSES[name] for name in canonizers]
    if key.mode == "fx":
        return capture(model, KINDS, present=key.names, canonizers=passes)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtypes = [getattr(torch, d.removeprefix("torch.")) for d in key.dtypes] if key.dtypes else [torch.long] * len(
        key.names)
    example = {k: torch.full((2, 8), int(k == "attention_mask"), dtype=dtype, device=device)
               for k, dtype in zip(key.names, dtypes)}
    return export(model, example, KINDS, canonizers=passes)


def support_table(model: nn.Module, *, composite: str | Composite = "epsilon_plus",
                  layer_map: Mapping[Any, Any] | None = None, name_map: Mapping[str, Any] | None = None,
                  canonizers: Sequence[str] = CANONIZERS, **composite_params: Any) -> SupportTable:
    """Every node of the model with the rule it will get (unsupported nodes marked), before anything runs."""
    unknown = sorted(set(canonizers) - set(CANONIZERS))
    if unknown:
        raise ValueError(f"unknown canonizers {unknown}; available: {', '.join(CANONIZERS)}")
    graph = _capture(model, _default_key(model), canonizers)
    rules = assign_rules(graph, resolve_composite(composite, **composite_params), layer_map, name_map)
    return support_rows(graph, rules)
