"""Pruning of a transformer's Linear layers: unstructured (zeros in place) and structured (smaller matrices).

Unstructured methods leave PyTorch pruning masks on the layers so that recovery fine-tuning
keeps the pruned weights at zero; `make_permanent` folds the masks in afterwards. Prunable
layers are found by module type and by regular expressions over module names, so one config
serves DistilBERT (`q_lin`, `ffn.lin1`, ...) and BERT (`query`, `dense`, ...) alike.

Structured pruning removes whole attention heads and whole feed-forward neurons, the same
number from every layer, and shrinks the matrices, so parameters, size and latency really
drop. The feed-forward width goes into the config's `intermediate_size` (`hidden_dim` for
DistilBERT); the removed heads go into the config's `pruned_heads`, which `load_pruned`
reads to rebuild the shapes before loading the safetensors weights.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import AutoConfig, AutoModelForQuestionAnswering, PreTrainedModel

QA_HEAD = "qa_outputs"
UNSTRUCTURED = ("l1_unstructured", "global_magnitude", "random")
METHODS = ("none", *UNSTRUCTURED, "structured")
IMPORTANCE = ("weight_norm", "gradient")
STRUCTURED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")


def prunable_layers(
    model: nn.Module,
    layer_patterns: Sequence[str],
    include_qa_head: bool = False,
    include_embeddings: bool = False,
) -> dict[str, nn.Module]:
    """Modules whose weights pruning touches, by qualified name, in model order.

    Linear layers whose name matches any of `layer_patterns` (re.search); the QA head and the
    embedding tables only when asked for.
    """
    compiled = [re.compile(p) for p in layer_patterns]
    chosen = {}
    for name, module in model.named_modules():
        is_head = name == QA_HEAD or name.endswith(f".{QA_HEAD}")
        if (
            isinstance(module, nn.Linear)
            and ((is_head and include_qa_head) or (not is_head and any(p.search(name) for p in compiled)))
            or include_embeddings
            and isinstance(module, nn.Embedding)
        ):
            chosen[name] = module
    return chosen


def mask(layers: dict[str, nn.Module], method: str, amount: float, seed: int = 0) -> None:
    """Attach pruning masks that zero `amount` of the weights of `layers`.

    l1_unstructured: the smallest-magnitude fraction of each layer; global_magnitude: one
    magnitude threshold over all layers together; random: each layer loses the same fraction
    as with l1_unstructured, drawn at random from a generator seeded with `seed`.
    """
    if amount <= 0:
        return
    if method == "l1_unstructured":
        for module in layers.values():
            torch_prune.l1_unstructured(module, name="weight", amount=amount)
    elif method == "global_magnitude":
        params = [(module, "weight") for module in layers.values()]
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
    elif method == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in layers.values():
                torch_prune.random_unstructured(module, name="weight", amount=amount)
    else:
        raise ValueError(f"{method!r} is not an unstructured pruning method ({', '.join(UNSTRUCTURED)})")


def make_permanent(layers: dict[str, nn.Module]) -> None:
    """Fold pruning masks into the weights and drop them (a no-op on unmasked layers)."""
    for module in layers.values():
        if torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")


def layer_sparsity(layers: dict[str, nn.Module], original_sizes: dict[str, int]) -> list[dict[str, float | str]]:
    """Per layer: its original and present weight count, non-zero weights, and the fraction gone.

    "Gone" counts both weights set to zero and weights removed by shrinking the layer.
    """
    rows = []
    for name, module in layers.items():
        weight = module.weight.detach()
        nonzero = int(torch.count_nonzero(weight))
        original = original_sizes[name]
        rows.append(
            {
                "layer": name,
                "shape": "x".join(str(d) for d in weight.shape),
                "params_original": original,
                "params_now": weight.numel(),
                "params_nonzero": nonzero,
                "sparsity": 1 - nonzero / original if original else 0.0,
            }
        )
    return rows


def sparsity(rows: Iterable[dict]) -> float:
    """Fraction of the prunable layers' original weights that are now zero or removed."""
    rows = list(rows)
    original = sum(r["params_original"] for r in rows)
    return 1 - sum(r["params_nonzero"] for r in rows) / original if original else 0.0


# Structured pruning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """The prunable parts of one transformer layer."""

    attention: nn.Module  # holds the head count (`num_attention_heads` or `n_heads`)
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attention_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    head_size: int

    @property
    def heads(self) -> int:
        return self.query.out_features // self.head_size


def blocks(model: nn.Module) -> list[Block]:
    """The transformer layers of a BERT-style (BERT, RoBERTa, ELECTRA, MiniLM) or DistilBERT model."""
    found = []
    for module in model.modules():
        attention = getattr(module, "attention", None)
        if attention is None:
            continue
        if hasattr(attention, "self") and hasattr(module, "intermediate") and hasattr(module, "output"):
            own = attention.self
            found.append(
                Block(
                    own,
                    own.query,
                    own.key,
                    own.value,
                    attention.output.dense,
                    module.intermediate.dense,
                    module.output.dense,
                    own.attention_head_size,
                )
            )
        elif hasattr(attention, "q_lin") and hasattr(module, "ffn"):
            found.append(
                Block(
                    attention,
                    attention.q_lin,
                    attention.k_lin,
                    attention.v_lin,
                    attention.out_lin,
                    module.ffn.lin1,
                    module.ffn.lin2,
                    attention.attention_head_size,
                )
            )
    return found


def _head_rows(heads: Iterable[int], head_size: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in heads])


