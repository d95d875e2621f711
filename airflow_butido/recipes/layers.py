"""Finding ``pkg.toml`` files and merging their layers.

A ``pkg.toml`` is a package (a *leaf*) when no directory below it holds another
``pkg.toml``; the others are layers only. Each leaf is the merge of the ``pkg.toml``
files on the way from the repository root down to it: tables merge key by key, every
other value (scalars *and* arrays) is replaced by the deeper layer.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_butido.recipes.errors import InvalidValue

PKG_TOML = "pkg.toml"
# Deeper nesting than any recipe needs; beyond it parsing, merging and pickling recurse
# towards Python's stack limit.
MAX_DEPTH = 64
_TOML_LINE_RE = re.compile(r"at line (\d+)")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a syntax error becomes ``InvalidValue`` with its ``line``."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidValue(f"not UTF-8: {exc}") from None
    except OSError as exc:
        raise InvalidValue(f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise InvalidValue(f"TOML nested too deeply (more than {MAX_DEPTH} levels)") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_LINE_RE.search(message)
        if m:
            line: int | None = int(m.group(1))
        elif "end of document" in message:
            line = max(1, len(text.splitlines()))
        else:
            line = None
        raise InvalidValue(f"TOML syntax error: {message}", line=line) from None
    if _could_nest_deeply(text) and _depth(data) > MAX_DEPTH:
        raise InvalidValue(f"TOML nested too deeply (more than {MAX_DEPTH} levels)")
    return data


def _could_nest_deeply(text: str) -> bool:
    """Whether ``text`` has enough ``[``, ``{`` and ``.`` for more than MAX_DEPTH levels:
    every level below the top needs one of them (a table header, an array, an inline table
    or a dotted key), so a recipe with fewer is not walked."""
    return text.count("[") + text.count("{") + text.count(".") >= MAX_DEPTH


def _depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value``, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack.extend((child, depth + 1) for child in children)
    return deepest


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge tables; the overlay's non-table values replace the base's.

    Neither input is modified; tables that only one side has are shared, not copied.
    """
    if not base:
        return dict(overlay)
    out = dict(base)
    for key, value in overlay.items():
        if type(value) is dict:
            old = out.get(key)
            if type(old) is dict:
                value = merge(old, value)
        out[key] = value
    return out


def discover(root: Path, links: list[str] | None = None) -> tuple[list[str], list[tuple[str, ...]]]:
    """All ``pkg.toml`` files (repo-relative) and, per leaf, its trail root -> leaf.

    Entries starting with ``.`` are skipped, symbolic links are not followed (each
    symlinked directory or ``pkg.toml`` is appended to ``links``, repo-relative, for the
    caller to report), and directories without a ``pkg.toml`` are simply skipped in a
    trail. Both lists are sorted by path.
    """
    files: list[str] = []
    trails: list[tuple[str, ...]] = []

    def walk(dirpath: str, rel: str, trail: tuple[str, ...]) -> bool:
        has_own = False
        subdirs: list[str] = []
        try:
            with os.scandir(dirpath) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if links is not None and entry.is_symlink():
                        if entry.name == PKG_TOML or entry.is_dir():
                            links.append(f"{rel}/{entry.name}" if rel else entry.name)
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    elif entry.name == PKG_TOML and entry.is_file(follow_symlinks=False):
                        has_own = True
        except OSError:
            return False
        if has_own:
            own = f"{rel}/{PKG_TOML}" if rel else PKG_TOML
            files.append(own)
            trail = (*trail, own)
        below = False
        for name in sorted(subdirs):
            if walk(os.path.join(dirpath, name), f"{rel}/{name}" if rel else name, trail):
                below = True
        if has_own and not below:
            trails.append(trail)
        return has_own or below

    walk(str(root), "", ())
    files.sort()
    trails.sort(key=lambda t: t[-1])
    return files, trails


def normalize_relative_path(path: str) -> str:
    """Resolve ``.``, ``..`` and doubled slashes of a repo-relative POSIX path.

    ``""`` and ``"."`` give ``"."``; an absolute path or one that climbs out of the
    repository raises ``InvalidValue``.
    """
    if path.startswith("/") or os.path.isabs(path):
        raise InvalidValue(f"path {path!r} is absolute; it must be relative to the repository")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InvalidValue(f"path {path!r} points outside the repository")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or "."


def has_key_path(data: Mapping[str, Any], key_path: tuple[str, ...]) -> bool:
    node: Any = data
    for part in key_path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


_INDEX_RE = re.compile(r"\[\d+\]")


def find_key_line(text: str, dotted_key: str) -> int | None:
    """Best-effort line of ``dotted_key`` in a TOML text (1-based), or None.

    Tries the longest written suffix of the key first (``hash.hash =`` before ``hash =``)
    and also finds table headers (``[sources.src]``) and inline-table keys.
    """
    parts = [p for p in _INDEX_RE.sub("", dotted_key).split(".") if p]
    if not parts:
        return None
    lines = text.splitlines()
    for n in range(len(parts), 0, -1):
        joined = r"""["']?\s*\.\s*["']?""".join(re.escape(p) for p in parts[-n:])
        pattern = re.compile(rf"""(?<![\w-])["']?{joined}["']?\s*(=|\])""")
        for number, line in enumerate(lines, 1):
            code = line.split("#", 1)[0] if "'" not in line and '"' not in line else line
            if pattern.search(code):
                return number
    return None
