"""OmegaConf resolvers the YAML configs use; registered on import, before Hydra composes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

from qa_compress.errors import UserError


def package_path(package: str, *parts: str) -> str:
    """Directory of an installed Python package (or a path inside it), found at run time."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package!r} is not installed; install the project with pip install -e .")
    return str(Path(next(iter(spec.submodule_search_locations)), *parts))


OmegaConf.register_new_resolver("package_path", package_path, replace=True)
