"""Reading a grid file: bounded in size, nesting depth and alias expansion, with the
line of every key, duplicate keys refused. Only yaml is imported here (no torch), so a
bad file is refused in a fraction of a second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError


class Located:
    """A loaded YAML document plus the line of every key/item, for error messages."""

    def __init__(self, path: str, data: Any, lines: dict[tuple, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def where(self, *keys: Any) -> str:
        """'FILE:LINE: a.b[0].c' for a path into the document."""
        path = tuple(keys)
        while path and path not in self.lines:
            path = path[:-1]
        line = self.lines.get(path, 1)
        return f"{self.path}:{line}: {dotted(keys)}" if keys else f"{self.path}:{line}"


def dotted(keys: Iterable[Any]) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


#: Bounds on a grid file, so that loading it takes bounded time and memory whatever it
#: holds (a grid is a few kB; these are generous). Aliases are allowed, but the document
#: they expand to is counted: a "billion laughs" file is refused before it is expanded.
MAX_BYTES = 1_000_000
MAX_DEPTH = 40
MAX_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags) with a nesting-depth limit checked as the
    composer descends (its recursion would otherwise end in a RecursionError)."""

    def __init__(self, stream: str, path: str) -> None:
        super().__init__(stream)
        self._path = path
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise UsageError(
                    f"{self._path}:{line}: nested more than {MAX_DEPTH} levels deep (a grid needs a few)"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node, path: str) -> int:
    """Nodes of the document with every alias expanded, counted without expanding it
    (memoised per node, so the count is linear in the file); refuses past MAX_NODES."""
    memo: dict[int, int] = {}
    stack = [(root, False)]
    while stack:  # iterative post-order: no recursion on deep documents
        node, done = stack.pop()
        if id(node) in memo:
            continue
        children = _children(node)
        if done:
            memo[id(node)] = 1 + sum(memo[id(c)] for c in children)
            if memo[id(node)] > MAX_NODES:
                raise UsageError(
                    f"{path}:{node.start_mark.line + 1}: this value expands (through YAML aliases) "
                    f"to more than {MAX_NODES:,} nodes; write it out or use fewer aliases"
                )
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_KEYS: dict[tuple[str, str], Any] = {}


def _key(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        k = (node.tag, node.value)
        if k not in _KEYS:
            _KEYS[k] = yaml.safe_load(yaml.serialize(node))
        return _KEYS[k]
    return str(node)


def _lines(doc_path: str, node: yaml.Node, path: tuple, out: dict[tuple, int]) -> None:
    """Line of every key and item (bounded by _expanded_size); refuses a key that
    appears twice in one mapping (YAML would keep the second silently)."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for k, v in node.value:
            key = _key(k)
            line = k.start_mark.line + 1
            if key == "<<":  # a merge key: its mapping's keys are defaults, not duplicates
                _lines(doc_path, v, path, {})
                continue
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: the constructor reports it
                seen = None
            if seen is not None:
                raise UsageError(
                    f"{doc_path}:{line}: {dotted(path + (key,))}: duplicate key {key!r} "
                    f"(first at line {seen}); a key may appear once per mapping"
                )
            with contextlib.suppress(TypeError):
                first[key] = line
            out[path + (key,)] = line
            _lines(doc_path, v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (i,)] = v.start_mark.line + 1
            _lines(doc_path, v, path + (i,), out)


def load_yaml(path: str | Path) -> Located:
    """Read and parse a grid file within bounds (size, depth, expanded nodes); every
    problem is a one-line UsageError naming the file and line."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: grid file not found")
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, not a grid file")
    if not p.is_file():
        raise UsageError(f"{p}: not a regular file (a grid is a YAML file)")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UsageError(f"{p}: cannot read the grid file: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise UsageError(f"{p}: larger than {MAX_BYTES:,} bytes; a grid file is a few kB of YAML")
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise UsageError(f"{p}:{line}: a NUL byte: this is a binary file, not a YAML grid")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(
            f"{p}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    loader = _BoundedLoader(text, str(p))
    try:
        try:
            node = loader.get_single_node()
            data = None
            lines: dict[tuple, int] = {}
            if node is not None:
                _expanded_size(node, str(p))
                _lines(str(p), node, (), lines)  # before construction flattens merge keys
                data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        what = (e.problem or e.context or "invalid YAML").strip()
        raise UsageError(f"{p}:{line}: YAML syntax error: {what}") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{p}: YAML error: {first}") from None
    return Located(str(p), data, lines)
