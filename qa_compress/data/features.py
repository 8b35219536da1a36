"""Turn SQuAD examples into model features: question + context windows with labels.

Contexts longer than `max_seq_length` are split into overlapping windows (`doc_stride`
tokens of overlap); only the context is ever truncated. Training features carry start and
end token labels, pointing at [CLS] when the answer is absent from the window; evaluation
features carry the offset mapping and the example id needed to map logits back to text.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from datasets import Dataset, load_from_disk
from transformers import PreTrainedTokenizerBase

from qa_compress.tracking import cache

log = logging.getLogger(__name__)

FEATURES_FORMAT = 1  # bump when the feature layout changes, so old cache entries are not reused


def _tokenize(tokenizer: PreTrainedTokenizerBase, batch: dict[str, list], max_seq_length: int, doc_stride: int):
    pad_on_right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in batch["question"]]  # leading spaces waste window budget
    return tokenizer(
        questions if pad_on_right else batch["context"],
        batch["context"] if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    ), (1 if pad_on_right else 0)


def prepare_train_features(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> dict[str, list]:
    """Tokenize a batch of examples into training windows with start/end labels."""
    tokenized, context_index = _tokenize(tokenizer, batch, max_seq_length, doc_stride)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    tokenized["start_positions"], tokenized["end_positions"] = [], []
    for i, offsets in enumerate(offset_mapping):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = tokenized.sequence_ids(i)
        answers = batch["answers"][sample_mapping[i]]
        start, end = cls_index, cls_index
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start = sequence_ids.index(context_index)
            token_end = len(sequence_ids) - 1 - sequence_ids[::-1].index(context_index)
            if offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char:
                while token_start < len(offsets) and offsets[token_start][0] <= start_char:
                    token_start += 1
                while offsets[token_end][1] >= end_char:
                    token_end -= 1
                start, end = token_start - 1, token_end + 1
        tokenized["start_positions"].append(start)
        tokenized["end_positions"].append(end)
    return tokenized


def prepare_eval_features(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> dict[str, list]:
    """Tokenize a batch of examples into evaluation windows that keep their way back to text."""
    tokenized, context_index = _tokenize(tokenizer, batch, max_seq_length, doc_stride)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    tokenized["example_id"] = []
    for i in range(len(tokenized["input_ids"])):
        sequence_ids = tokenized.sequence_ids(i)
        tokenized["example_id"].append(batch["id"][sample_mapping[i]])
        # Offsets of non-context tokens become None so decoding can never pick them.
        tokenized["offset_mapping"][i] = [
            offset if sequence_ids[k] == context_index else None
            for k, offset in enumerate(tokenized["offset_mapping"][i])
        ]
    return tokenized


SEQUENCE_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def trim_padding(batch: dict) -> dict:
    """Drop the trailing padding columns that no row of `batch` needs (windows are stored padded to full length).

    Attention never looks at padding, so the outputs are the same; the work shrinks with the
    longest window of the batch instead of the configured length. A batch padded on the left
    is returned as it is.
    """
    mask = batch.get("attention_mask")
    if mask is None:
        return batch
    used = mask.any(dim=0)
    length = int(used.sum())
    if not bool(used[:length].all()):
        return batch
    return {k: v[:, :length] if k in SEQUENCE_COLUMNS else v for k, v in batch.items()}


def features_key(
    examples_digest: str, tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int, split: str
) -> str:
    """Cache key of a feature set: everything that determines its content."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    return cache.key(
        {
            "format": FEATURES_FORMAT,
            "examples": examples_digest,
            "tokenizer": type(tokenizer).__name__,
            "vocab": hashlib.sha256(vocab.encode()).hexdigest(),
            "lowercase": tokenizer("A").input_ids,
            "padding_side": tokenizer.padding_side,
            "max_seq_length": max_seq_length,
            "doc_stride": doc_stride,
            "split": split,
        }
    )


def prepare(
    examples: Dataset,
    examples_digest: str,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    doc_stride: int,
    split: str,
    cache_dir: Path,
    lock_timeout_s: float = 86400,
) -> Dataset:
    """Return the features of `examples` for `split` ("train" or "eval"), from the cache when they are there.

    Concurrent jobs that need the same features wait for the one that prepares them.
    """
    prepare_fn = {"train": prepare_train_features, "eval": prepare_eval_features}[split]
    key = features_key(examples_digest, tokenizer, max_seq_length, doc_stride, split)
    entry = cache_dir / "features" / key
    with cache.locked(entry, lock_timeout_s):
        if cache.usable(entry):
            log.info("Features for %s from cache %s", split, entry)
            return load_from_disk(str(entry))
        features = examples.map(
            prepare_fn,
            batched=True,
            remove_columns=examples.column_names,
            fn_kwargs={"tokenizer": tokenizer, "max_seq_length": max_seq_length, "doc_stride": doc_stride},
            desc=f"Preparing {split} features",
            load_from_cache_file=False,
            keep_in_memory=True,
            new_fingerprint=key,  # our key already names the content; hashing the tokenizer would fail
        )
        with cache.building(entry) as tmp:
            features.save_to_disk(str(tmp))
    return load_from_disk(str(entry))
