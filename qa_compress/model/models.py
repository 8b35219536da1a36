"""Find, load and fingerprint QA models and their tokenizers.

A model is named by a Hub id or a local directory. Local directories are checked before
any work starts; a Hub id is checked against the local Hugging Face cache first and the
Hub only when needed, so a missing network is reported in one line, not after retries.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from qa_compress.data.sources import looks_like_path
from qa_compress.errors import UserError
from qa_compress.model import families
from qa_compress.tracking import cache


def load(name_or_path: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model for extractive QA (a fresh QA head if the checkpoint has none) and its fast tokenizer.

    Weights come from safetensors files only: pickle-based ones are refused, never unpickled.
    """
    path = str(Path(name_or_path).expanduser()) if looks_like_path(name_or_path) else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if families.is_structurally_pruned(config):  # shapes the stock classes cannot build from the config alone
            model = load_weights(Path(path))
        else:
            model = AutoModelForQuestionAnswering.from_pretrained(
                path, trust_remote_code=trust_remote_code, use_safetensors=True
            )
    except (OSError, ValueError) as err:
        raise UserError(f"model.name_or_path={name_or_path}: could not be loaded ({err})") from None
    if not tokenizer.is_fast:
        raise UserError(f"model.name_or_path={name_or_path}: needs a fast tokenizer (offset mapping)")
    return model, tokenizer


def load_weights(directory: Path) -> PreTrainedModel:
    """A QA model from a directory of config.json and model.safetensors, pruned heads rebuilt; never unpickles."""
    from safetensors.torch import load_file

    model = families.from_config(AutoConfig.from_pretrained(str(directory)))
    try:
        model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{directory}: weights do not fit the config ({str(err).splitlines()[0]})") from None
    return model.eval()


def fingerprint(name_or_path: str) -> str:
    """Content digest of a local model directory (config and weights), or the Hub id itself."""
    if not looks_like_path(name_or_path):
        return f"hub:{name_or_path}"
    files = sorted(Path(name_or_path).expanduser().iterdir())
    return cache.key(
        {
            file.name: cache.input_digest(file)
            for file in files
            if file.suffix in {".json", ".safetensors", ".txt", ".model"} and file.is_file()
        }
    )


def input_names(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[str]:
    """Inputs both the tokenizer produces and the model accepts (DistilBERT takes no token_type_ids)."""
    accepted = getattr(model, "input_names", None) or inspect.signature(model.forward).parameters
    return [name for name in tokenizer.model_input_names if name in accepted]
