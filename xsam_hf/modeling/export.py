"""Saving X-SAM for users who do not install xsam-hf: `from_pretrained(folder_or_repo, trust_remote_code=True)`.

transformers' remote code loads `module.Class` references (`auto_map` in config.json / processor_config.json,
`custom_pipelines`) from .py files lying next to the weights, and those files may only import each other as flat
siblings (`from .spans import ...`). The package's modules import across sub-packages (`..presets`,
`..modeling.spans`), so `register_for_auto_class` cannot copy them as they are. Instead this module copies every
module the saved classes need, found by walking their package-internal imports (function-level ones included),
into one flat folder, rewriting each internal import into a sibling import. The copied code is the package's own,
unchanged apart from those import lines, so the reloaded model computes exactly what the original computes.

`auto_map` gets AutoConfig, AutoModel and AutoModelForImageTextToText (and AutoProcessor when a processor is
saved); a pipeline is declared in `custom_pipelines`, so `pipeline(model=folder, trust_remote_code=True)` finds it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The Auto classes the saved model answers to (hf-stack-facts §2: only the saved class enters auto_map by itself).
MODEL_AUTO_CLASSES = ("AutoModel", "AutoModelForImageTextToText")
DEFAULT_PIPELINE_MODEL_CLASSES = ("AutoModelForImageTextToText",)
_HEADER = "# Copied from the xsam-hf package for `trust_remote_code`; package imports rewritten as sibling imports.\n"


@dataclass(frozen=True)
class _Edit:
    start: tuple[int, int]  # (line, column) of the statement, 1-based line
    end: tuple[int, int]
    text: str


def _module_file(module_name: str) -> Path:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ImportError(f"Cannot locate the source of {module_name}.")
    return Path(spec.origin)


def _is_package(module_name: str) -> bool:
    spec = importlib.util.find_spec(module_name)
    return spec is not None and spec.submodule_search_locations is not None


def _absolute_target(node: ast.ImportFrom, module_name: str, is_package: bool) -> str | None:
    """The absolute module a `from ... import` statement reads."""
    if node.level == 0:
        return node.module
    package_parts = module_name.split(".") if is_package else module_name.split(".")[:-1]
    base = package_parts[: len(package_parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _format_import(flat_module: str, names: list[ast.alias], indent: int) -> str:
    items = [alias.name if alias.asname is None else f"{alias.name} as {alias.asname}" for alias in names]
    line = f"from .{flat_module} import {', '.join(items)}"
    if len(line) + indent <= 110:
        return line
    pad = " " * (indent + 4)
    return f"from .{flat_module} import (\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + ")"


class _Flattener:
    """Collects the modules reachable from some root modules through imports that stay inside their top-level
    package, and rewrites those imports as flat sibling imports."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}  # flat file name -> rewritten source
        self.flat_names: dict[str, str] = {}  # absolute module name -> flat module name

    def flat_name(self, module_name: str) -> str:
        if module_name not in self.flat_names:
            flat = module_name.rsplit(".", 1)[-1]
            taken = {v: k for k, v in self.flat_names.items()}
            if flat in taken:
                raise ValueError(f"Two modules would share the file {flat}.py: {taken[flat]} and {module_name}.")
            self.flat_names[module_name] = flat
        return self.flat_names[module_name]

    def add(self, module_name: str) -> None:
        pending = [module_name]
        while pending:
            name = pending.pop()
            if self.flat_name(name) + ".py" in self.sources:
                continue
            source, needed = self._rewrite(name)
            self.sources[self.flat_name(name) + ".py"] = source
            pending.extend(needed)

    def _resolve_names(self, package: str, names: list[ast.alias], where: str) -> list[tuple[str, list[ast.alias]]]:
        """`from package import a, b`: each name is a submodule or something the package's `__init__` re-exports
        from one of its modules; group the names by the module that really defines them."""
        init_tree = ast.parse(_module_file(package).read_text(encoding="utf-8"))
        exported: dict[str, str] = {}
        for node in ast.walk(init_tree):
            if isinstance(node, ast.ImportFrom):
                target = _absolute_target(node, package, is_package=True)
                for alias in node.names:
                    exported[alias.asname or alias.name] = (target, alias.name)
        groups: dict[str, list[ast.alias]] = {}
        for alias in names:
            submodule = f"{package}.{alias.name}"
            if importlib.util.find_spec(submodule) is not None:
                # `from package import module`: the module itself, keyed by "=" + its absolute name.
                groups.setdefault("=" + submodule, []).append(alias)
                continue
            if alias.name not in exported:
                raise ValueError(f"{where}: cannot tell which module of {package} defines {alias.name}.")
            target, original = exported[alias.name]
            if _is_package(target):
                sub = self._resolve_names(target, [ast.alias(name=original, asname=alias.asname or alias.name)], where)
                for module, aliases in sub:
                    groups.setdefault(module, []).extend(aliases)
            else:
                asname = alias.asname or (alias.name if alias.name != original else None)
                groups.setdefault(target, []).append(ast.alias(name=original, asname=asname))
        return list(groups.items())

    def _rewrite(self, module_name: str) -> tuple[str, list[str]]:
        path = _module_file(module_name)
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        root_package = module_name.split(".")[0]
        package = path.name == "__init__.py"
        edits, needed = [], []
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                if any(alias.name.split(".")[0] == root_package for alias in node.names):
                    raise ValueError(f"{where}: `import {root_package}...` cannot be made a sibling import.")
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _absolute_target(node, module_name, package)
            if target is None or target.split(".")[0] != root_package:
                continue  # a third-party or standard-library import stays as it is
            if _is_package(target):
                groups = self._resolve_names(target, node.names, where)
            else:
                groups = [(target, node.names)]
            statements = []
            for module, aliases in groups:
                if module.startswith("="):
                    module = module[1:]
                    local_name = aliases[0].asname or aliases[0].name
                    statements.append(f"from . import {self.flat_name(module)} as {local_name}")
                else:
                    statements.append(_format_import(self.flat_name(module), aliases, node.col_offset))
                needed.append(module)
            text = ("\n" + " " * node.col_offset).join(statements)
            edits.append(_Edit((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset), text))
        lines = source.splitlines(keepends=True)
        for edit in sorted(edits, key=lambda e: e.start, reverse=True):
            (start_line, start_col), (end_line, end_col) = edit.start, edit.end
            head, tail = lines[start_line - 1][:start_col], lines[end_line - 1][end_col:]
            lines[start_line - 1 : end_line] = [head + edit.text + tail]
        return _HEADER + "".join(lines), needed


