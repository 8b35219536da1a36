"""Pruning methods on tiny models: which weights go, masks held through recovery, structured shapes."""

import pytest
import torch
from torch import nn
from transformers import (
    AlbertConfig,
    AutoModelForQuestionAnswering,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
)

from qa_compress import prune
from qa_compress.model import families, models, train
from qa_compress.prune import layers as prune_layers
from qa_compress.prune import structured
from qa_compress.quantize import get as quantization

from .conftest import TRAINING, answer_windows, small_bert, small_inputs

CONTEXT = prune.PruneContext(seed=0, train_features=None, device=torch.device("cpu"))


def _layers(model):
    return prune_layers.prunable_layers(
        model, prune.layer_patterns(prune.get("none").settings(name="none"), model.config.model_type)
    )


def _prune(model, method: str, amount: float, seed: int = 0):
    layers = _layers(model)
    settings = prune.get(method).settings(name=method, amount=amount)
    prune.get(method).apply(model, layers, settings, prune.PruneContext(seed, None, torch.device("cpu")))
    return layers


def _zeros(layers):
    return {name: (module.weight == 0).clone() for name, module in layers.items()}


@pytest.mark.parametrize("fixture", ["tiny_distilbert_dir", "tiny_bert_dir"])
def test_each_family_names_its_prunable_layers(fixture, request):
    model = AutoModelForQuestionAnswering.from_pretrained(str(request.getfixturevalue(fixture)))
    layers = _layers(model)
    assert len(layers) == 2 * 6  # 2 layers x (4 attention + 2 feed-forward) Linear modules
    assert all(isinstance(m, nn.Linear) for m in layers.values())
    assert not any("qa_outputs" in name or "embeddings" in name for name in layers)
    patterns = families.of(model.config.model_type).layer_patterns
    with_head = prune_layers.prunable_layers(model, patterns, include_qa_head=True, include_embeddings=True)
    assert "qa_outputs" in with_head and any("embeddings" in name for name in with_head)


def test_l1_masks_each_layer_by_magnitude_and_folds_in(tiny_distilbert_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir))
    before = {name: m.weight.detach().clone() for name, m in _layers(model).items()}
    original = {name: w.numel() for name, w in before.items()}
    layers = _prune(model, "l1_unstructured", 0.5)
    prune_layers.make_permanent(layers)
    rows = prune_layers.layer_sparsity(layers, original)
    assert prune_layers.sparsity(rows) == pytest.approx(0.5, abs=0.01)
    for row in rows:
        assert row["sparsity"] == pytest.approx(0.5, abs=0.01)  # each layer, not just overall
    for name, module in layers.items():
        assert not hasattr(module, "weight_orig") and not module._forward_pre_hooks
        dropped = module.weight == 0
        assert before[name][dropped].abs().max() <= before[name][~dropped].abs().min()


def test_amount_zero_changes_nothing():
    model = small_bert()
    before = {name: m.weight.detach().clone() for name, m in _layers(model).items()}
    layers = _prune(model, "l1_unstructured", 0.0)
    prune_layers.make_permanent(layers)
    assert all(torch.equal(m.weight, before[name]) for name, m in layers.items())
    assert prune.get("l1_unstructured").is_identity(prune.get("l1_unstructured").settings(name="x", amount=0.0))


def test_global_magnitude_uses_one_threshold_so_layers_differ():
    model = small_bert()
    layers = _layers(model)
    with torch.no_grad():
        layers["bert.encoder.layer.0.attention.self.query"].weight.mul_(10)  # a layer of large weights
    before = {name: m.weight.detach().clone() for name, m in layers.items()}
    original = {name: m.weight.numel() for name, m in layers.items()}
    _prune(model, "global_magnitude", 0.5)
    prune_layers.make_permanent(layers)
    rows = {r["layer"]: r["sparsity"] for r in prune_layers.layer_sparsity(layers, original)}
    assert prune_layers.sparsity(prune_layers.layer_sparsity(layers, original)) == pytest.approx(0.5, abs=0.01)
    assert rows["bert.encoder.layer.0.attention.self.query"] < 0.1 and max(rows.values()) > 0.5
    kept = torch.cat([before[n][m.weight != 0].abs() for n, m in layers.items()])
    dropped = torch.cat([before[n][m.weight == 0].abs() for n, m in layers.items()])
    assert dropped.max() <= kept.min()  # one threshold across all layers


def test_random_matches_l1_amounts_per_layer_with_a_seeded_draw():
    def pruned(method, seed):
        layers = _prune(small_bert(), method, 0.4, seed)
        prune_layers.make_permanent(layers)
        return layers

    l1, a, b, other = pruned("l1_unstructured", 0), pruned("random", 3), pruned("random", 3), pruned("random", 4)
    for name in l1:
        assert int((a[name].weight == 0).sum()) == int((l1[name].weight == 0).sum())
    assert all(torch.equal(_zeros(a)[n], _zeros(b)[n]) for n in l1)  # same seed, same draw
    assert not all(torch.equal(_zeros(a)[n], _zeros(other)[n]) for n in l1)
    assert not all(torch.equal(_zeros(a)[n], _zeros(l1)[n]) for n in l1)  # not the magnitude choice


