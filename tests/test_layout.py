"""The package's folders are its layers: every import goes down the list, and nothing imports in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qa_compress"

# From the bottom up; a module may import its own layer and the layers below it, never one above.
LAYERS = [
    {"errors", "registry", "schema"},
    {"tracking"},
    {"data"},
    {"evaluate"},
    {"model"},
    {"prune", "quantize"},
    {"serve"},
    {"job"},
    {"sweep"},
    {"report", "export", "eval_squad_v2"},  # `python -m qa_compress.NAME` entry points
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The project modules `name` imports, at the top or inside a function."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("qa_compress.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            if base == "qa_compress" or base.startswith("qa_compress."):
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    found.discard(name)
    return found


def _layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_every_module_belongs_to_a_layer():
    tops = {name.split(".")[1] for name in MODULES if "." in name}
    assert tops == set().union(*LAYERS)


def test_imports_go_down_the_layers():
    upward = [
        f"{name} -> {target}"
        for name in MODULES
        if "." in name
        for target in _imports(name)
        if target != "qa_compress" and _layer(target) > _layer(name)
    ]
    assert upward == []


def test_no_module_imports_itself_through_others():
    graph = {name: _imports(name) - {"qa_compress"} for name in MODULES}
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _readme_layout() -> list[str]:
    """The names the README's layout block gives under `qa_compress/`."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    names = []
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            names += [word.rstrip("/") for word in line.split("  ")[1].split() if word.endswith(("/", ".py"))]
    return names


def test_the_readme_layout_names_every_layer_and_command_in_order():
    folders = [layer for group in LAYERS[1:-1] for layer in sorted(group)]
    commands = sorted(f"{name}.py" for name in LAYERS[-1])
    named = _readme_layout()
    assert [n for n in named if not n.endswith(".py")] == folders
    assert sorted(n for n in named if n.endswith(".py")) == commands
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(folders)
