"""Post-training quantization and reduced precision, behind one small interface.

- dynamic_int8: PyTorch dynamic quantization of Linear layers (int8 weights, activations
  quantized on the fly); CPU only. `torch.ao.quantization` is deprecated, and its torchao
  successor ran slower than FP32 on small CPUs; this module is the one place to change when
  the backend does.
- onnx_int8: ONNX Runtime's dynamic quantization of a fused ONNX graph (see `onnxrt`).
- fp16 / bf16: weights and activations in half precision; fp16 on a CUDA GPU, bf16 on a GPU
  or a CPU with native bf16 instructions (AVX512-BF16 or AMX), refused elsewhere rather than
  run in slow emulation.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from qa_compress import onnxrt, prune

METHODS = ("none", "dynamic_int8", "onnx_int8", "fp16", "bf16")
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def supported(method: str) -> str | None:
    """None if `method` can run on this machine, else the reason it cannot."""
    if method not in METHODS:
        return f"unknown quantization method {method!r} (choose from {', '.join(METHODS)})"
    if method == "dynamic_int8" and not torch.backends.quantized.supported_engines:
        return "this PyTorch build has no quantized CPU engine"
    if method == "onnx_int8":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as err:
            return f"needs the onnx and onnxruntime packages ({err})"
    if method == "fp16" and not torch.cuda.is_available():
        return "fp16 inference needs a CUDA GPU and none is visible; on a CPU use bf16 (where supported) or int8"
    if method == "bf16" and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not cpu_has_bf16():
        return (
            "bf16 inference needs a GPU with bf16 or a CPU with AVX512-BF16 or AMX, and this machine has neither; "
            "use dynamic_int8 or onnx_int8"
        )
    return None


def runs_on_cpu_only(method: str) -> bool:
    return method in {"dynamic_int8", "onnx_int8"}


def device_for(method: str) -> torch.device:
    """Where a model compressed with `method` runs: the GPU if there is one and the method can use it."""
    return torch.device("cuda" if torch.cuda.is_available() and not runs_on_cpu_only(method) else "cpu")


def apply(
    model: nn.Module,
    method: str,
    input_names: list[str] | None = None,
    workdir: Path | None = None,
    num_threads: int = 1,
    per_channel: bool = False,
) -> nn.Module | onnxrt.OrtModel:
    """Return `model` compressed with `method` (the same object for "none").

    `per_channel` gives int8 weights one scale per output channel instead of one per matrix.

    onnx_int8 writes its graph under `workdir` and returns an ONNX Runtime session wrapper
    using `num_threads` threads; it needs the model's `input_names`.
    """
    if method == "none":
        return model
    if method == "dynamic_int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            spec = {nn.Linear: per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
            return quantize_dynamic(model.to("cpu").eval(), spec, dtype=torch.qint8)
    if method == "onnx_int8":
        if input_names is None or workdir is None:
            raise ValueError("onnx_int8 needs the model's input names and a directory for the graph")
        path, _ = onnxrt.build_int8(model, input_names, workdir, per_channel)
        return onnxrt.OrtModel(path, num_threads)
    if method in HALF:
        return model.to(HALF[method]).eval()
    raise ValueError(supported(method))


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
    model = apply(prune.from_config(config), "dynamic_int8")  # structured pruning's shapes too
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
