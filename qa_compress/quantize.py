"""Post-training dynamic INT8 quantization, behind one small interface.

`torch.ao.quantization` is deprecated, and its torchao successor ran slower than FP32 on
small CPUs; this module is the one place to change when the backend does. Quantized models
run on the CPU only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForQuestionAnswering, PreTrainedModel

METHODS = ("none", "dynamic_int8")


def supported(method: str) -> str | None:
    """None if `method` can run on this machine, else the reason it cannot."""
    if method not in METHODS:
        return f"unknown quantization method {method!r} (choose from {', '.join(METHODS)})"
    if method == "dynamic_int8" and not torch.backends.quantized.supported_engines:
        return "this PyTorch build has no quantized CPU engine"
    return None


def apply(model: nn.Module, method: str) -> nn.Module:
    """Return `model` quantized with `method` (the same object for "none")."""
    if method == "none":
        return model
    if method == "dynamic_int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(model.to("cpu").eval(), {nn.Linear}, dtype=torch.qint8)
    raise ValueError(supported(method))


def runs_on_cpu_only(method: str) -> bool:
    return method == "dynamic_int8"


def _is_quantized_linear(module: nn.Module) -> bool:
    return hasattr(module, "_packed_params") and callable(getattr(module, "weight", None))


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight as a plain tensor, quantized Linear layers as int8 values plus scale and zero point.

    This is what a dynamically quantized model needs on disk; written with safetensors, its
    size is the honest size of the model, and loading it runs no code.
    """
    tensors: dict[str, torch.Tensor] = {}
    quantized_prefixes = []
    for name, module in model.named_modules():
        if _is_quantized_linear(module):
            weight = module.weight()
            prefix = f"{name}." if name else ""
            quantized_prefixes.append(prefix)
            tensors[f"{prefix}weight.int8"] = weight.int_repr().contiguous()
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                tensors[f"{prefix}weight.scale"] = weight.q_per_channel_scales().float()
                tensors[f"{prefix}weight.zero_point"] = weight.q_per_channel_zero_points()
            else:
                tensors[f"{prefix}weight.scale"] = torch.tensor([weight.q_scale()], dtype=torch.float32)
                tensors[f"{prefix}weight.zero_point"] = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
            bias = module.bias()
            if bias is not None:
                tensors[f"{prefix}bias"] = bias.detach().contiguous()
    for name, tensor in model.state_dict().items():
        if (
            isinstance(tensor, torch.Tensor)
            and not tensor.is_quantized
            and not any(name.startswith(p) for p in quantized_prefixes)
        ):
            tensors[name] = tensor.detach().contiguous()
    return tensors


QUANTIZED_WEIGHTS = "model.int8.safetensors"


def save(model: PreTrainedModel, directory: Path) -> None:
    """Write a dynamically quantized model as config.json plus int8 safetensors (no pickle)."""
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    save_file(weight_tensors(model), str(directory / QUANTIZED_WEIGHTS), metadata={"quantization": "dynamic_int8"})


def load(directory: Path) -> PreTrainedModel:
    """Rebuild a model written by `save`: architecture from its config, quantized, then its tensors loaded.

    Nothing in the files is executed: the modules come from the config, the numbers from safetensors.
    """
    config = AutoConfig.from_pretrained(str(directory))
    model = apply(AutoModelForQuestionAnswering.from_config(config), "dynamic_int8")
    tensors = load_file(str(directory / QUANTIZED_WEIGHTS))
    expected = set(weight_tensors(model))
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise ValueError(f"{directory}: tensors do not fit the config (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, module in model.named_modules():
        if not _is_quantized_linear(module):
            continue
        prefix = f"{name}." if name else ""
        values, scale = tensors.pop(f"{prefix}weight.int8"), tensors.pop(f"{prefix}weight.scale")
        zero_point = tensors.pop(f"{prefix}weight.zero_point")
        if scale.numel() == 1:
            weight = torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))
        else:
            weight = torch._make_per_channel_quantized_tensor(values, scale.double(), zero_point, 0)
        module.set_weight_bias(weight, tensors.pop(f"{prefix}bias", None))
    with torch.no_grad():
        for key, value in tensors.items():  # the layers that stay FP32: embeddings, layer norms
            module_name, _, attribute = key.rpartition(".")
            getattr(model.get_submodule(module_name), attribute).copy_(value)
    return model.eval()
