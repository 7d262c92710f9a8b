"""The command line: ``lrptext info | demo``. ``main(argv) -> int`` (0 ok, 1 error, 2 usage) so tests call it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

import lrptext


def info(args: argparse.Namespace) -> int:
    print(json.dumps(lrptext.build_info(), indent=2))
    return 0


def demo(args: argparse.Namespace) -> int:
    """Explains a small random text CNN fed token ids: the support table, then per-token relevance for three
    composites, with conservation (bias-free, so the token relevance sums to the explained logit)."""
    torch.manual_seed(args.seed)
    model = _demo_cnn().double().eval()
    ids = torch.randint(1, 50, (1, 12), generator=torch.Generator().manual_seed(args.seed))
    print(lrptext.support_table(model, composite="epsilon_plus_flat"))
    for name in ("epsilon", "epsilon_plus", "epsilon_plus_flat"):
        e = lrptext.explain(model, ids, composite=name, backend=args.backend)
        print(f"{name:>18}: class {int(e.target[0])}, relevance per token {e.relevance[0].numpy().round(3).tolist()}")
        print(f"{'':>18}  sum {float(e.relevance.sum()):.6f} vs logit {float(e.initial[0]):.6f}")
    return 0


def _demo_cnn() -> torch.nn.Module:
    from torch import nn

    class TextCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(50, 8)
            self.convs = nn.ModuleList([nn.Conv1d(8, 6, k, bias=False) for k in (2, 3)])
            self.fc = nn.Linear(12, 3, bias=False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.embedding(ids).transpose(1, 2)
            return self.fc(torch.cat([torch.relu(c(x)).amax(dim=2) for c in self.convs], dim=1))

    return TextCNN()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrptext", description="Layer-wise Relevance Propagation for text and images")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="how the kernels were built (BLAS, threads, CUDA)").set_defaults(run=info)
    p = commands.add_parser("demo", help="explain a small random text CNN fed token ids")
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
