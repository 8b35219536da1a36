"""Exact answer spans for every tokenizer kind: logits that point at the gold tokens must give the gold text.

Each kind is trained here with the `tokenizers` library, with the special tokens and pair layout of its
family: WordPiece (BERT, ELECTRA, MiniLM; the real uncased tokenizer), byte-level BPE (RoBERTa) and
SentencePiece-style Unigram (XLM-R, CamemBERT, DeBERTa-v3). The answers go through the real windows
(stride included), decoding and scorer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from qa_compress.data import features
from qa_compress.evaluate import predict, score

from .conftest import SQUAD_DIR

MAX_SEQ_LENGTH, DOC_STRIDE = 128, 48  # short windows, so answers fall in several windows and at their edges
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _questions(squad_files) -> list[dict]:
    """Answerable questions: a slice of the real SQuAD 2.0 validation file where it is present, else generated ones."""
    path = SQUAD_DIR / "validation.json" if (SQUAD_DIR / "validation.json").is_file() else squad_files[1]
    rows = []
    for article in json.loads(path.read_text())["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa["answers"] and len(rows) < 120:
                    rows.append(
                        {
                            "id": qa["id"],
                            "question": qa["question"],
                            "context": paragraph["context"],
                            "answers": qa["answers"],
                        }
                    )
    return rows


def _corpus(rows: list[dict]) -> list[str]:
    return [text for row in rows for text in (row["question"], row["context"])]


def _with_roberta_tokens(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """A trained `tokenizers` tokenizer as transformers takes it, with RoBERTa's special tokens and no token types."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )


def _byte_level_bpe(texts: list[str]) -> PreTrainedTokenizerFast:
    """RoBERTa's kind: byte-level BPE, <s> A </s></s> B </s>, no token types."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000, special_tokens=ROBERTA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    ids = {token: tokenizer.token_to_id(token) for token in ("<s>", "</s>")}
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]), ("<s>", ids["<s>"]), trim_offsets=True, add_prefix_space=True
    )
    return _with_roberta_tokens(tokenizer)


def _unigram(texts: list[str]) -> PreTrainedTokenizerFast:
    """XLM-R's kind: SentencePiece-style Unigram with the ▁ word marker, offsets that include the space."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=3000, special_tokens=ROBERTA_SPECIALS, unk_token="<unk>")
    tokenizer.train_from_iterator(texts, trainer)
    ids = {token: tokenizer.token_to_id(token) for token in ("<s>", "</s>")}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=list(ids.items())
    )
    return _with_roberta_tokens(tokenizer)


def _gold_tokens(offsets: list, context: str, first: int, last: int) -> tuple[int, int] | None:
    """The first and last tokens of the answer's characters [first, last) when the window holds them all and the
    answer begins and ends on token boundaries (a token may carry the space before its word); None otherwise."""
    inside = [k for k, span in enumerate(offsets) if span is not None and span[0] < last and span[1] > first]
    if not inside:
        return None
    (begin, _), (_, finish) = offsets[inside[0]], offsets[inside[-1]]
    whole = context[begin:first].strip() == "" and context[last:finish].strip() == ""
    return (inside[0], inside[-1]) if whole and begin <= first and finish >= last else None


def _oracle_logits(windows: Dataset, rows: dict[str, dict]) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """All the weight on the gold answer's first and last tokens, in the windows that hold it whole; also the
    questions that have such a window (a tokenizer that merges ")," into one token cannot end an answer at ")")."""
    length = len(windows[0]["input_ids"])
    start = np.full((len(windows), length), -10.0, dtype=np.float32)
    end = np.full((len(windows), length), -10.0, dtype=np.float32)
    start[:, 0] = end[:, 0] = -20.0  # the null answer never wins
    fair = set()
    for index, (example_id, offsets) in enumerate(zip(windows["example_id"], windows["offset_mapping"], strict=True)):
        row = rows[example_id]
        answer = row["answers"][0]
        first = answer["answer_start"]
        tokens = _gold_tokens(offsets, row["context"], first, first + len(answer["text"]))
        if tokens is not None:
            start[index, tokens[0]] = end[index, tokens[1]] = 10.0
            fair.add(example_id)
    return start, end, fair


@pytest.mark.parametrize("kind", ["wordpiece", "byte_level_bpe", "unigram"])
def test_logits_on_the_gold_tokens_give_the_gold_answer_exactly_for_every_tokenizer_kind(kind, tokenizer, squad_files):
    rows = _questions(squad_files)
    made = {"wordpiece": lambda texts: tokenizer, "byte_level_bpe": _byte_level_bpe, "unigram": _unigram}[kind]
    tokenize = made(_corpus(rows))
    batch = {key: [row[key] for row in rows] for key in ("id", "question", "context")}
    windows = Dataset.from_dict(features.prepare_eval_features(batch, tokenize, MAX_SEQ_LENGTH, DOC_STRIDE))
    assert len(windows) > len(rows)  # contexts run over several windows: the stride is exercised
    start, end, fair = _oracle_logits(windows, {row["id"]: row for row in rows})
    assert len(fair) >= 0.85 * len(rows), len(fair)  # offsets one character off would leave almost none
    rows = [row for row in rows if row["id"] in fair]
    examples = Dataset.from_dict({"id": [row["id"] for row in rows], "context": [row["context"] for row in rows]})
    found = predict.decode(examples, windows, start, end, max_answer_length=MAX_SEQ_LENGTH)
    assert all(answer == answer.strip() for answer in found.answers.values())  # no space a client would see
    gold = {row["id"]: row["answers"][0]["text"] for row in rows}
    exact = [qid for qid, answer in found.answers.items() if answer == gold[qid].strip()]
    assert len(exact) == len(rows), {qid: (found.answers[qid], gold[qid]) for qid in gold if qid not in exact}
    articles = [
        {
            "paragraphs": [
                {
                    "context": row["context"],
                    "qas": [
                        {
                            "id": row["id"],
                            "question": row["question"],
                            "answers": row["answers"],
                            "is_impossible": False,
                        }
                    ],
                }
            ]
        }
        for row in rows
    ]
    exact_scores, f1_scores, _ = score.get_raw_scores(score.gold_from_squad_json(articles), found.answers)
    scores = score.make_eval_dict(exact_scores, f1_scores)
    assert scores["exact"] == scores["f1"] == 100.0
