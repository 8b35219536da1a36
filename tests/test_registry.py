"""The method registries are open: a method defined outside the package runs like a built-in one."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from hydra.core.config_store import ConfigStore
from pydantic import Field
from safetensors.torch import load_file
from torch.nn.utils import prune as torch_prune

from qa_compress import prune, quantize
from qa_compress.errors import UserError
from qa_compress.registry import Registry

from .conftest import compressed, help_line, run_in_process, tiny_job_args


class RowSettings(prune.PruningSettings):
    keep_every: int = Field(default=2, ge=2)  # keep one output row in this many


class EveryOtherRow(prune.PruningMethod):
    """Zero all but every `keep_every`-th output row of each selected layer (a mask, held through recovery)."""

    name = "every_other_row"
    description = "Test method: zero all output rows but one in every keep_every."
    settings: ClassVar[type[prune.PruningSettings]] = RowSettings

    def apply(self, model, layers, settings, context):
        for module in layers.values():
            mask = torch.zeros_like(module.weight)
            mask[:: settings.keep_every] = 1
            torch_prune.custom_from_mask(module, "weight", mask)
        return {"rows_kept_every": float(settings.keep_every)}

    def label(self, settings) -> str:
        return f"1 in {settings.keep_every}"


class LevelSettings(quantize.QuantizationSettings):
    levels: int = Field(default=16, ge=2, le=256)


class RoundToLevels(quantize.QuantizationMethod):
    """Round each Linear weight matrix to a grid of evenly spaced values around zero (stored as FP32 safetensors).

    It asks for the job's training windows, as a calibrating method would, and notes how many it got.
    """

    name = "round_to_levels"
    description = "Test method: each Linear weight rounded to a few evenly spaced values."
    settings: ClassVar[type[quantize.QuantizationSettings]] = LevelSettings
    needs = frozenset({quantize.TRAINING_WINDOWS})
    windows_seen: int | None = None

    def apply(self, model, settings, context):
        self.windows_seen = len(context.train_features)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    step = module.weight.abs().max() / (settings.levels // 2)  # zero stays zero
                    module.weight.copy_(torch.round(module.weight / step) * step)
        return model


@pytest.fixture
def outside_methods():
    """Register both methods and their config nodes as a plugin outside the package would; remove them after."""
    store = ConfigStore.instance()
    store.store(
        group="pruning",
        name="every_other_row",
        node={"defaults": ["none", "_self_"], "name": "every_other_row", "keep_every": 2},
    )
    store.store(group="quantization", name="round_to_levels", node={"name": "round_to_levels", "levels": 16})
    prune.register(EveryOtherRow())
    quantize.register(RoundToLevels())
    yield quantize.get("round_to_levels")
    prune.registry.unregister("every_other_row")
    quantize.registry.unregister("round_to_levels")
    for group in ("pruning", "quantization"):
        for name in [n for n in store.repo.get(group, {}) if n in {"every_other_row.yaml", "round_to_levels.yaml"}]:
            del store.repo[group][name]


@pytest.mark.slow
def test_method_defined_outside_the_package(outside_methods, tmp_path, tiny_bert_dir, squad_files):
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "pruning=every_other_row",
        "pruning.keep_every=4",
        "pruning.finetune_steps=2",
        "pruning.finetune_batch_size=4",
        "quantization=round_to_levels",
        "quantization.levels=8",
        "save_model=true",
        fine_tune=False,
    )
    result = run_in_process(["-m", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = compressed(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "1 in 4 +2 steps | round_to_levels | every_other_row | tiny"
    assert run.data.params["pruning.keep_every"] == "4" and run.data.params["quantization.levels"] == "8"
    metrics = run.data.metrics
    assert metrics["rows_kept_every"] == 4.0  # the method's own metric reached MLflow
    assert metrics["sparsity"] == pytest.approx(0.75)  # three rows in four, still zero after recovery
    assert metrics["sparsity_before_recovery"] == metrics["sparsity"]
    saved = load_file(str(tmp_path / "sweep" / "0" / "model" / "model.safetensors"))  # the job, not its reference
    query = saved["bert.encoder.layer.0.attention.self.query.weight"]
    assert len(torch.unique(query[query != 0])) <= 8  # rounded to at most 8 values (zeros kept by pruning)
    assert torch.count_nonzero(query[1::4]) == 0
    assert outside_methods.windows_seen == 12 * 8  # the training windows it declared it needs (12 paragraphs)


def test_help_lists_registered_methods_with_their_descriptions(outside_methods, tmp_path):
    result = run_in_process(["--help"], tmp_path)
    assert result.returncode == 0
    for registry in (prune.registry, quantize.registry):
        for method in registry:
            assert help_line(method.name, method.description).search(result.stdout), f"{method.name} not in --help"


def test_a_method_that_needs_training_windows_needs_a_training_file(
    outside_methods, tmp_path, tiny_bert_dir, squad_files
):
    args = tiny_job_args(tiny_bert_dir, squad_files, "quantization=round_to_levels", fine_tune=False)
    without_train_file = [a for a in args if not a.startswith("dataset.train_file")]
    result = run_in_process(without_train_file, tmp_path)
    assert result.returncode == 1
    expected = "dataset.train_file=null: quantization=round_to_levels with these settings read training data"
    assert expected in result.stderr


def test_outside_method_settings_are_range_checked(outside_methods, tmp_path, tiny_bert_dir, squad_files):
    args = tiny_job_args(
        tiny_bert_dir, squad_files, "quantization=round_to_levels", "quantization.levels=1", fine_tune=False
    )
    result = run_in_process(args, tmp_path)
    assert result.returncode == 1
    assert "quantization.levels=1: Input should be greater than or equal to 2" in result.stderr


def test_registry_refuses_unknown_names_and_a_second_method_under_one_name():
    registry: Registry = Registry("pruning method", "pruning")
    method = EveryOtherRow()
    registry.register(method)
    registry.register(method)  # the same object again (a module imported twice) is harmless
    assert registry.get("every_other_row") is method and registry.names() == ["every_other_row"]

    class Impostor(prune.PruningMethod):
        name = "every_other_row"
        description = "another method under a taken name"

    with pytest.raises(ValueError, match="registered already"):
        registry.register(Impostor())
    with pytest.raises(UserError, match=r"pruning=magnitude: unknown pruning method \(choose from every_other_row\)"):
        registry.get("magnitude")


def test_every_builtin_option_has_a_registered_method_and_a_yaml_file():
    conf = Path(__file__).resolve().parents[1] / "conf"
    for group, registry in (("pruning", prune.registry), ("quantization", quantize.registry)):
        assert sorted(p.stem for p in (conf / group).glob("*.yaml")) == sorted(registry.names())
