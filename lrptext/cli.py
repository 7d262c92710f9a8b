"""The command line: ``lrptext info | demo``. ``main(argv) -> int`` (0 ok, 1 error, 2 usage) so tests call it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

import lrptext
from lrptext import kernels
from lrptext.rules import Epsilon, Gamma, ZPlus


def info(args: argparse.Namespace) -> int:
    print(json.dumps(lrptext.build_info(), indent=2))
    return 0


def demo(args: argparse.Namespace) -> int:
    """LRP through a small bias-free ReLU network, layer by layer with the kernels: relevance per input feature,
    and conservation (the input relevance sums to the explained logit)."""
    g = torch.Generator().manual_seed(args.seed)
    w1, w2 = torch.randn(16, 8, generator=g, dtype=torch.float64), torch.randn(3, 16, generator=g, dtype=torch.float64)
    x = torch.randn(1, 8, generator=g, dtype=torch.float64)
    z1 = x @ w1.T
    h = z1.clamp(min=0)
    logits = h @ w2.T
    target = int(logits.argmax())
    r_out = torch.zeros_like(logits)
    r_out[0, target] = logits[0, target]
    print(f"logits {logits[0].numpy().round(4).tolist()}, explaining class {target}")
    for name, rule in (("epsilon", Epsilon()), ("zplus", ZPlus()), ("gamma", Gamma())):
        r_hidden = kernels.dense_relevance(h, w2, None, r_out, rule=Epsilon(), backend=args.backend)
        r_in = kernels.dense_relevance(x, w1, None, r_hidden, rule=rule, z=z1 if name != "zplus" else None,
                                       backend=args.backend)
        print(f"{name:>8} first layer: relevance {r_in[0].numpy().round(3).tolist()}  "
              f"sum {float(r_in.sum()):.6f} vs logit {float(logits[0, target]):.6f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrptext", description="Layer-wise Relevance Propagation for text and images")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="how the kernels were built (BLAS, threads, CUDA)").set_defaults(run=info)
    p = commands.add_parser("demo", help="explain a small network layer by layer with the kernels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["auto", "cpp", "torch"], default="auto")
    p.set_defaults(run=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError) as error:
        print(f"lrptext: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
