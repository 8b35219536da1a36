"""OmegaConf resolvers the YAML configs use; registered on import, before Hydra composes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

from qa_compress.errors import UserError

HELP_GROUPS = ("model", "dataset", "training", "pruning", "quantization", "experiment", "paths")


def package_path(package: str, *parts: str) -> str:
    """Directory of an installed Python package (or a path inside it), found at run time."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package!r} is not installed; install the project with pip install -e .")
    return str(Path(next(iter(spec.submodule_search_locations)), *parts))


GENERIC_DIRECTORY_NAMES = {"model", "models", "checkpoint", "final", "best", "output", "outputs", "hf", "snapshot"}


def checkpoint_label(name_or_path: str) -> str:
    """What a checkpoint is called in run names: a Hub id as it is, a local directory by its name.

    A generic directory name (`model`, `checkpoint-500`) keeps its parent's: `minilm-l6-squad2/model`.
    """
    path = Path(name_or_path)
    if not (path.is_absolute() or name_or_path.startswith(".") or path.exists()):
        return name_or_path  # a Hub id, "org/name"
    path = path.resolve()
    generic = path.name.lower() in GENERIC_DIRECTORY_NAMES or path.name.lower().startswith("checkpoint-")
    return f"{path.parent.name}/{path.name}" if generic and path.parent.name else path.name


def model_label(name_or_path: str, group_checkpoint: str, group_name: str) -> str:
    """The group's own name for its own checkpoint; for any other `model.name_or_path`, that checkpoint's label."""
    return group_name if name_or_path == group_checkpoint else checkpoint_label(name_or_path)


def _yaml_description(group: str, option: str) -> str:
    """The first sentence of the comment atop a group option's YAML file in the project's conf/ (its description),
    joined across lines; an indented line (an example command) ends it."""
    path = Path(__file__).resolve().parents[2] / "conf" / group / f"{option}.yaml"
    if not path.is_file():
        return ""
    comments = [line[2:] for line in path.read_text().splitlines() if line.startswith("# ")]
    sentence = []
    for line in (c for c in comments if not c.startswith("@package")):
        if line.startswith(" "):
            break
        sentence.append(line.strip())
        if line.rstrip().endswith("."):
            break
    return " ".join(sentence)


def group_help() -> str:
    """Every option of every config group with its description, for `run.py --help`.

    Options come from Hydra's config repository (YAML files and ConfigStore entries alike);
    the descriptions of compression methods come from their registries.
    """
    from hydra.core.global_hydra import GlobalHydra

    from qa_compress import prune, quantize

    registries = {"pruning": prune.registry, "quantization": quantize.registry}
    loader = GlobalHydra.instance().config_loader()
    options = {group: loader.get_group_options(group) for group in HELP_GROUPS}
    width = max((len(o) for names in options.values() for o in names), default=0) + 2
    lines = []
    for group in HELP_GROUPS:
        lines.append(f"{group}:")
        for option in options[group]:
            registry = registries.get(group)
            if registry is not None:
                description = registry.get(option).description if option in registry else "(no registered method)"
            else:
                description = _yaml_description(group, option)
            lines.append(f"  {option:<{width}}{description}".rstrip())
    return "\n".join(lines)


OmegaConf.register_new_resolver("package_path", package_path, replace=True)
OmegaConf.register_new_resolver("model_label", model_label, replace=True)
OmegaConf.register_new_resolver("qa_compress_group_help", group_help, replace=True)
