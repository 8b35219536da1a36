"""PyTorch dynamic INT8: Linear weights stored as int8, activations quantized on the fly; CPU only.

`torch.ao.quantization.quantize_dynamic` is deprecated upstream (pytorch/pytorch#153892) and
its torchao successor ran slower than FP32 on small CPUs here, so this module keeps the
installed API and turns its absence on a future torch into a refusal before any work.
The model is saved as config.json plus int8 safetensors and rebuilt from the config on
load, so loading runs no code from the files.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import ClassVar

from qa_compress.quantize.base import QuantizationMethod, QuantizationSettings, register, unique_tensors

QUANTIZED_WEIGHTS = "model.int8.safetensors"
REMOVED = (
    "this PyTorch has no torch.ao.quantization.quantize_dynamic (deprecated, pytorch/pytorch#153892, and "
    "now removed); use quantization=onnx_int8, or install a torch release that still has it"
)


log = logging.getLogger(__name__)
DEPRECATED = (
    "dynamic_int8 rests on PyTorch's torch.ao quantization, which PyTorch has deprecated (pytorch/pytorch#153892): "
    "it works with this torch {version}; onnx_int8 and openvino_int8 are the maintained INT8 methods"
)
_deprecation_said = False


@contextlib.contextmanager
def deprecation_said_once() -> Iterator[None]:
    """torch warns of the deprecation in several multi-line warnings each time; say it once, in one line."""
    global _deprecation_said
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        yield
    if not _deprecation_said:
        _deprecation_said = True
        log.warning(DEPRECATED.format(version=torch.__version__))


class DynamicInt8Settings(QuantizationSettings):
    per_channel: bool = False  # one int8 scale per output channel instead of one per matrix


def _quantize_dynamic():
    """PyTorch's dynamic quantization function, or None where this torch no longer has it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return None
    return quantize_dynamic


def _is_quantized_linear(module) -> bool:
    return hasattr(module, "_packed_params") and callable(getattr(module, "weight", None))


def weight_tensors(model) -> dict:
    """Every weight as a plain tensor, quantized Linear layers as int8 values plus scale and zero point."""
    import torch

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


def quantize(model, per_channel: bool = False):
    """`model` with its Linear layers dynamically quantized to int8 (on the CPU)."""
    import torch
    from torch import nn
    from torch.ao.quantization import per_channel_dynamic_qconfig

    spec = {nn.Linear: per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
    with deprecation_said_once():
        return _quantize_dynamic()(model.to("cpu").eval(), spec, dtype=torch.qint8)


class DynamicInt8(QuantizationMethod):
    name = "dynamic_int8"
    description = (
        "PyTorch dynamic quantization of nn.Linear to int8 weights (activations quantized on the fly); CPU only."
    )
    settings: ClassVar[type[QuantizationSettings]] = DynamicInt8Settings
    runs_on = "cpu"

    def check(self, settings, model_config):
        import torch

        if _quantize_dynamic() is None:
            return REMOVED
        if not torch.backends.quantized.supported_engines:
            return "this PyTorch build has no quantized CPU engine; use quantization=onnx_int8"
        return None

    def apply(self, model, settings, context):
        return quantize(model, settings.per_channel)

    def stored_tensors(self, model):
        return unique_tensors(weight_tensors(model))

    def save(self, model, directory) -> None:
        from safetensors.torch import save_file

        model.config.save_pretrained(str(directory))
        save_file(weight_tensors(model), str(directory / QUANTIZED_WEIGHTS), metadata={"quantization": self.name})

    def load(self, directory, num_threads=1):
        """Rebuild the architecture from the config (pruned shapes too), quantize it, then fill in the tensors."""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoConfig

        from qa_compress.model import families

        config = AutoConfig.from_pretrained(str(directory))
        tensors = load_file(str(directory / QUANTIZED_WEIGHTS))
        per_channel = any(t.numel() > 1 for k, t in tensors.items() if k.endswith("weight.scale"))
        model = quantize(families.from_config(config), per_channel)
        expected = set(weight_tensors(model))
        if set(tensors) != expected:
            extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
            raise ValueError(
                f"{directory}: tensors do not fit the config (missing {missing[:3]}, unexpected {extra[:3]})"
            )
        for name, module in model.named_modules():
            if not _is_quantized_linear(module):
                continue
            prefix = f"{name}." if name else ""
            values, scale = tensors.pop(f"{prefix}weight.int8"), tensors.pop(f"{prefix}weight.scale")
            zero_point = tensors.pop(f"{prefix}weight.zero_point")
            with deprecation_said_once():
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


METHOD = register(DynamicInt8())