def _group_scores(block: Block, per_weight: Callable[[nn.Linear], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of `per_weight` over each head's and each feed-forward neuron's weights."""
    d = block.head_size
    rows = sum(per_weight(layer).sum(dim=1) for layer in (block.query, block.key, block.value))
    cols = per_weight(block.attention_out).sum(dim=0)
    heads = (rows + cols).reshape(-1, d).sum(dim=1)
    neurons = per_weight(block.ffn_in).sum(dim=1) + per_weight(block.ffn_out).sum(dim=0)
    return heads, neurons


def weight_norm_importance(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: the L2 norm of each head's and each neuron's incoming and outgoing weights."""
    with torch.no_grad():
        return [
            tuple(s.sqrt() for s in _group_scores(b, lambda layer: layer.weight.float() ** 2)) for b in blocks(model)
        ]


def gradient_importance(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> list[tuple]:
    """Per layer: first-order Taylor importance |sum(w * dL/dw)| of each head and neuron, summed over batches.

    This estimates how much the QA loss would change if the group were removed (Molchanov et
    al., 2019); `batches` carry start and end positions, as training features do.
    """
    model_blocks = blocks(model)
    totals: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    was_training = model.training
    model.eval()  # no dropout: the score should not depend on a dropout draw
    device = next(model.parameters()).device
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        with torch.no_grad():
            scores = [_group_scores(b, lambda layer: layer.weight * layer.weight.grad) for b in model_blocks]
            scores = [(h.abs(), n.abs()) for h, n in scores]
        if totals is not None:
            scores = [(h + th, n + tn) for (h, n), (th, tn) in zip(scores, totals, strict=True)]
        totals = scores
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if totals is None:
        raise ValueError("gradient importance needs at least one batch of training data")
    return totals


def _keep_rows(layer: nn.Linear, rows: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.detach()[rows].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[rows].clone())
    layer.out_features = len(rows)


def _keep_columns(layer: nn.Linear, columns: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.detach()[:, columns].clone())
    layer.in_features = len(columns)


def remove_heads(block: Block, heads: Sequence[int]) -> None:
    """Drop attention heads (indices among the block's present heads) by shrinking Q, K, V and the output."""
    keep = [h for h in range(block.heads) if h not in set(heads)]
    if not keep:
        raise ValueError("cannot remove every attention head of a layer")
    rows = _head_rows(keep, block.head_size)
    for layer in (block.query, block.key, block.value):
        _keep_rows(layer, rows)
    _keep_columns(block.attention_out, rows)
    for attribute in ("num_attention_heads", "n_heads"):
        if hasattr(block.attention, attribute):
            setattr(block.attention, attribute, len(keep))
    if hasattr(block.attention, "all_head_size"):
        block.attention.all_head_size = len(keep) * block.head_size


def keep_neurons(block: Block, neurons: torch.Tensor) -> None:
    """Keep only the given feed-forward neurons (rows of the first FFN layer, columns of the second)."""
    _keep_rows(block.ffn_in, neurons)
    _keep_columns(block.ffn_out, neurons)


def _ffn_width_key(config) -> str:
    return "hidden_dim" if config.model_type == "distilbert" else "intermediate_size"


def structured(
    model: PreTrainedModel,
    heads_amount: float,
    ffn_amount: float,
    importance: list[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, int]:
    """Remove the least important `heads_amount` of heads and `ffn_amount` of FFN neurons from every layer.

    Every layer keeps the same number of heads and of neurons (at least one of each), so the
    config describes the new shapes; returns how many heads and neurons were removed.
    """
    model_blocks = blocks(model)
    if not model_blocks:
        raise ValueError(f"structured pruning found no BERT or DistilBERT layers in {type(model).__name__}")
    pruned_heads: dict[int, list[int]] = {}
    removed_heads = removed_neurons = 0
    width = None
    for index, (block, (head_scores, neuron_scores)) in enumerate(zip(model_blocks, importance, strict=True)):
        drop = min(round(heads_amount * block.heads), block.heads - 1)
        if drop:
            heads = sorted(torch.argsort(head_scores)[:drop].tolist())
            remove_heads(block, heads)
            pruned_heads[index] = heads
            removed_heads += drop
        ffn_width = block.ffn_in.out_features
        keep = max(ffn_width - round(ffn_amount * ffn_width), 1)
        neurons = torch.sort(torch.argsort(neuron_scores, descending=True)[:keep]).values
        if keep < ffn_width:
            keep_neurons(block, neurons)
            removed_neurons += ffn_width - keep
        width = keep
    setattr(model.config, _ffn_width_key(model.config), width)
    model.config.pruned_heads = {str(k): v for k, v in pruned_heads.items()}
    return {"heads_removed": removed_heads, "ffn_neurons_removed": removed_neurons}


def from_config(config) -> PreTrainedModel:
    """A QA model with the shapes `config` describes, removed heads (`pruned_heads`) included; weights arbitrary."""
    model = AutoModelForQuestionAnswering.from_config(config)
    for index, heads in sorted((int(k), v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()):
        remove_heads(blocks(model)[index], heads)
    return model


def load_pruned(directory: Path) -> PreTrainedModel:
    """Load a model saved after structured pruning: shapes rebuilt from its config, weights from safetensors."""
    model = from_config(AutoConfig.from_pretrained(str(directory)))
    try:
        model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{directory}: weights do not fit the config ({str(err).splitlines()[0]})") from None
    return model.eval()


def is_structurally_pruned(config) -> bool:
    return bool(getattr(config, "pruned_heads", None))


def unsupported_model(model_type: str) -> str | None:
    """None if structured pruning knows this architecture's layer layout, else why not."""
    if model_type in STRUCTURED_MODEL_TYPES:
        return None
    return (
        f"structured pruning knows the layer layout of {', '.join(STRUCTURED_MODEL_TYPES)} models, "
        f"not model_type={model_type!r}"
    )
