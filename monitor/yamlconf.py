"""YAML with remembered line numbers, environment overrides, and readable validation errors.

`load` composes the YAML node tree and keeps, for every key path, where it came from
("file:line" or "env VQMON_..."), so a pydantic error can name the line and the fix.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

ENV_PREFIX = "VQMON_"
Path_ = tuple[str | int, ...]


class YamlError(Exception):
    """The text is not YAML, or not a mapping of sections."""


@dataclass
class Document:
    name: str
    data: dict[str, Any]
    marks: dict[Path_, str] = field(default_factory=dict)

    def apply_env(self, env: Mapping[str, str], root: type[BaseModel] | None = None) -> None:
        """VQMON_KAFKA__SASL_PASSWORD=x sets kafka.sasl_password (keys lower-cased).

        A value is read as YAML flow style ("[a, b]", "{k: v}") only when the field at
        that path (looked up in `root`) holds a list, mapping or section; a string field
        keeps the text as it is, so a password may start with "[" or "{".
        """
        for var in sorted(env):
            if not var.startswith(ENV_PREFIX) or "__" not in var:
                continue
            path = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
            if not all(path):
                continue
            node: dict[str, Any] = self.data
            for part in path[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            structured = root is None or _wants_structure(root, tuple(path), self.data)
            node[path[-1]] = _env_value(env[var]) if structured else env[var]
            self.marks[tuple(path)] = f"environment variable {var}"

    def where(self, loc: Path_) -> tuple[str, Path_]:
        """The origin of the deepest part of `loc` present in the data, and that data path."""
        node: Any = self.data
        path: list[str | int] = []
        for part in loc:
            found, child = _child(node, part)
            if found:  # else a pydantic-internal step (union tag, validator name)
                node = child
                path.append(part)
        for n in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:n]))
            if mark is not None:
                return mark, tuple(path)
        return self.name, tuple(path)

    def explain(self, exc: ValidationError, root: type[BaseModel]) -> str:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            mark, path = self.where(loc)
            if err["type"] == "missing" and loc and isinstance(loc[-1], str):
                path = (*path, loc[-1])  # the key that is missing, not the mapping it is in
            dotted = ".".join(map(str, path)) or "(top level)"
            lines.append(f"{mark}: {dotted}: {_message(err, path, self.data, root)}")
        return "\n".join(lines)


def _child(node: Any, part: str | int) -> tuple[bool, Any]:
    if isinstance(node, dict):
        return part in node, node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def _wants_structure(root: type[BaseModel], path: Path_, data: dict[str, Any]) -> bool:
    """True when the field at `path` is a list, mapping or model (False for unknown keys)."""
    model = _model_at(root, path[:-1], data)
    info = model.model_fields.get(str(path[-1])) if model is not None else None
    return info is not None and _is_structure(info.annotation)


def _is_structure(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_structure(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_structure(a) for a in typing.get_args(annotation))
    if origin in (list, dict, tuple, set, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel | dict | list)


def _env_value(text: str) -> Any:
    # Lists and mappings may be given in YAML flow style; everything else stays a string
    # (pydantic converts numbers and booleans; a numeric password stays a string).
    if text.startswith(("[", "{")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def load(text: str, name: str) -> Document:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise YamlError(f"{name}: not valid YAML: {exc}") from exc
    if node is None:
        return Document(name, {})
    if not isinstance(node, yaml.MappingNode):
        raise YamlError(
            f"{name}:{node.start_mark.line + 1}: the top level must be a mapping of sections "
            "(kafka:, pipeline:, ...)"
        )
    marks: dict[Path_, str] = {}
    data = _build(node, (), name, marks)
    assert isinstance(data, dict)
    return Document(name, data, marks)


def _build(node: yaml.Node, path: Path_, name: str, marks: dict[Path_, str]) -> Any:
    marks[path] = f"{name}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                raise YamlError(
                    f"{name}:{key_node.start_mark.line + 1}: key {key!r} appears twice; "
                    "keep one of them"
                )
            out[key] = _build(value_node, (*path, key), name, marks)
            marks[(*path, key)] = f"{name}:{key_node.start_mark.line + 1}"
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), name, marks) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _message(err: Any, path: Path_, data: dict[str, Any], root: type[BaseModel]) -> str:
    kind = err["type"]
    model = _model_at(root, path[:-1] if kind == "extra_forbidden" else path, data)
    if kind == "extra_forbidden" and path:
        key = str(path[-1])
        allowed = sorted(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}.{hint} Allowed here: {', '.join(allowed)}."
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    parent = _model_at(root, path[:-1], data) if path else None
    desc = ""
    if parent is not None and path and isinstance(path[-1], str):
        info = parent.model_fields.get(path[-1])
        if info is not None and info.description:
            desc = f" [{path[-1]}: {info.description}]"
    return f"{msg}{shown}.{desc}"


def _model_at(root: type[BaseModel], path: Path_, data: Any) -> type[BaseModel] | None:
    """The config model class at `path`, following lists and `type`-discriminated unions."""
    current: Any = root
    node = data
    for i, part in enumerate(path):
        node = _child(node, part)[1]
        if isinstance(part, int):
            if typing.get_origin(current) is list:  # the item the index names
                current = _unwrap(typing.get_args(current)[0], node)
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        indexed = i + 1 < len(path) and isinstance(path[i + 1], int)
        current = _unwrap(info.annotation, node, keep_list=indexed)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any, node: Any, keep_list: bool = False) -> Any:
    """The model `annotation` stands for at `node`; a list's first item, or with
    `keep_list` the list itself (the path's next part is an index that picks the item)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0], node, keep_list)
    if origin is list and keep_list:
        return annotation
    if origin is list:
        item = node[0] if isinstance(node, list) and node else None
        return _unwrap(typing.get_args(annotation)[0], item)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        tag = node.get("type") if isinstance(node, dict) else None
        for m in members:
            m = _unwrap(m, node)
            field_ = getattr(m, "model_fields", {}).get("type")
            if field_ is not None and field_.default == tag:
                return m
        return _unwrap(members[0], node) if len(members) == 1 else None
    return annotation
