"""Pruning methods, recovery fine-tuning, ONNX Runtime INT8 and reduced precision on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering, GPT2Config

from qa_compress import benchmark, models, onnxrt, pipeline, prune, quantize, train
from qa_compress.errors import UserError
from tests.conftest import ROOT, run_cli, store_uri

PATTERNS = [r"\.(q_lin|k_lin|v_lin|out_lin)$", r"\.ffn\.lin[12]$", r"\.(query|key|value|dense)$"]


def _bert(heads: int = 4, width: int = 64) -> BertForQuestionAnswering:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=width
    )
    return BertForQuestionAnswering(config).eval()


def _inputs(batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0  # padding must be handled the same way everywhere
    return {"input_ids": torch.randint(5, 120, (batch, length), generator=generator), "attention_mask": mask}


def _zeros(layers):
    return {name: (module.weight == 0).clone() for name, module in layers.items()}


def test_l1_masks_each_layer_by_magnitude_and_folds_in(tiny_distilbert_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir))
    layers = prune.prunable_layers(model, PATTERNS)
    before = {name: m.weight.detach().clone() for name, m in layers.items()}
    original = {name: m.weight.numel() for name, m in layers.items()}
    prune.mask(layers, "l1_unstructured", 0.5)
    prune.make_permanent(layers)
    rows = prune.layer_sparsity(layers, original)
    assert prune.sparsity(rows) == pytest.approx(0.5, abs=0.01)
    for row in rows:
        assert row["sparsity"] == pytest.approx(0.5, abs=0.01)  # each layer, not just overall
    for name, module in layers.items():
        assert not hasattr(module, "weight_orig") and not module._forward_pre_hooks
        dropped = module.weight == 0
        assert before[name][dropped].abs().max() <= before[name][~dropped].abs().min()


def test_global_magnitude_uses_one_threshold_so_layers_differ():
    model = _bert()
    layers = prune.prunable_layers(model, PATTERNS)
    with torch.no_grad():
        layers["bert.encoder.layer.0.attention.self.query"].weight.mul_(10)  # a layer of large weights
    before = {name: m.weight.detach().clone() for name, m in layers.items()}
    original = {name: m.weight.numel() for name, m in layers.items()}
    prune.mask(layers, "global_magnitude", 0.5)
    prune.make_permanent(layers)
    rows = {r["layer"]: r["sparsity"] for r in prune.layer_sparsity(layers, original)}
    assert prune.sparsity(prune.layer_sparsity(layers, original)) == pytest.approx(0.5, abs=0.01)
    assert rows["bert.encoder.layer.0.attention.self.query"] < 0.1 and max(rows.values()) > 0.5
    kept = torch.cat([before[n][m.weight != 0].abs() for n, m in layers.items()])
    dropped = torch.cat([before[n][m.weight == 0].abs() for n, m in layers.items()])
    assert dropped.max() <= kept.min()  # one threshold across all layers


def test_random_matches_l1_amounts_per_layer_with_a_seeded_draw():
    def pruned(method, seed):
        model = _bert()
        layers = prune.prunable_layers(model, PATTERNS)
        prune.mask(layers, method, 0.4, seed)
        prune.make_permanent(layers)
        return layers

    l1, random_a, random_b, other_seed = (
        pruned("l1_unstructured", 0),
        pruned("random", 3),
        pruned("random", 3),
        pruned("random", 4),
    )
    for name in l1:
        assert int((random_a[name].weight == 0).sum()) == int((l1[name].weight == 0).sum())
    assert all(torch.equal(_zeros(random_a)[n], _zeros(random_b)[n]) for n in l1)  # same seed, same draw
    assert not all(torch.equal(_zeros(random_a)[n], _zeros(other_seed)[n]) for n in l1)
    assert not all(torch.equal(_zeros(random_a)[n], _zeros(l1)[n]) for n in l1)  # not the magnitude choice


def test_recovery_fine_tuning_keeps_pruned_weights_at_zero(tiny_bert_dir, tokenizer):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir))
    layers = prune.prunable_layers(model, PATTERNS)
    original = {name: m.weight.numel() for name, m in layers.items()}
    prune.mask(layers, "global_magnitude", 0.6)
    zeros_before = _zeros(layers)
    weights_before = {name: m.weight.detach().clone() for name, m in layers.items()}
    sparsity_before = prune.sparsity(prune.layer_sparsity(layers, original))
    encoded = tokenizer(["Who wrote it?"] * 16, ["Ada wrote it in 1843."] * 16, padding="max_length", max_length=24)
    features = Dataset.from_dict({**dict(encoded), "start_positions": [7] * 16, "end_positions": [7] * 16})
    settings = {
        "learning_rate": 1e-2, "num_train_epochs": 1.0, "max_steps": 4, "batch_size": 4,
        "gradient_accumulation_steps": 1, "weight_decay": 0.0, "warmup_ratio": 0.0, "lr_scheduler_type": "linear",
        "max_grad_norm": 1.0, "logging_steps": 1, "mixed_precision": "no",
    }  # fmt: skip
    result = train.fine_tune(model, tokenizer, features, settings, seed=0, callbacks=[])
    assert result["train_steps"] == 4
    prune.make_permanent(layers)
    for name, module in layers.items():
        assert torch.equal(module.weight == 0, zeros_before[name])  # same zeros, exactly
        assert not torch.equal(module.weight, weights_before[name])  # and the rest did train
    assert prune.sparsity(prune.layer_sparsity(layers, original)) == sparsity_before


@pytest.mark.parametrize("architecture", ["bert", "distilbert"])
def test_structured_pruning_shrinks_shapes_and_loads_back(architecture, tiny_distilbert_dir, tmp_path, tokenizer):
    if architecture == "bert":
        model = _bert()
        config_width = "intermediate_size"
    else:
        model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir)).eval()
        config_width = "hidden_dim"
    heads, head_size = prune.blocks(model)[0].heads, prune.blocks(model)[0].head_size
    params_before = sum(p.numel() for p in model.parameters())
    result = prune.structured(model, 0.5, 0.25, prune.weight_norm_importance(model))
    kept_heads = heads - round(0.5 * heads)
    for block in prune.blocks(model):
        assert block.query.weight.shape[0] == block.key.weight.shape[0] == kept_heads * head_size
        assert block.value.weight.shape[0] == block.attention_out.weight.shape[1] == kept_heads * head_size
        assert block.ffn_in.weight.shape[0] == block.ffn_out.weight.shape[1] == 48
        assert block.query.bias.shape[0] == kept_heads * head_size and block.ffn_in.bias.shape[0] == 48
    assert getattr(model.config, config_width) == 48
    assert result == {"heads_removed": 2 * (heads - kept_heads), "ffn_neurons_removed": 2 * 16}
    assert sum(p.numel() for p in model.parameters()) < params_before
    with torch.no_grad():
        logits = model(**_inputs()).start_logits
    assert logits.shape == (3, 12)

    model.save_pretrained(str(tmp_path), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp_path))
    loaded, _ = models.load(str(tmp_path), safetensors_only=True)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(**_inputs()).start_logits, logits, atol=1e-5)
    assert benchmark.sizes(loaded)["params_total"] == benchmark.sizes(model)["params_total"]


def test_structured_importance_removes_the_weakest_head_and_neurons():
    model = _bert(heads=4, width=64)
    block = prune.blocks(model)[0]
    with torch.no_grad():
        for layer in (block.query, block.key, block.value):
            layer.weight[8:16].mul_(0.01)  # head 1 of 4 (head size 8) barely matters
        block.attention_out.weight[:, 8:16].mul_(0.01)
        block.ffn_in.weight[:16].mul_(0.01)  # so do neurons 0-15
    prune.structured(model, 0.25, 0.25, prune.weight_norm_importance(model))
    assert model.config.pruned_heads["0"] == [1]
    gradient = prune.gradient_importance(
        _bert(), [{**_inputs(), "start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([2, 3, 4])}]
    )
    assert [tuple(h.shape) + tuple(n.shape) for h, n in gradient] == [(4, 64), (4, 64)]
    assert all((h >= 0).all() and (n >= 0).all() and h.sum() > 0 for h, n in gradient)


def test_onnx_export_matches_pytorch_and_int8_stays_close(tmp_path, tiny_distilbert_dir):
    distilbert = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir)).eval()
    for name, model in [("bert", _bert()), ("distilbert", distilbert)]:
        inputs = _inputs()
        with torch.no_grad():
            reference = model(**inputs)
        exported = onnxrt.export(model, list(inputs), tmp_path / name / "model.onnx")
        fused = onnxrt.optimize(exported, tmp_path / name / "fused.onnx", *onnxrt.attention_shape(model))
        assert fused.get("Attention") == 2 and fused.get("SkipLayerNormalization")  # the fusions really happen
        for graph in (exported, tmp_path / name / "fused.onnx"):
            out = onnxrt.OrtModel(graph, num_threads=1)(**inputs)
            assert torch.allclose(out.start_logits, reference.start_logits, atol=1e-4)
            assert torch.allclose(out.end_logits, reference.end_logits, atol=1e-4)
        int8 = quantize.apply(model, "onnx_int8", list(inputs), tmp_path / name / "int8", num_threads=1)
        assert int8.path.name == onnxrt.QUANTIZED_FILE and sorted(p.name for p in int8.path.parent.iterdir()) == [
            onnxrt.QUANTIZED_FILE
        ]
        assert torch.allclose(int8(**inputs).start_logits, reference.start_logits, atol=0.1)
        assert any(v.dtype.name == "int8" for v in onnxrt.initializers(int8.path).values())
        assert benchmark.sizes(int8)["size_mb"] < benchmark.sizes(model)["size_mb"]


def test_structured_then_onnx_keeps_pruned_attention_fused(tmp_path):
    model = _bert(heads=4)
    prune.structured(model, 0.5, 0.5, prune.weight_norm_importance(model))
    inputs = _inputs()
    with torch.no_grad():
        reference = model(**inputs).start_logits
    exported = onnxrt.export(model, list(inputs), tmp_path / "model.onnx")
    assert onnxrt.optimize(exported, tmp_path / "fused.onnx", *onnxrt.attention_shape(model)).get("Attention") == 2
    assert torch.allclose(onnxrt.OrtModel(tmp_path / "fused.onnx", 1)(**inputs).start_logits, reference, atol=1e-4)


def test_sizes_count_zeros_and_gzip_rewards_sparsity():
    dense, sparse = _bert(), _bert()
    layers = prune.prunable_layers(sparse, PATTERNS)
    prune.mask(layers, "l1_unstructured", 0.9)
    prune.make_permanent(layers)
    a, b = benchmark.sizes(dense), benchmark.sizes(sparse)
    assert a["size_mb"] == pytest.approx(b["size_mb"], rel=1e-3)  # zeros are still stored densely
    assert b["size_gzip_mb"] < 0.8 * a["size_gzip_mb"]
    pruned = sum(m.weight.numel() for m in layers.values()) * 0.9
    assert a["params_nonzero"] - b["params_nonzero"] == pytest.approx(pruned, rel=0.01)
    assert a["params_total"] == b["params_total"] == sum(p.numel() for p in dense.parameters())


def test_half_precisions_are_refused_where_unsupported_and_bf16_converts():
    if not torch.cuda.is_available():
        assert "needs a CUDA GPU" in quantize.supported("fp16")
    if not torch.cuda.is_available() and not quantize.cpu_has_bf16():
        assert "AVX512-BF16 or AMX" in quantize.supported("bf16")
    model = quantize.apply(_bert(), "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert model(**_inputs()).start_logits.dtype == torch.bfloat16
    assert benchmark.sizes(model)["size_mb"] < 0.6 * benchmark.sizes(_bert())["size_mb"]


def test_structured_pruning_refuses_an_unknown_layout_before_any_work(tmp_path, squad_files):
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="pruning=structured: structured pruning knows the layer layout of bert"):
        _validate(["training=none", "dataset=squad_json", f"dataset.validation_file={squad_files[1]}",
                   f"model.name_or_path={tmp_path}", "pruning=structured"])  # fmt: skip


def _validate(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["paths.root_dir=/tmp", "paths.output_dir=/tmp/out", *overrides])
    return pipeline.validate(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so fp16 is not refused")
def test_fp16_without_a_gpu_is_refused_before_any_work(tiny_distilbert_dir, squad_files):
    with pytest.raises(UserError, match="quantization=fp16: fp16 inference needs a CUDA GPU and none is visible"):
        _validate(["training=none", f"model.name_or_path={tiny_distilbert_dir}", "dataset=squad_json",
                   f"dataset.validation_file={squad_files[1]}", "quantization=fp16"])  # fmt: skip


def test_new_methods_run_through_run_py_and_log_what_they_did(tmp_path, tiny_bert_dir, squad_files):
    train_file, validation = squad_files
    args = [
        "-m", "training=none", f"model.name_or_path={tiny_bert_dir}", "model.name=tiny_bert", "dataset=squad_json",
        f"dataset.train_file={train_file}", f"dataset.validation_file={validation}", "dataset.max_seq_length=64",
        "dataset.doc_stride=16", "benchmark.repeats=2", "benchmark.warmup=1", "benchmark.batch_size=4",
        "pruning=structured", "pruning.finetune_steps=2", "pruning.finetune_batch_size=4",
        "pruning.importance=gradient", "pruning.importance_batches=2", "quantization=onnx_int8", "save_model=true",
    ]  # fmt: skip
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store_uri(tmp_path))
    runs = client.search_runs(
        [client.get_experiment_by_name("qa-compress").experiment_id], "tags.mlflow.parentRunId != ''"
    )
    by_method = {run.data.params["pruning.name"]: run for run in runs}
    assert set(by_method) == {"structured"}
    for method, run in by_method.items():
        m = run.data.metrics
        assert run.info.status == "FINISHED"
        for key in ("size_mb", "size_gzip_mb", "params_nonzero", "params_total", "latency_ms", "f1_before_recovery"):
            assert key in m, (method, key)
        assert m["sparsity_before_recovery"] == m["sparsity"] > 0.2  # recovery kept the pruning
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"layer_sparsity.csv", "pruning", "model"} <= artifacts
        local = client.download_artifacts(run.info.run_id, "pruning/layer_sparsity.json", str(tmp_path / method))
        assert len(json.loads(Path(local).read_text())["data"]) == m["prunable_layers"]
        model_files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
        assert f"model/{onnxrt.QUANTIZED_FILE}" in model_files
    structured = by_method["structured"].data.metrics
    assert structured["ffn_neurons_removed"] == 2 * 32  # half of each layer's 64 (2 heads: a quarter rounds to 0)
    dense = sum(p.numel() for p in AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir)).parameters())
    assert dense - structured["params_total"] >= 2 * (2 * 32 * 32 + 32)  # 32 neurons' in and out weights, biases


@pytest.mark.parametrize("structured", [False, True])
def test_per_channel_int8_saves_and_loads_back_without_pickle(tmp_path, structured):
    model = _bert()
    if structured:  # the quantized modules must be rebuilt with the pruned shapes
        prune.structured(model, 0.5, 0.5, prune.weight_norm_importance(model))
    quantized = quantize.apply(model, "dynamic_int8", per_channel=True)
    tensors = quantize.weight_tensors(quantized)
    scales = tensors["bert.encoder.layer.0.attention.self.query.weight.scale"]
    assert scales.numel() == model.bert.encoder.layer[0].attention.self.query.out_features  # one per output channel
    quantize.save(quantized, tmp_path)
    loaded = quantize.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**_inputs()).start_logits, quantized(**_inputs()).start_logits)
