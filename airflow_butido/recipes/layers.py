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
from typing import Any, NamedTuple

from airflow_butido.recipes.errors import InvalidValue

PKG_TOML = "pkg.toml"
# Deeper nesting than any recipe needs; beyond it parsing, merging and pickling recurse
# towards Python's stack limit.
MAX_DEPTH = 64
_TOML_LINE_RE = re.compile(r"at line (\d+)")


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse one TOML file; a syntax error becomes ``InvalidValue`` with its ``line``.

    The loader passes plain strings: a ``Path`` made per file computes its string form
    when opened, about a tenth of the parse of a small recipe."""
    try:
        text = read_bytes(path).decode("utf-8")
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


_CHUNK = 1 << 16


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """A file's content through the bare system calls: for thousands of small recipes,
    half the time of ``open().read()`` (no buffered file object around each)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        chunks = [data]
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


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


class Listing(NamedTuple):
    """One walk of a repository: every file, for the parse cache's fingerprint, and the
    ``pkg.toml`` files among them for the loader (one walk serves both)."""

    files: list[str]  # every file, as the root + "/" + its repo-relative path, unsorted
    links: list[str]  # repo-relative symbolic links to a directory or named pkg.toml
    cut: int  # the length of that root + "/"

    def pkg_tomls(self) -> list[str]:
        """The ``pkg.toml`` files that are no symbolic links, repo-relative, sorted."""
        cut, linked = self.cut, set(self.links)
        found = (path[cut:] for path in self.files if path.endswith(_SLASH_PKG_TOML))
        return sorted(rel for rel in found if rel not in linked)


_SLASH_PKG_TOML = f"/{PKG_TOML}"


def scan(root: Path | str) -> Listing:
    """Walk ``root``: entries starting with ``.`` are skipped and symbolic links are not
    followed (a link to a file is still one of ``files``; a link to a directory, or one
    named pkg.toml, is one of ``links``). Lean: it runs on every DAG-file import."""
    top = os.fspath(root)
    cut = len(top.rstrip("/")) + 1
    files: list[str] = []
    links: list[str] = []
    stack = [top]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file(follow_symlinks=False):
                files.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_symlink():
                if entry.is_file():
                    files.append(entry.path)
                if entry.name == PKG_TOML or entry.is_dir():
                    links.append(entry.path[cut:])
    return Listing(files, links, cut)


def trails(pkg_tomls: list[str]) -> list[tuple[str, ...]]:
    """Per leaf (a ``pkg.toml`` with none in a directory below it), the ``pkg.toml`` files
    from the root down to it, sorted by leaf; directories without one are skipped."""
    own = {rel.rpartition("/")[0]: rel for rel in pkg_tomls}  # directory ("" = root) -> file
    inner: set[str] = set()  # directories with a pkg.toml somewhere below
    for directory in own:
        while directory:
            directory = directory.rpartition("/")[0]
            if directory in inner:
                break
            inner.add(directory)
    memo: dict[str, tuple[str, ...]] = {}

    def trail(directory: str) -> tuple[str, ...]:
        if directory not in memo:
            above = trail(directory.rpartition("/")[0]) if directory else ()
            memo[directory] = (*above, own[directory]) if directory in own else above
        return memo[directory]

    return [trail(directory) for directory in own if directory not in inner]


def discover(root: Path, links: list[str] | None = None) -> tuple[list[str], list[tuple[str, ...]]]:
    """All ``pkg.toml`` files (repo-relative) and, per leaf, its trail root -> leaf, both
    sorted by path; the symbolic links :func:`scan` skipped are appended to ``links``."""
    listing = scan(root)
    if links is not None:
        links.extend(listing.links)
    files = listing.pkg_tomls()
    return files, trails(files)


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