def flatten_modules(module_names: Iterable[str]) -> dict[str, str]:
    """The rewritten sources (file name -> text) of the given modules and every package-internal module they
    import, all as flat siblings."""
    flattener = _Flattener()
    for name in module_names:
        flattener.add(name)
    return flattener.sources


def _update_json(path: Path, updates: dict[str, Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _reference(cls: type, flat_names: dict[str, str]) -> str:
    return f"{flat_names[cls.__module__]}.{cls.__name__}"


def save_for_remote_code(
    model: Any,
    save_directory: str | os.PathLike,
    processor: Any = None,
    pipeline: Any = None,
    pipeline_task: str | None = None,
    **save_kwargs: Any,
) -> list[str]:
    """Save `model` (and optionally its processor and a pipeline) so that a Python without xsam-hf loads them with
    `trust_remote_code=True`:

    ```python
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)          # or AutoModelForImageTextToText
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    pipe = pipeline(model=folder, trust_remote_code=True)                     # when a pipeline was saved
    ```

    Args:
        model: an `XSamForSegmentation` (any `PreTrainedModel` whose classes live in an importable package).
        save_directory: the folder to write (weights, configs, tokenizer files, and the .py files).
        processor: an `XSamProcessor` to save alongside (AutoProcessor entry).
        pipeline: a `transformers.Pipeline` instance or class to declare in `custom_pipelines`; its module is copied
            with the same rewriting (so it may import the package's modules).
        pipeline_task: the task name; defaults to the name the pipeline class was registered under
            (`PIPELINE_REGISTRY.register_pipeline`), or the instance's `task`.
        save_kwargs: passed to `model.save_pretrained` (e.g. `max_shard_size`).

    Returns:
        The names of the .py files written.
    """
    config_class, model_class = type(model.config), type(model)
    roots = [config_class.__module__, model_class.__module__]
    processor_class = type(processor) if processor is not None else None
    if processor_class is not None:
        roots.append(processor_class.__module__)
    pipeline_class, pipeline_info = None, {}
    if pipeline is not None:
        pipeline_class = pipeline if isinstance(pipeline, type) else type(pipeline)
        roots.append(pipeline_class.__module__)
        registered = getattr(pipeline_class, "_registered_impl", {}) or {}
        pipeline_task = pipeline_task or next(iter(registered), None) or getattr(pipeline, "task", None)
        if not pipeline_task or not isinstance(pipeline_task, str):
            raise ValueError("Name the pipeline's task (pipeline_task=...): it was not registered under a name.")
        pipeline_info = dict(registered.get(pipeline_task, {}))

    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, **save_kwargs)

    flattener = _Flattener()
    for root in roots:
        flattener.add(root)
    # Files left from an earlier export of other classes would be hashed and copied by transformers too: the folder
    # holds exactly the modules these classes need.
    for stale in directory.glob("*.py"):
        if stale.name not in flattener.sources:
            stale.unlink()
    for file_name, text in flattener.sources.items():
        (directory / file_name).write_text(text, encoding="utf-8")

    auto_map = {"AutoConfig": _reference(config_class, flattener.flat_names)}
    auto_map.update({name: _reference(model_class, flattener.flat_names) for name in MODEL_AUTO_CLASSES})
    config_updates: dict[str, Any] = {"auto_map": auto_map}

    if processor is not None:
        processor.save_pretrained(directory)
        processor_reference = _reference(processor_class, flattener.flat_names)
        auto_map["AutoProcessor"] = processor_reference
        processor_config = directory / "processor_config.json"
        if processor_config.exists():
            _update_json(processor_config, {"auto_map": {"AutoProcessor": processor_reference}})

    if pipeline_class is not None:
        model_classes = pipeline_info.get("pt") or DEFAULT_PIPELINE_MODEL_CLASSES
        entry = {
            "impl": _reference(pipeline_class, flattener.flat_names),
            "pt": [c if isinstance(c, str) else c.__name__ for c in model_classes],
            "type": pipeline_info.get("type", "multimodal"),
        }
        default = pipeline_info.get("default")
        # A default inside this installation (the embedded model's folder) means nothing on another machine.
        if default and not os.path.isabs(str((default.get("model") or ("",))[0])):
            entry["default"] = default
        config_updates["custom_pipelines"] = {pipeline_task: entry}

    _update_json(directory / "config.json", config_updates)
    return sorted(flattener.sources)


__all__ = ["MODEL_AUTO_CLASSES", "flatten_modules", "save_for_remote_code"]
