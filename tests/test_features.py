"""Question/context windows with labels (training) and offsets (evaluation), prepared once and cached."""

from qa_compress.data import features, squad


def _long_example():
    context = " ".join(f"word{i}" for i in range(60)) + " The treasure lies under the old oak tree."
    start = context.index("old oak tree")
    return {
        "id": ["x"],
        "title": [""],
        "question": ["Where is the treasure?"],
        "context": [context],
        "answers": [{"text": ["old oak tree"], "answer_start": [start]}],
    }


def test_train_labels_point_at_the_answer_or_cls(tokenizer):
    batch = _long_example()
    feats = features.prepare_train_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    assert len(feats["input_ids"]) > 1  # the long context overflowed into several windows
    found = 0
    for ids, start, end in zip(feats["input_ids"], feats["start_positions"], feats["end_positions"], strict=True):
        if start == 0:
            assert end == 0  # answer not inside this window: labelled as [CLS]
            continue
        found += 1
        assert tokenizer.decode(ids[start : end + 1]) == "old oak tree"
    assert found >= 1


def test_unanswerable_questions_are_labelled_cls(tokenizer):
    batch = {
        "id": ["u"],
        "title": [""],
        "question": ["Who?"],
        "context": ["Nobody is named here."],
        "answers": [{"text": [], "answer_start": []}],
    }
    feats = features.prepare_train_features(batch, tokenizer, max_seq_length=32, doc_stride=8)
    assert feats["start_positions"] == [0] and feats["end_positions"] == [0]


def test_eval_features_keep_offsets_of_context_tokens_only(tokenizer):
    batch = _long_example()
    feats = features.prepare_eval_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    assert set(feats["example_id"]) == {"x"}
    for offsets in feats["offset_mapping"]:
        assert offsets[0] is None  # [CLS]
        context_tokens = [o for o in offsets if o is not None]
        assert context_tokens and all(batch["context"][0][a:b] for a, b in context_tokens)


def test_prepared_features_are_cached_on_disk(squad_files, tokenizer, tmp_path):
    _, validation = squad_files
    examples = squad.load_squad_json(validation, "k")
    first = features.prepare(examples.dataset, examples.digest, tokenizer, 64, 16, "eval", tmp_path)
    (entry,) = [p for p in (tmp_path / "features").iterdir() if p.is_dir()]
    built = entry.stat().st_mtime_ns
    second = features.prepare(examples.dataset, examples.digest, tokenizer, 64, 16, "eval", tmp_path)
    assert entry.stat().st_mtime_ns == built  # read back, not rebuilt
    other = features.prepare(examples.dataset, examples.digest, tokenizer, 48, 16, "eval", tmp_path)
    assert first["input_ids"] == second["input_ids"]
    assert len(other[0]["input_ids"]) == 48
    entries = [p.name for p in (tmp_path / "features").iterdir() if p.is_dir()]
    assert len(entries) == 2 and not any(name.startswith(".") for name in entries)  # no temporary directories left


def test_trimming_padding_drops_only_columns_no_window_uses(tokenizer):
    import torch

    encoded = tokenizer(
        ["Who?", "Who wrote it?"],
        ["Ada.", "Ada wrote it in 1843."],
        padding="max_length",
        max_length=32,
        return_tensors="pt",
    )
    trimmed = features.trim_padding({**encoded, "start_positions": torch.tensor([0, 1])})
    longest = int(encoded["attention_mask"].sum(1).max())
    assert trimmed["input_ids"].shape == (2, longest) and trimmed["attention_mask"].all(dim=0).any()
    assert torch.equal(trimmed["input_ids"], encoded["input_ids"][:, :longest])
    assert torch.equal(trimmed["start_positions"], torch.tensor([0, 1]))  # labels are not sequences
    left = {k: v.flip(1) for k, v in encoded.items()}  # padded on the left: nothing may be cut
    assert features.trim_padding(left)["input_ids"].shape == (2, 32)


def test_predictions_with_trimmed_padding_match_full_windows(tiny_bert_dir, squad_files, tmp_path):
    import numpy as np
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from qa_compress.evaluate import predict

    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    examples = squad.load_squad_json(squad_files[1], "k")
    windows = features.prepare(examples.dataset, examples.digest, tokenizer, 96, 32, "eval", tmp_path)
    inputs = predict.forward_inputs(windows, ["input_ids", "attention_mask", "token_type_ids"])
    start, end = predict.logits(model, inputs, 8, torch.device("cpu"))
    with torch.no_grad():
        full = model(**inputs[:8]).start_logits.numpy()
    used = inputs[:8]["attention_mask"].numpy().astype(bool)
    assert np.allclose(start[:8][used], full[used], atol=1e-5)  # the same logits where there are tokens
    assert np.isneginf(start[:8][:, used.any(axis=0).sum() :]).all()  # and no answer in trimmed columns
    assert predict.decode(examples.dataset, windows, start, end).answers  # decodes as before