def test_recovery_fine_tuning_keeps_pruned_weights_at_zero(tiny_bert_dir, tokenizer):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir))
    layers = _prune(model, "global_magnitude", 0.6)
    original = {name: m.weight.numel() for name, m in layers.items()}
    zeros_before = _zeros(layers)
    weights_before = {name: m.weight.detach().clone() for name, m in layers.items()}
    sparsity_before = prune_layers.sparsity(prune_layers.layer_sparsity(layers, original))
    settings = {**TRAINING, "max_steps": 4, "lr_scheduler_type": "linear"}
    result = train.fine_tune(model, tokenizer, answer_windows(tokenizer), settings, seed=0, callbacks=[])
    assert result["train_steps"] == 4
    prune_layers.make_permanent(layers)
    for name, module in layers.items():
        assert torch.equal(module.weight == 0, zeros_before[name])  # same zeros, exactly
        assert not torch.equal(module.weight, weights_before[name])  # and the rest did train
    assert prune_layers.sparsity(prune_layers.layer_sparsity(layers, original)) == sparsity_before


def _small(architecture: str) -> nn.Module:
    """A seeded 2-layer QA model of `architecture` (4 heads of 8, feed-forward 64, 120-token vocabulary)."""
    shape = {"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    configs = {
        "bert": lambda: BertConfig(**shape, intermediate_size=64),
        "distilbert": lambda: DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64),
        "roberta": lambda: RobertaConfig(**shape, intermediate_size=64, type_vocab_size=1),
        "electra": lambda: ElectraConfig(**shape, intermediate_size=64, embedding_size=16),
        # DeBERTa-v3: relative attention through the shared query and key projections
        "deberta-v3": lambda: DebertaV2Config(
            **shape,
            intermediate_size=64,
            relative_attention=True,
            share_att_key=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=16,
            position_biased_input=False,
            type_vocab_size=0,
            norm_rel_ebd="layer_norm",
        ),
        # DeBERTa-v2 without shared keys: position projections of their own, one slice per head
        "deberta-v2": lambda: DebertaV2Config(
            **shape,
            intermediate_size=64,
            relative_attention=True,
            share_att_key=False,
            pos_att_type=["p2c", "c2p"],
            max_relative_positions=24,
        ),
        "albert": lambda: AlbertConfig(**shape, intermediate_size=64, embedding_size=16, num_hidden_groups=1),
    }
    torch.manual_seed(0)
    return AutoModelForQuestionAnswering.from_config(configs[architecture]()).eval()


def _labelled_inputs() -> dict[str, torch.Tensor]:
    """`small_inputs` with answer positions: what importance scores back-propagate from."""
    return {**small_inputs(), "start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([2, 3, 4])}


ARCHITECTURES = ["bert", "distilbert", "roberta", "electra", "deberta-v3", "deberta-v2", "albert"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_removing_heads_and_neurons_computes_what_zeroing_their_outputs_does(architecture):
    # A head reaches the layer's output only through its columns of the attention output, a neuron through its
    # column of the second feed-forward layer: zeroing those in the original is what removing them must compute.
    model = _small(architecture)
    zeroed = _small(architecture)
    family = families.of_model(model)
    heads, neurons = [1, 3], torch.tensor([i for i in range(64) if i % 4])
    with torch.no_grad():
        for block in family.blocks(zeroed):
            for head in heads:
                block.attention_out.weight[:, head * block.head_size : (head + 1) * block.head_size] = 0
            block.ffn_out.weight[:, [i for i in range(64) if i % 4 == 0]] = 0
    for block in family.blocks(model):
        families.remove_heads(block, heads)
        families.keep_neurons(block, neurons)
        assert block.heads == 2 and all(layer.out_features == 16 for layer in block.per_head)
    inputs = small_inputs()
    with torch.no_grad():
        assert torch.allclose(model(**inputs).start_logits, zeroed(**inputs).start_logits, atol=1e-5)


def test_deberta_v2_position_projections_lose_the_removed_heads_too():
    model = _small("deberta-v2")
    (block, _) = families.of_model(model).blocks(model)
    assert len(block.position_projections) == 2  # c2p and p2c without shared keys
    families.remove_heads(block, [0])
    assert [layer.out_features for layer in block.per_head] == [24] * 5


def test_albert_prunes_its_shared_layer_once_for_every_layer():
    model = _small("albert")
    assert len(families.of_model(model).blocks(model)) == 1  # two layers, one set of weights
    method = prune.get("structured")
    method.apply(model, {}, method.settings(name="structured", heads_amount=0.5, ffn_amount=0.5), CONTEXT)
    assert model.config.pruned_heads.keys() == {"0"} and model.config.intermediate_size == 32


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_structured_pruning_shrinks_shapes_and_loads_back(architecture, tmp_path):
    model = _small(architecture)
    inputs = small_inputs()
    width_key = "hidden_dim" if architecture == "distilbert" else "intermediate_size"
    assert families.of(model.config.model_type).ffn_width_key == width_key
    blocks = families.of_model(model).blocks(model)
    heads, head_size = blocks[0].heads, blocks[0].head_size
    params_before = sum(p.numel() for p in model.parameters())
    method = prune.get("structured")
    settings = method.settings(name="structured", heads_amount=0.5, ffn_amount=0.25)
    result = method.apply(model, {}, settings, CONTEXT)
    kept_heads = heads - round(0.5 * heads)
    for block in families.of_model(model).blocks(model):
        assert block.query.weight.shape[0] == block.key.weight.shape[0] == kept_heads * head_size
        assert block.value.weight.shape[0] == block.attention_out.weight.shape[1] == kept_heads * head_size
        assert block.ffn_in.weight.shape[0] == block.ffn_out.weight.shape[1] == 48
        assert block.query.bias.shape[0] == kept_heads * head_size and block.ffn_in.bias.shape[0] == 48
    assert getattr(model.config, width_key) == 48
    layers = len(families.of_model(model).blocks(model))  # ALBERT's one shared layer
    assert result == {"heads_removed": layers * (heads - kept_heads), "ffn_neurons_removed": layers * 16}
    assert sum(p.numel() for p in model.parameters()) < params_before
    with torch.no_grad():
        logits = model(**inputs).start_logits
    assert logits.shape == (3, 12)

    model.save_pretrained(str(tmp_path), safe_serialization=True)
    loaded = models.load_weights(tmp_path)
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).start_logits, logits, atol=1e-5)
    none = quantization("none")
    assert sum(t.numel() for t in none.stored_tensors(loaded).values()) == sum(
        t.numel() for t in none.stored_tensors(model).values()
    )


