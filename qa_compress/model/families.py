"""What each architecture family looks like: its layer names, attention and feed-forward layout, ONNX type.

Pruning, ONNX export and loading ask the family of a model (by its config's `model_type`)
instead of matching layer names themselves. A new family is one `Family` registered here.
Nothing here imports torch at module level, so config checks stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qa_compress.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel


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
    position_projections: tuple[nn.Linear, ...] = ()  # DeBERTa's own per-head projections of relative positions

    @property
    def heads(self) -> int:
        return self.query.out_features // self.head_size

    @property
    def per_head(self) -> tuple[nn.Linear, ...]:
        """Every layer whose output rows come in one slice per head."""
        return (self.query, self.key, self.value, *self.position_projections)


@dataclass(frozen=True)
class Layout:
    """Where one transformer layer keeps its prunable parts: dotted attribute paths from the layer module.

    A module whose every path resolves is a layer (an optional projection may be absent)."""

    attention: str  # the module holding the head count and `attention_head_size`
    query: str
    key: str
    value: str
    attention_out: str
    ffn_in: str
    ffn_out: str
    position_projections: tuple[str, ...] = ()  # optional: DeBERTa's per-head projections of relative positions

    def block(self, layer: nn.Module) -> Block | None:
        """The layer's prunable parts, or None if `layer` is not a layer of this layout."""
        required = (self.attention, self.query, self.key, self.value, self.attention_out, self.ffn_in, self.ffn_out)
        found = [_attribute(layer, path) for path in required]
        if any(part is None for part in found):
            return None
        positions = tuple(p for p in (_attribute(layer, path) for path in self.position_projections) if p is not None)
        attention, *linears = found
        return Block(attention, *linears, attention.attention_head_size, positions)


def _attribute(layer: nn.Module, path: str) -> nn.Module | None:
    """The submodule at a dotted path, or None where the path does not exist."""
    try:
        return layer.get_submodule(path)
    except AttributeError:
        return None


@dataclass(frozen=True)
class Family:
    """One architecture family's layout, as pruning, export and loading need it."""

    name: str
    description: str
    model_types: tuple[str, ...]  # config.model_type values that belong to the family
    layer_patterns: tuple[str, ...]  # regular expressions over Linear module names: what unstructured pruning touches
    ffn_width_key: str  # the config key holding the feed-forward width
    onnx_model_type: str  # ONNX Runtime transformer optimizer's model_type
    layout: Layout
    shared_layers: bool = False  # one layer's weights serve every layer (ALBERT): pruning it prunes them all
    depth_key: str = "num_hidden_layers"  # the config key holding the number of layers
    layer_list: str | None = "encoder.layer"  # the layers' ModuleList under the base model; None: shared (ALBERT)

    def blocks(self, model: nn.Module) -> list[Block]:
        """The layers as weights, in order: a layer whose weights several layers share appears once."""
        return [block for block in map(self.layout.block, model.modules()) if block is not None]


registry: Registry[Family] = Registry("model family", "model.name_or_path")

BERT = registry.register(
    Family(
        name="bert",
        description="BERT and its relatives: RoBERTa, XLM-R, CamemBERT, ELECTRA, MiniLM",
        model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
        layer_patterns=(r"\.(query|key|value|dense)$",),
        ffn_width_key="intermediate_size",
        onnx_model_type="bert",
        layout=Layout(
            "attention.self",
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ),
    )
)
DISTILBERT = registry.register(
    Family(
        name="distilbert",
        description="DistilBERT",
        model_types=("distilbert",),
        layer_patterns=(r"\.(q_lin|k_lin|v_lin|out_lin)$", r"\.ffn\.lin[12]$"),
        ffn_width_key="hidden_dim",
        onnx_model_type="bert",  # the BERT fusions match DistilBERT's graph too
        layout=Layout(
            "attention",
            "attention.q_lin",
            "attention.k_lin",
            "attention.v_lin",
            "attention.out_lin",
            "ffn.lin1",
            "ffn.lin2",
        ),
        depth_key="n_layers",
        layer_list="transformer.layer",
    )
)


