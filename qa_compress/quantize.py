"""Post-training dynamic INT8 quantization, behind one small interface.

`torch.ao.quantization` is deprecated, and its torchao successor ran slower than FP32 on
small CPUs; this module is the one place to change when the backend does. Quantized models
run on the CPU only.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

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
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(model.to("cpu").eval(), {nn.Linear}, dtype=torch.qint8)
    raise ValueError(supported(method))


def runs_on_cpu_only(method: str) -> bool:
    return method == "dynamic_int8"


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight as a plain tensor, quantized Linear layers as int8 values plus scale and zero point.

    This is what a dynamically quantized model needs on disk; written with safetensors, its
    size is the honest size of the model, and loading it runs no code.
    """
    tensors: dict[str, torch.Tensor] = {}
    quantized_prefixes = []
    for name, module in model.named_modules():
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
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
