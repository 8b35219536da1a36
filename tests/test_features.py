"""Question/context windows with labels (training) and offsets (evaluation), prepared once and cached."""

from qa_compress import data, features


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
    examples = data.load_squad_json(validation, "k", tmp_path)
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

