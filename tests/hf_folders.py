"""Tiny Hugging Face sequence classifiers with tokenizers trained here from a few sentences (WordPiece for BERT,
byte-level BPE for RoBERTa), saved as model folders: config.json with id2label, model.safetensors, tokenizer.json.
Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

CORPUS = [
    "free money click here to claim your prize now",
    "the meeting is at noon, bring the quarterly report",
    "unbelievable offer!!! act now, limited time",
    "naive cafe resume uber deja vu",
    "please review the attached draft before friday",
    "winner winner you have been selected for a cash reward",
]
LABELS = {0: "ham", 1: "spam"}


def wordpiece_tokenizer(max_length: int | None = None):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False))
    specials = [(name, tok.token_to_id(name)) for name in ("[CLS]", "[SEP]")]
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=specials)
    options = {"model_max_length": max_length} if max_length else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", **options)


def byte_bpe_tokenizer(max_length: int | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    options = {"model_max_length": max_length} if max_length else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", **options)


def bert(tokenizer, positions: int = 64, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=positions, id2label=LABELS,
                        label2id={v: k for k, v in LABELS.items()}, pad_token_id=tokenizer.pad_token_id)
    return BertForSequenceClassification(config).eval()


def roberta(tokenizer, positions: int = 130, seed: int = 0):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=positions, id2label=LABELS,
                           label2id={v: k for k, v in LABELS.items()}, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=0, eos_token_id=2)
    return RobertaForSequenceClassification(config).eval()


def modernbert(tokenizer, positions: int = 64, seed: int = 0):
    """ModernBERT: rotary positions, a fused q, k, v projection, gated feed-forward layers, and a local layer (a
    window of 4) after a global one."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    torch.manual_seed(seed)
    config = ModernBertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=24, max_position_embeddings=positions, global_attn_every_n_layers=2,
                              local_attention=4, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                              eos_token_id=tokenizer.sep_token_id, cls_token_id=tokenizer.cls_token_id,
                              sep_token_id=tokenizer.sep_token_id)
    return ModernBertForSequenceClassification(config).eval()


def save_folder(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lively(model, seed: int = 0):
    """Weights redrawn so that activations are O(1) and attention far from uniform (Hugging Face's initialisation,
    std 0.02, gives a classifier whose output barely depends on its input): embeddings N(0, 1), linear weights
    N(0, 1/fan-in), biases N(0, 0.3²), LayerNorm γ 1 + N(0, 0.3²)."""
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for name, value in state.items():
        if not value.is_floating_point():
            continue
        noise = torch.randn(value.shape, generator=g, dtype=torch.float64)
        if "LayerNorm" in name and name.endswith("weight"):
            noise = 1 + 0.3 * noise
        elif name.endswith("bias"):
            noise = 0.3 * noise
        elif value.dim() == 2 and "embeddings" not in name:
            noise = noise / value.shape[1] ** 0.5
        state[name] = noise.to(value.dtype)
    model.load_state_dict(state)
    return model.eval()
