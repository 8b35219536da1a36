"""Where a job's model comes from (a local directory, the Hugging Face cache, the Hub) and what its weight
files hold (names and shapes from the safetensors headers), checked without loading a tensor."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from urllib.parse import urlparse

from qa_compress.errors import UserError


def looks_like_path(name_or_path: str) -> bool:
    """A Hub id has at most one '/', and never starts like a file system path."""
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()


def is_cached(name_or_path: str) -> bool:
    """Whether a Hub id's config is in the local Hugging Face cache (which then answers without the network)."""
    if looks_like_path(name_or_path):
        return False
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name_or_path, "config.json"), str)


def check_available(name_or_path: str, key: str = "model.name_or_path") -> None:
    """Fail with one clear line if the model can be neither found on disk nor fetched."""
    if looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise UserError(f"{key}={name_or_path}: no such directory")
        if not (path / "config.json").is_file():
            raise UserError(f"{key}={name_or_path}: not a Hugging Face model directory (no config.json)")
        return
    if is_cached(name_or_path):
        return  # transformers falls back to the cache offline
    if not hub_reachable():
        raise UserError(
            f"{key}={name_or_path}: not a local directory, not in the Hugging Face cache, and the Hugging Face Hub "
            "cannot be reached; use model=minilm_l6 or model.name_or_path=<local model directory>"
        )


def hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether the Hugging Face Hub answers (offline mode counts as unreachable)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}


def safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from a safetensors file's header, checked against the file's size; no tensor is read.

    Raises ValueError saying what is wrong (a torn, truncated or foreign file).
    """
    size = file.stat().st_size
    with file.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{size} bytes, shorter than a safetensors header")
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"its header claims {length} bytes and the file has {size}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ValueError("its header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (begin, stop), dtype = tuple(entry["shape"]), entry["data_offsets"], entry["dtype"]
            valid = all(type(n) is int and n >= 0 for n in (*shape, begin, stop)) and begin <= stop
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"tensor {name!r} has no valid shape and offsets")
        if dtype in DTYPE_BYTES and stop - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ValueError(f"tensor {name!r} of shape {list(shape)} takes {stop - begin} bytes")
        shapes[name] = shape
        end = max(end, stop)
    if 8 + length + end != size:
        raise ValueError(f"its tensors end at byte {8 + length + end} and the file has {size} (truncated or padded)")
    return shapes