DEBERTA_V2 = registry.register(
    Family(
        name="deberta-v2",
        description="DeBERTa-v2 and DeBERTa-v3 (disentangled relative attention)",
        model_types=("deberta-v2",),
        layer_patterns=(r"\.(query_proj|key_proj|value_proj|pos_key_proj|pos_query_proj|dense)$",),
        ffn_width_key="intermediate_size",
        onnx_model_type="bert",  # no fusion knows disentangled attention; layer norms and GELU still fuse
        layout=Layout(
            "attention.self",
            "attention.self.query_proj",
            "attention.self.key_proj",
            "attention.self.value_proj",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
            ("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
        ),
    )
)
ALBERT = registry.register(
    Family(
        name="albert",
        description="ALBERT (one layer's weights shared by every layer of a group)",
        model_types=("albert",),
        layer_patterns=(r"\.attention\.(query|key|value|dense)$", r"\.ffn(_output)?$"),
        ffn_width_key="intermediate_size",
        onnx_model_type="bert",
        layout=Layout(
            "attention", "attention.query", "attention.key", "attention.value", "attention.dense", "ffn", "ffn_output"
        ),
        shared_layers=True,
        layer_list=None,  # the shared layer runs num_hidden_layers times: fewer layers is fewer runs
    )
)


def of(model_type: str) -> Family | None:
    """The family a `model_type` belongs to, or None for a layout no family describes."""
    return next((family for family in registry if model_type in family.model_types), None)


def known_model_types() -> list[str]:
    return [t for family in registry for t in family.model_types]


def of_model(model: Any) -> Family | None:
    config = getattr(model, "config", None)
    return of(getattr(config, "model_type", "")) if config is not None else None


# Shrinking a layer: shared by structured pruning and by loading a structurally pruned model.


def _head_rows(heads: Iterable[int], head_size: int) -> torch.Tensor:
    import torch

    return torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in heads])


def _keep_rows(layer: nn.Linear, rows: torch.Tensor) -> None:
    from torch import nn

    layer.weight = nn.Parameter(layer.weight.detach()[rows].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[rows].clone())
    layer.out_features = len(rows)


def _keep_columns(layer: nn.Linear, columns: torch.Tensor) -> None:
    from torch import nn

    layer.weight = nn.Parameter(layer.weight.detach()[:, columns].clone())
    layer.in_features = len(columns)


def remove_heads(block: Block, heads: Sequence[int]) -> None:
    """Drop attention heads (indices among the block's present heads) by shrinking Q, K, V and the output."""
    keep = [h for h in range(block.heads) if h not in set(heads)]
    if not keep:
        raise ValueError("cannot remove every attention head of a layer")
    rows = _head_rows(keep, block.head_size)
    for layer in block.per_head:
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


def depth(model: nn.Module) -> int:
    """How many layers the model runs."""
    return getattr(model.config, of_model(model).depth_key)


def keep_layers(model: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the layers `keep` (indices among the present ones, in order): the model really gets shallower.

    The config says the new depth; `kept_layers` says which of the original layers remain (across several
    calls), which layer-wise distillation maps the teacher's layers by; `pruned_heads` follows the layers.
    """
    from torch import nn

    family = of_model(model)
    present = depth(model)
    keep = sorted(set(keep))
    if not keep or keep[0] < 0 or keep[-1] >= present:
        raise ValueError(f"cannot keep layers {keep} of {present}")
    origins = list(getattr(model.config, "kept_layers", None) or range(present))
    if family.layer_list is not None:
        parent_path, _, name = family.layer_list.rpartition(".")
        parent = model.base_model.get_submodule(parent_path)
        kept = [getattr(parent, name)[i] for i in keep]
        setattr(parent, name, nn.ModuleList(kept))
        for index, layer in enumerate(kept):
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = index  # the position a decoder cache would use
        if hasattr(parent, family.depth_key):
            setattr(parent, family.depth_key, len(keep))  # DistilBERT's Transformer keeps its own count
        pruned = getattr(model.config, "pruned_heads", None) or {}
        model.config.pruned_heads = {str(new): pruned[str(old)] for new, old in enumerate(keep) if str(old) in pruned}
    setattr(model.config, family.depth_key, len(keep))
    model.config.kept_layers = [origins[i] for i in keep]


def from_config(config: Any, trust_remote_code: bool = False) -> PreTrainedModel:
    """A QA model with the shapes `config` describes, removed heads (`pruned_heads`) included; weights arbitrary.

    `trust_remote_code`: the user's own choice, passed on (a model_type only its shipped code defines needs it).
    """
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_config(config, trust_remote_code=trust_remote_code)
    pruned = sorted((int(k), v) for k, v in (getattr(config, "pruned_heads", None) or {}).items())
    if pruned:
        family = of(config.model_type)
        if family is None:
            raise ValueError(f"model_type={config.model_type!r} has pruned_heads but no known layer layout")
        layers = family.blocks(model)
        for index, heads in pruned:
            remove_heads(layers[index], heads)
    return model


def is_structurally_pruned(config: Any) -> bool:
    return bool(getattr(config, "pruned_heads", None)) or bool(getattr(config, "kept_layers", None))