def test_structured_importance_removes_the_weakest_head_and_neurons():
    model = small_bert(heads=4, width=64)
    block = families.of_model(model).blocks(model)[0]
    with torch.no_grad():
        for layer in (block.query, block.key, block.value):
            layer.weight[8:16].mul_(0.01)  # head 1 of 4 (head size 8) barely matters
        block.attention_out.weight[:, 8:16].mul_(0.01)
        block.ffn_in.weight[:16].mul_(0.01)  # so do neurons 0-15
    weak = block.ffn_in.weight[:16].abs().sum(1).max()
    method = prune.get("structured")
    method.apply(model, {}, method.settings(name="structured", heads_amount=0.25, ffn_amount=0.25), CONTEXT)
    assert model.config.pruned_heads["0"] == [1]
    assert block.ffn_in.out_features == 48 and block.ffn_in.weight.abs().sum(1).min() > weak  # 0-15 went

    fresh = small_bert()
    batch = _labelled_inputs()
    gradient = structured.gradient_importance(fresh, families.of_model(fresh).blocks(fresh), [batch])
    assert [tuple(h.shape) + tuple(n.shape) for h, n in gradient] == [(4, 64), (4, 64)]
    assert all((h >= 0).all() and (n >= 0).all() and h.sum() > 0 for h, n in gradient)


def test_labels_say_what_was_pruned():
    s = prune.get("structured").settings(name="structured", heads_amount=0.25, ffn_amount=0.5, finetune_steps=200)
    assert prune.describe(s) == "structured heads 0.25 ffn 0.5 +200 steps"
    assert prune.describe(prune.get("random").settings(name="random", amount=0.3)) == "random 0.3"
    assert prune.describe(prune.get("none").settings(name="none")) == "none"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_depth_pruning_leaves_a_shallower_real_model_that_loads_back(architecture, tmp_path):
    model = _small(architecture)
    families.keep_layers(model, [1])  # of 2: the first goes
    assert families.depth(model) == 1 and model.config.kept_layers == [1]
    method = prune.get("structured")
    method.apply(model, {}, method.settings(name="structured", heads_amount=0.5, ffn_amount=0.5), CONTEXT)
    inputs = small_inputs()
    with torch.no_grad():
        logits = model(**inputs).start_logits
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    loaded = models.load_weights(tmp_path)
    assert families.depth(loaded) == 1 and loaded.config.kept_layers == [1]
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).start_logits, logits, atol=1e-5)


def test_the_layer_that_changes_its_input_least_goes_first_and_the_last_always_stays():
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_config(
        BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)
    ).eval()
    with torch.no_grad():  # layer 2 adds nothing to the residual stream: its output is its (normalised) input
        for block in (families.of_model(model).blocks(model)[2],):
            for layer in (block.attention_out, block.ffn_out):
                layer.weight.zero_()
                layer.bias.zero_()
    batch = _labelled_inputs()
    influence = structured.block_influence(model, [batch])
    assert influence.shape == (4,) and int(torch.argmin(influence)) == 2
    assert structured.layers_to_keep(4, 1, influence) == [0, 1, 3]
    assert structured.layers_to_keep(4, 2, None) == [0, 3]  # by position: those below the last
    assert structured.layers_to_keep(4, 9, influence) == [3]  # at least the last one stays
    assert structured.remove_layers(model, 0.25, influence) == {"layers_removed": 1}
    assert model.config.kept_layers == [0, 1, 3] and model.config.num_hidden_layers == 3
