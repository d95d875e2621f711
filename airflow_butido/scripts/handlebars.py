"""butido's template dialect: the Handlebars of handlebars-rust 6, as butido configures it.

butido renders every build script with handlebars-rust 6 (HTML escaping off, optional strict
mode, five extra helpers). Package repositories depend on that engine's exact output, including
its whitespace rules, so this module re-implements the engine's behaviour rather than general
Handlebars: the grammar of its pest parser (whitespace between tokens, literals, paths,
``this.patches[0]`` parsing as two parameters), its standalone-line and ``~`` trimming, its
value rendering (``[a, b]``, ``[object]``, ``1.0``), strict-mode rules per helper, and the
built-ins ``if unless each with lookup raw log eq ne gt gte lt lte and or not len``.
Partials and decorators are rejected: butido registers none.
"""

from __future__ import annotations

import bisect
import decimal
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_butido.errors import ButidoError

# Blocks (and {{else}} chains) deeper than this are refused: rendering them recurses, and no
# build script needs them.
MAX_BLOCK_DEPTH = 100


class TemplateError(ButidoError):
    """A script template that does not parse or does not render (names the line and column)."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.name = name
        self.line = line
        self.column = column
        super().__init__(self._text())

    def _text(self) -> str:
        where = self.name or "template"
        if self.line is not None:
            where = f"{where}, line {self.line}"
            if self.column is not None:
                where = f"{where}, column {self.column}"
        return f"{where}: {self.message}"

    def named(self, name: str) -> TemplateError:
        """The same error, attributed to ``name`` (e.g. the package)."""
        return TemplateError(self.message, name=name, line=self.line, column=self.column)


class _Missing:
    """A lookup that found nothing (rendered like JSON null where a value is needed)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# --------------------------------------------------------------------------- values


def _json(value: Any) -> Any:
    """The context as plain JSON data: mappings become dicts, sequences lists."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [_json(v) for v in value]
    raise TypeError(f"template context value of type {type(value).__name__} is not JSON data")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def format_float(f: float) -> str:
    """A float as serde_json prints it (shortest round-trip digits, ryu's layout)."""
    if f == 0:
        return "-0.0" if str(f).startswith("-") else "0.0"
    sign = "-" if f < 0 else ""
    digits_t, exp = decimal.Decimal(repr(abs(f))).as_tuple()[1:]
    digits = "".join(map(str, digits_t)).rstrip("0")
    exp = int(exp) + (len(digits_t) - len(digits))
    length = len(digits)
    kk = length + exp
    if exp >= 0 and kk <= 16:
        body = digits + "0" * exp + ".0"
    elif 0 < kk <= 16:
        body = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        body = "0." + "0" * (-kk) + digits
    elif length == 1:
        body = f"{digits}e{kk - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + body


def render_value(v: Any) -> str:
    """How handlebars-rust prints a value: no quotes, ``[a, b]`` arrays, ``[object]``."""
    if v is None or v is MISSING:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "[" + ", ".join(render_value(x) for x in v) + "]"
    return "[object]"


def truthy(v: Any, include_zero: bool = False) -> bool:
    if v is None or v is MISSING:
        return False
    if isinstance(v, bool):
        return v
    if _is_num(v):
        if include_zero:
            return v == v  # not NaN
        return v != 0 and abs(v) >= 2.2250738585072014e-308 and abs(v) != float("inf")
    return len(v) > 0


def json_equal(a: Any, b: Any) -> bool:
    """serde_json equality: 1 and 1.0 differ, booleans are not numbers."""
    if a is MISSING:
        a = None
    if b is MISSING:
        b = None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) or _is_num(b):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _number_of(s: str) -> int | float | None:
    m = _JSON_NUMBER.fullmatch(s)
    if m is None:
        return None
    return float(s) if (m.group(1) or m.group(2)) else int(s)


def compare(a: Any, b: Any) -> int | None:
    """The ordering of ``gt``/``lt``: numbers (also numeric strings), strings, booleans."""

    def cmp(x: Any, y: Any) -> int:
        return (x > y) - (x < y)

    if _is_num(a) and _is_num(b):
        return cmp(a, b)
    if isinstance(a, str) and isinstance(b, str):
        return cmp(a, b)
    if isinstance(a, bool) and isinstance(b, bool):
        return cmp(a, b)
    if _is_num(a) and isinstance(b, str):
        n = _number_of(b)
        return None if n is None else cmp(a, n)
    if isinstance(a, str) and _is_num(b):
        n = _number_of(a)
        return None if n is None else cmp(n, b)
    return None


# --------------------------------------------------------------------------- syntax tree


class _Marker:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_ROOT, _UP, _LOCAL = _Marker("@root"), _Marker(".."), _Marker("@")


@dataclass(frozen=True)
class PathExpr:
    raw: str
    segs: tuple[Any, ...]  # named segments (str) and the markers _ROOT/_UP/_LOCAL

    @property
    def local(self) -> tuple[int, str] | None:
        """``@index``/``@../key``: (level, name) of a local variable, else None."""
        if not self.segs or self.segs[0] is not _LOCAL:
            return None
        level = 0
        while level + 1 < len(self.segs) and self.segs[level + 1] is _UP:
            level += 1
        nxt = self.segs[level + 1] if level + 1 < len(self.segs) else None
        return (level, nxt) if isinstance(nxt, str) else None


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    """A helper call or a value expression: ``name param... key=value... as |a b|``."""

    name: Any  # str (identifier), PathExpr, or Call (subexpression used as a name)
    params: tuple[Any, ...] = ()
    hash: tuple[tuple[str, Any], ...] = ()
    block_params: tuple[str, ...] = ()

    @property
    def name_text(self) -> str:
        return self.name.raw if isinstance(self.name, PathExpr) else str(self.name)


@dataclass
class Expr:
    call: Call
    line: int
    column: int


@dataclass
class Block:
    call: Call
    line: int
    column: int
    template: list[Any] = field(default_factory=list)
    inverse: list[Any] | None = None


class Comment:
    """Renders nothing; kept because it stops ``~`` trimming like handlebars-rust does."""


# --------------------------------------------------------------------------- parser

_WS = " \t\n\r"


def _symbol_char(c: str) -> bool:
    return (c.isascii() and (c.isalnum() or c in "-_$:")) or not c.isascii()


@dataclass
class _Tag:
    kind: str  # expr, open, raw_open, else, close, raw_close, comment
    start: int
    end: int
    call: Call | None = None
    pre: bool = False  # leading ~
    post: bool = False  # trailing ~
    close_name: str = ""


class _Parser:
    """Recursive descent over handlebars-rust's grammar (grammar.pest), plus its compile pass."""

    def __init__(self, src: str, name: str | None) -> None:
        self.src = src
        self.n = len(src)
        self.name = name
        self._newlines: list[int] | None = None

    # -- errors and positions
    def position(self, pos: int) -> tuple[int, int]:
        if self._newlines is None:
            self._newlines = [i for i, c in enumerate(self.src) if c == "\n"]
        line = bisect.bisect_left(self._newlines, pos)
        start = self._newlines[line - 1] + 1 if line else 0
        return line + 1, pos - start + 1

    def error(self, pos: int, message: str) -> TemplateError:
        line, col = self.position(pos)
        return TemplateError(message, name=self.name, line=line, column=col)

    # -- tokens
    def ws(self, i: int) -> int:
        while i < self.n and self.src[i] in _WS:
            i += 1
        return i

    def lit(self, i: int, text: str) -> int | None:
        return i + len(text) if self.src.startswith(text, i) else None

    def identifier(self, i: int) -> int | None:
        j = i
        while j < self.n and _symbol_char(self.src[j]):
            j += 1
        return j if j > i else None

    def _keyword_at(self, i: int) -> bool:
        for kw in ("as", "else"):
            if self.src.startswith(kw, i):
                j = i + len(kw)
                if j >= self.n or not _symbol_char(self.src[j]):
                    return True
        return False

    # -- literals
    def _string(self, i: int) -> int | None:
        if i >= self.n or self.src[i] not in "\"'":
            return None
        q, j = self.src[i], i + 1
        while j < self.n:
            c = self.src[j]
            if c == q:
                return j + 1
            if c == "\\":
                nxt = self.src[j + 1 : j + 2]
                if nxt and nxt in q + "\\/bfnrt":
                    j += 2
                elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", self.src[j + 2 : j + 6]):
                    j += 6
                else:
                    return None
            else:
                j += 1
        return None

    def _sequence_literal(self, i: int, open_: str, close: str, item: Callable) -> int | None:
        j = self.lit(i, open_)
        if j is None:
            return None
        j = self.ws(j)
        first = item(j)
        if first is not None:
            j = first
        while True:
            k = self.ws(j)
            if not self.src.startswith(",", k):
                break
            e = item(self.ws(k + 1))
            if e is None:
                break
            j = e
        j = self.ws(j)
        return self.lit(j, close)

    def _pair(self, i: int) -> int | None:
        j = self._string(i)
        if j is None:
            return None
        j = self.lit(self.ws(j), ":")
        return None if j is None else self.literal(self.ws(j))

    _NUMBER = re.compile(r"-?[0-9]+\.?[0-9]*(?:E-?[0-9]+)?")

    def literal(self, i: int) -> int | None:
        for parse in (
            self._string,
            lambda k: self._sequence_literal(k, "[", "]", self.literal),
            lambda k: self._sequence_literal(k, "{", "}", self._pair),
        ):
            end = parse(i)
            if end is not None:
                return end
        m = self._NUMBER.match(self.src, i)
        for end in ([m.end()] if m else []) + [
            i + len(w) for w in ("null", "true", "false") if self.src.startswith(w, i)
        ]:
            if end >= self.n or not _symbol_char(self.src[end]):
                return end
        return None

    def literal_value(self, i: int, end: int) -> Literal:
        text = self.src[i:end]
        if text[0] == "'":
            inner = text[1:-1].replace("\\'", "'").replace('"', '\\"')
            text = f'"{inner}"'
        try:
            value = json.loads(text)
        except ValueError:
            raise self.error(i, f"invalid parameter {self.src[i:end]}") from None
        return Literal(_clamp_ints(value))

    # -- paths
    def _path_item(self, i: int) -> tuple[str, int] | None:
        end = self.identifier(i)
        if end is not None:
            return self.src[i:end], end
        if self.src.startswith("[", i):
            close = self.src.find("]", i + 1)
            if close >= 0:
                return self.src[i + 1 : close], close + 1
        return None

    def reference(self, i: int) -> tuple[PathExpr, int] | None:
        src, j = self.src, i
        segs: list[Any] = []
        if src.startswith("this", j) and src[j + 4 : j + 5] in ("/", "."):
            j += 5
        elif src.startswith("./", j):
            j += 2
        if src.startswith("@root", j) and j + 5 < self.n and src[j + 5] in "/.":
            segs.append(_ROOT)
            j += 6
        if src.startswith("@", j):
            segs.append(_LOCAL)
            j += 1
        while src.startswith("..", j) and j + 2 < self.n and src[j + 2] in "/.":
            segs.append(_UP)
            j += 3
        item = self._path_item(j)
        if item is None:
            return None
        items = [item[0]]
        j = item[1]
        while j < self.n and src[j] in "/.":
            nxt = self._path_item(j + 1)
            if nxt is None:
                break
            items.append(nxt[0])
            j = nxt[1]
        segs.extend(s for s in items if s != "this")
        return PathExpr(src[i:j], tuple(segs)), j

    # -- parameters and calls
    def param(self, i: int) -> tuple[Any, int] | None:
        if self._keyword_at(i):
            return None
        end = self.literal(i)
        if end is not None:
            return self.literal_value(i, end), end
        ref = self.reference(i)
        if ref is not None:
            return ref
        return self.subexpression(i)

    def _hash(self, i: int) -> tuple[tuple[str, Any], int] | None:
        end = self.identifier(i)
        if end is None:
            return None
        j = self.lit(self.ws(end), "=")
        if j is None:
            return None
        p = self.param(self.ws(j))
        return None if p is None else ((self.src[i:end], p[0]), p[1])

    def _arguments(self, i: int) -> tuple[list[Any], list[tuple[str, Any]], int]:
        params: list[Any] = []
        hashes: list[tuple[str, Any]] = []
        while True:
            k = self.ws(i)
            h = self._hash(k)
            if h is not None:
                hashes.append(h[0])
                i = h[1]
                continue
            p = self.param(k)
            if p is None:
                return params, hashes, i
            params.append(p[0])
            i = p[1]

    def exp_line(self, i: int, *, min_args: int = 0, block_params: bool = True):
        """``identifier (hash|param)* (as |a b|)?`` -> (Call, end) or None."""
        end = self.identifier(i)
        if end is None:
            return None
        params, hashes, j = self._arguments(end)
        if len(params) + len(hashes) < min_args:
            return None
        names: tuple[str, ...] = ()
        if block_params:
            k = self.ws(j)
            if self.src.startswith("as", k):
                bp = self._block_param(k + 2)
                if bp is not None:
                    names, j = bp
        return Call(self.src[i:end], tuple(params), tuple(hashes), names), j

    def _block_param(self, i: int) -> tuple[tuple[str, ...], int] | None:
        j = self.lit(self.ws(i), "|")
        if j is None:
            return None
        j = self.ws(j)
        first = self.identifier(j)
        if first is None:
            return None
        names = [self.src[j:first]]
        j = self.ws(first)
        second = self.identifier(j)
        if second is not None:
            names.append(self.src[j:second])
            j = self.ws(second)
        end = self.lit(j, "|")
        return None if end is None else (tuple(names), end)

    def subexpression(self, i: int) -> tuple[Call, int] | None:
        j = self.lit(i, "(")
        if j is None:
            return None
        j = self.ws(j)
        body = self.exp_line(j, min_args=1, block_params=False)
        if body is None:
            ref = self.reference(j)
            if ref is None:
                return None
            body = (Call(ref[0]), ref[1])
        end = self.lit(self.ws(body[1]), ")")
        return None if end is None else (body[0], end)

    def _expression_body(self, i: int) -> tuple[Call, int] | None:
        body = self.exp_line(i, min_args=1, block_params=False)
        if body is not None:
            return body
        sub = self.subexpression(i)
        if sub is not None:
            return Call(sub[0]), sub[1]
        ref = self.reference(i)
        return None if ref is None else (Call(ref[0]), ref[1])

    # -- tags
    def _open(self, i: int, opener: str) -> tuple[int, bool] | None:
        j = self.lit(i, opener)
        if j is None:
            return None
        j = self.ws(j)
        if self.src.startswith("~", j):
            return self.ws(j + 1), True
        return j, False

    def _close(self, i: int, closer: str) -> tuple[int, bool] | None:
        j = self.ws(i)
        post = False
        if self.src.startswith("~", j):
            post, j = True, self.ws(j + 1)
        end = self.lit(j, closer)
        return None if end is None else (end, post)

    def _tag(self, p: int, kind: str, call: Call | None, j: int, pre: bool, closer: str = "}}"):
        closed = self._close(j, closer)
        if closed is None:
            return None
        return _Tag(kind, p, closed[0], call, pre, closed[1])

    def tag(self, p: int) -> _Tag:
        for parse in (self._invert, self._expression, self._html, self._block_open):
            t = parse(p)
            if t is not None:
                return t
        raw = self._open(p, "{{{{")
        if raw is not None:
            body = self.exp_line(raw[0])
            if body is not None:
                t = self._tag(p, "raw_open", body[0], body[1], raw[1], "}}}}")
                if t is not None:
                    return t
        comment = self._comment(p)
        if comment is not None:
            return comment
        head = self._open(p, "{{")
        if head is not None:
            j = head[0]
            if self.src.startswith(("*", "#*", ">", "#>"), j):
                raise self.error(p, "partials and decorators are not supported")
            if self.src.startswith("/", j):
                close = self._close_tag(p, "{{", "}}")
                if close is not None:
                    return close
        raise self.error(p, "invalid template syntax (a '{{' starts no valid expression)")

    def _invert(self, p: int) -> _Tag | None:
        head = self._open(p, "{{")
        if head is None:
            return None
        j = head[0]
        for item in ("else", "^"):
            if self.src.startswith(item, j):
                k = j + len(item)
                t = self._tag(p, "else", None, k, head[1])
                if t is not None:
                    return t
                body = self.exp_line(self.ws(k))
                if body is not None:
                    return self._tag(p, "else", body[0], body[1], head[1])
        return None

    def _expression(self, p: int) -> _Tag | None:
        head = self._open(p, "{{")
        if head is None:
            return None
        body = self._expression_body(head[0])
        return None if body is None else self._tag(p, "expr", body[0], body[1], head[1])

    def _html(self, p: int) -> _Tag | None:
        legacy = self._open(p, "{{{")
        if legacy is not None:
            body = self._expression_body(legacy[0])
            if body is not None:
                t = self._tag(p, "expr", body[0], body[1], legacy[1], "}}}")
                if t is not None:
                    return t
        head = self._open(p, "{{")
        if head is None:
            return None
        j = head[0]
        if self.src.startswith("{", j):
            body = self._expression_body(self.ws(j + 1))
            if body is not None:
                k = self.lit(self.ws(body[1]), "}")
                if k is not None:
                    t = self._tag(p, "expr", body[0], k, head[1])
                    if t is not None:
                        return t
        if self.src.startswith("&", j):
            k = self.ws(j + 1)
            sub = self.subexpression(k)
            name = (Call(sub[0]), sub[1]) if sub else None
            if name is None:
                ref = self.reference(k)
                name = (Call(ref[0]), ref[1]) if ref else None
            if name is not None:
                return self._tag(p, "expr", name[0], name[1], head[1])
        return None

    def _block_open(self, p: int) -> _Tag | None:
        head = self._open(p, "{{")
        if head is None or not self.src.startswith("#", head[0]):
            return None
        body = self.exp_line(self.ws(head[0] + 1))
        return None if body is None else self._tag(p, "open", body[0], body[1], head[1])

    def _close_tag(self, p: int, opener: str, closer: str) -> _Tag | None:
        head = self._open(p, opener)
        if head is None or not self.src.startswith("/", head[0]):
            return None
        j = self.ws(head[0] + 1)
        end = self.identifier(j) or j
        t = self._tag(p, "raw_close" if opener == "{{{{" else "close", None, end, head[1], closer)
        if t is not None:
            t.close_name = self.src[j:end]
        return t

    def _comment(self, p: int) -> _Tag | None:
        if not self.src.startswith("{{!", p):
            return None
        j = self.ws(p + 3)
        if self.src.startswith("--", j):
            end = self.src.find("--}}", j + 2)
            if end >= 0:
                return _Tag("comment", p, end + 4)
        end = self.src.find("}}", p + 3)
        return None if end < 0 else _Tag("comment", p, end + 2)

    # -- text
    _SPECIAL = re.compile(r"[\\{]")

    def text(self, i: int, stop: str) -> tuple[str, int]:
        """Raw text up to the next unescaped ``stop``; escapes lose their backslash."""
        out: list[str] = []
        src = self.src
        while i < self.n:
            m = self._SPECIAL.search(src, i)
            if m is None:
                out.append(src[i:])
                return "".join(out), self.n
            j = m.start()
            out.append(src[i:j])
            i = j
            if src.startswith("\\{{", i):
                width = 5 if src.startswith("\\{{{{", i) else 3
                out.append(src[i + 1 : i + width])
                i += width
            elif src.startswith("\\\\", i):
                k = i + 1
                while k < self.n and src[k] == "\\":
                    k += 1
                if src.startswith("{{", k):
                    out.append(src[i + 1 : k])
                else:
                    out.append(src[i:k])
                i = k
            elif src.startswith(stop, i):
                return "".join(out), i
            else:
                out.append(src[i])
                i += 1
        return "".join(out), i


def _clamp_ints(value: Any) -> Any:
    """serde_json keeps integers only within i64/u64; larger ones become floats."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not (-(2**63) <= value < 2**64):
        return float(value)
    if isinstance(value, list):
        return [_clamp_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _clamp_ints(v) for k, v in value.items()}
    return value


@dataclass
class _OpenBlock:
    call: Call
    line: int
    column: int
    raw: bool
    parts: list[tuple[Call | None, list[Any]]] = field(default_factory=list)
    plain_else: bool = False


class _Compiler:
    """handlebars-rust's compile pass: raw text, standalone lines, ``~`` trimming, blocks."""

    def __init__(self, src: str, name: str | None) -> None:
        self.p = _Parser(src, name)
        self.src = src
        self.templates: list[list[Any]] = [[]]
        self.blocks: list[_OpenBlock] = []
        self.omit_pro_ws = False
        self.trim_line = False

    def compile(self) -> list[Any]:
        p, src, pos = self.p, self.src, 0
        while True:
            text, end = p.text(pos, "{{")
            if end > pos:
                self._text(src[pos:end], text, pos)
            if end >= len(src):
                break
            tag = p.tag(end)
            self._handle(tag)
            pos = tag.end
            if tag.kind == "raw_open":
                pos = self._raw_body(pos, tag)
        if self.blocks:
            blk = self.blocks[-1]
            raise TemplateError(
                f"block '{blk.call.name_text}' is never closed",
                name=p.name,
                line=blk.line,
                column=blk.column,
            )
        return self.templates[0]

    def _text(self, raw: str, text: str, start: int) -> None:
        gap = start > 0 and all(c in _WS for c in raw)
        if gap and self.omit_pro_ws:
            return  # dropped, and the pending standalone trim stays pending
        if self.omit_pro_ws:
            text = text.lstrip()
        elif self.trim_line:
            text = text.lstrip(" \t")
            text = text[2:] if text.startswith("\r\n") else text[1:] if text[:1] == "\n" else text
        self.templates[-1].append(text)
        self.trim_line = False

    def _trim_previous(self, chars: str | None) -> None:
        t = self.templates[-1]
        if t and isinstance(t[-1], str):
            t[-1] = t[-1].rstrip(chars)

    def _standalone(self, tag: _Tag) -> bool:
        src, n = self.src, len(self.src)
        after = tag.end
        while after < n and src[after] in " \t":
            after += 1
        if not (after < n and src[after] in "\r\n") and tag.end != n:
            return False
        before = tag.start
        while before > 0 and src[before - 1] in " \t":
            before -= 1
        leading = before == 0 or src[before - 1] in "\r\n"
        if leading:
            self._trim_previous(" \t")
        return tag.start == 0 or leading

    def _handle(self, tag: _Tag) -> None:
        if tag.kind == "comment":
            self.trim_line = self._standalone(tag)
            self.templates[-1].append(Comment())
            return
        if tag.pre:
            self._trim_previous(None)
        self.omit_pro_ws = tag.post
        line, col = self.p.position(tag.start)
        if tag.kind == "expr":
            assert tag.call is not None
            self.templates[-1].append(Expr(tag.call, line, col))
            return
        self.trim_line = self._standalone(tag)
        if tag.kind in ("open", "raw_open"):
            assert tag.call is not None
            if len(self.blocks) >= MAX_BLOCK_DEPTH:
                raise self.p.error(
                    tag.start, f"blocks nested more than {MAX_BLOCK_DEPTH} levels deep"
                )
            self.blocks.append(_OpenBlock(tag.call, line, col, tag.kind == "raw_open"))
            self.templates.append([])
        elif tag.kind == "else":
            if not self.blocks or self.blocks[-1].plain_else:
                raise self.p.error(tag.start, "'{{else}}' outside of a block")
            blk = self.blocks[-1]
            blk.parts.append((None, self.templates.pop()))
            blk.plain_else = tag.call is None
            if len(blk.parts) > MAX_BLOCK_DEPTH:
                raise self.p.error(tag.start, f"more than {MAX_BLOCK_DEPTH} '{{{{else}}}}' chained")
            if tag.call is not None:
                blk.parts.append((tag.call, []))
            self.templates.append([])
        else:
            if not self.blocks:
                raise self.p.error(tag.start, f"'{{{{/{tag.close_name}}}}}' closes no block")
            blk = self.blocks.pop()
            if tag.close_name != blk.call.name_text:
                raise self.p.error(
                    tag.start,
                    f"'{{{{/{tag.close_name}}}}}' does not close '{blk.call.name_text}'",
                )
            blk.parts.append((None, self.templates.pop()))
            self.templates[-1].append(self._build(blk))

    def _raw_body(self, pos: int, tag: _Tag) -> int:
        start = self.p.ws(pos)
        text, end = self.p.text(start, "{{{{")
        close = self.p._close_tag(end, "{{{{", "}}}}") if end < len(self.src) else None
        if close is None:
            raise self.p.error(end, "raw block is never closed")
        if self.omit_pro_ws:
            text = text.lstrip()
        elif self.trim_line:
            text = text.lstrip(" \t")
            text = text[2:] if text.startswith("\r\n") else text[1:] if text[:1] == "\n" else text
        self.trim_line = False
        self.templates[-1].append(text)
        self._handle(close)
        return close.end

    @staticmethod
    def _build(blk: _OpenBlock) -> Block:
        # parts: (None, main) [(chain call, tmpl)...] ; the template after each chain call is
        # recorded in the following (None, tmpl) entry.
        segments: list[tuple[Call | None, list[Any]]] = []
        head_template = blk.parts[0][1]
        pending: Call | None = None
        for call, tmpl in blk.parts[1:]:
            if call is not None:
                pending = call
                continue
            segments.append((pending, tmpl))
            pending = None
        inverse: list[Any] | None = None
        if blk.plain_else:
            inverse = segments.pop()[1]
        for call, tmpl in reversed(segments):
            assert call is not None
            inverse = [Block(call, blk.line, blk.column, tmpl, inverse)]
        return Block(blk.call, blk.line, blk.column, head_template, inverse)


def compile_template(source: str, *, name: str | None = None) -> list[Any]:
    """Parse a template; raises TemplateError with line and column on bad syntax."""
    return _Compiler(source, name).compile()


# --------------------------------------------------------------------------- rendering


class _RenderFailure(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.line: int | None = None
        self.column: int | None = None


@dataclass
class Value:
    """A parameter: its value, where it lives in the context (if it does), how it was written."""

    value: Any
    path: list[str] | None = None
    written: str | None = None

    @property
    def missing(self) -> bool:
        return self.value is MISSING

    @property
    def json(self) -> Any:
        return None if self.value is MISSING else self.value


_NO_VALUE: Any = object()


@dataclass
class _Scope:
    base_path: list[str] = field(default_factory=list)
    base_value: Any = _NO_VALUE
    locals: dict[str, Any] = field(default_factory=dict)
    params: dict[str, tuple[str, Any]] = field(default_factory=dict)


@dataclass
class HelperCall:
    name: str
    params: list[Value]
    hash: dict[str, Value]
    template: list[Any] | None
    inverse: list[Any] | None
    block_params: tuple[str, ...]
    is_block: bool

    def param(self, index: int) -> Value:
        if index >= len(self.params):
            raise _RenderFailure(f"helper '{self.name}' needs a parameter at position {index}")
        return self.params[index]


_UNSET: Any = object()


class Helper:
    """A helper: ``value`` (usable in subexpressions) and/or ``call`` (writes output)."""

    def value(self, r: Renderer, h: HelperCall) -> Any:
        return _UNSET

    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        v = self.value(r, h)
        if v is not _UNSET:
            out.append(render_value(v))


class Renderer:
    def __init__(self, data: Any, strict: bool, helpers: Mapping[str, Helper]) -> None:
        self.root = data
        self.strict = strict
        self.helpers = helpers
        self.scopes: list[_Scope] = [_Scope()]

    # -- lookups
    @staticmethod
    def _step(d: Any, key: str) -> Any:
        if isinstance(d, list):
            if not re.fullmatch(r"\+?[0-9]+", key) or int(key) >= 2**64:
                raise _RenderFailure(f"cannot index an array with '{key}'")
            i = int(key)
            return d[i] if i < len(d) else MISSING
        if isinstance(d, dict):
            return d.get(key, MISSING)
        return MISSING

    def _walk(self, start: Any, keys: list[str], absolute: bool) -> Value:
        v = start
        for k in keys:
            v = self._step(v, k)
        return Value(v, list(keys) if absolute and v is not MISSING else None)

    def lookup(self, path: PathExpr) -> Value:
        local = path.local
        if local is not None:
            level, name = local
            scope = self.scopes[-1 - level] if level < len(self.scopes) else None
            found = scope.locals.get(name, MISSING) if scope else MISSING
            return Value(found, None, path.raw)
        v = self._navigate(path.segs)
        v.written = path.raw
        return v

    def _navigate(self, segs: tuple[Any, ...]) -> Value:
        depth, from_root, param = 0, False, None
        for seg in segs:
            if seg is _ROOT:
                from_root = True
            elif seg is _UP:
                depth += 1
                continue
            elif isinstance(seg, str):
                for scope in reversed(self.scopes):
                    if seg in scope.params:
                        param = (scope.params[seg], scope.base_path)
                        break
            break
        named = [s for s in segs if isinstance(s, str)]
        if param is not None:
            (kind, held), base = param
            rest = [s for s in segs[depth + 1 :] if isinstance(s, str)]
            if kind == "value":
                return self._walk(held, rest, False)
            return self._walk(self.root, base + held + rest, True)
        if depth > 0:
            scope = self.scopes[-1 - depth] if depth < len(self.scopes) else self.scopes[-1]
        elif from_root:
            return self._walk(self.root, named, True)
        else:
            scope = self.scopes[-1]
        if scope.base_value is not _NO_VALUE:
            return self._walk(scope.base_value, named, False)
        return self._walk(self.root, scope.base_path + named, True)

    # -- evaluation
    def evaluate(self, p: Any) -> Value:
        if isinstance(p, Literal):
            return Value(p.value)
        if isinstance(p, PathExpr):
            return self.lookup(p)
        assert isinstance(p, Call)
        h = self._helper_call(p, None, None, False)
        helper = self._helper(h.name)
        v = helper.value(self, h)
        if v is not _UNSET:
            return Value(v)
        buf: list[str] = []
        helper.call(self, h, buf)
        return Value("".join(buf))

    def _helper(self, name: str) -> Helper:
        helper = self.helpers.get(name)
        if helper is None:
            raise _RenderFailure(f"helper '{name}' not found")
        return helper

    def _helper_call(self, call: Call, template, inverse, is_block: bool) -> HelperCall:
        name = call.name_text
        if isinstance(call.name, Call):
            name = render_value(self.evaluate(call.name).json)
        params = [self.evaluate(p) for p in call.params]
        hashes = {k: self.evaluate(v) for k, v in call.hash}
        return HelperCall(name, params, hashes, template, inverse, call.block_params, is_block)

    def strict_failure(self, written: str | None) -> _RenderFailure:
        what = f'"{written}"' if written else "a value"
        return _RenderFailure(f"{what} is not defined (strict mode)")

    # -- output
    def render(self, template: list[Any], out: list[str]) -> None:
        for el in template:
            if isinstance(el, str):
                out.append(el)
            elif isinstance(el, Comment):
                continue
            else:
                try:
                    self._render_element(el, out)
                except _RenderFailure as exc:
                    if exc.line is None:
                        exc.line, exc.column = el.line, el.column
                    raise

    def _render_element(self, el: Expr | Block, out: list[str]) -> None:
        call = el.call
        if isinstance(el, Block):
            h = self._helper_call(call, el.template, el.inverse, True)
            self._helper(h.name).call(self, h, out)
            return
        if not call.params and not call.hash:
            if isinstance(call.name, Call):
                out.append(render_value(self.evaluate(call.name).json))
                return
            if call.name_text in self.helpers:
                h = self._helper_call(call, None, None, False)
                self._helper(h.name).call(self, h, out)
                return
            v = self.evaluate(call.name)
            if v.missing:
                if self.strict:
                    raise self.strict_failure(v.written)
                return
            out.append(render_value(v.value))
            return
        h = self._helper_call(call, None, None, False)
        self._helper(h.name).call(self, h, out)

    def push_scope(self, param: Value) -> _Scope:
        scope = _Scope()
        if param.path is not None:
            scope.base_path = list(param.path)
        else:
            scope.base_value = param.json
        self.scopes.append(scope)
        return scope

    def pop_scope(self) -> None:
        self.scopes.pop()


# --------------------------------------------------------------------------- built-in helpers


class _If(Helper):
    def __init__(self, positive: bool) -> None:
        self.positive = positive

    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        include_zero = h.hash.get("includeZero")
        zero = include_zero is not None and include_zero.json is True
        value = truthy(h.param(0).json, zero) == self.positive
        tmpl = h.template if value else h.inverse
        if tmpl is not None:
            r.render(tmpl, out)


class _Each(Helper):
    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        p = h.param(0)
        v = p.json
        if h.template is None:
            return
        if isinstance(v, list | dict) and (v or h.inverse is None):
            scope = r.push_scope(p)
            items = list(v.items()) if isinstance(v, dict) else list(enumerate(v))
            for i, (key, item) in enumerate(items):
                scope.locals.update(first=i == 0, last=i == len(items) - 1, index=i)
                if isinstance(v, dict):
                    scope.locals["key"] = key
                if p.path is not None:
                    scope.base_path = [*p.path, str(key)]
                else:
                    scope.base_value = item
                if h.block_params:
                    held = ("path", []) if p.path is not None else ("value", item)
                    scope.params = {h.block_params[0]: held}
                    if len(h.block_params) > 1:
                        scope.params[h.block_params[1]] = ("value", key)
                r.render(h.template, out)
            r.pop_scope()
        else:
            _render_empty_case(r, h, p, out)


def _render_empty_case(r: Renderer, h: HelperCall, p: Value, out: list[str]) -> None:
    """``#each`` / ``#with`` over an empty or missing value: the ``{{else}}`` block, or in
    strict mode an error for a missing value."""
    if h.inverse is not None:
        r.render(h.inverse, out)
    elif r.strict:
        raise r.strict_failure(p.written)


class _With(Helper):
    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        p = h.param(0)
        if truthy(p.json):
            parent_locals = dict(r.scopes[-1].locals)
            scope = r.push_scope(p)
            scope.locals = parent_locals
            if h.block_params:
                held = ("path", []) if p.path is not None else ("value", p.json)
                scope.params = {h.block_params[0]: held}
            if h.template is not None:
                r.render(h.template, out)
            r.pop_scope()
        else:
            _render_empty_case(r, h, p, out)


class _Lookup(Helper):
    def value(self, r: Renderer, h: HelperCall) -> Any:
        coll, index = h.param(0).json, h.param(1).json
        found: Any = MISSING
        if isinstance(coll, list) and isinstance(index, int) and not isinstance(index, bool):
            if 0 <= index < len(coll):
                found = coll[index]
        elif isinstance(coll, dict) and isinstance(index, str):
            found = coll.get(index, MISSING)
        if found is MISSING:
            if r.strict:
                raise r.strict_failure(h.params[0].written)
            return None
        return found


class _Raw(Helper):
    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        if h.template is not None:
            r.render(h.template, out)


class _Log(Helper):
    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        return None  # butido builds handlebars with the no_logging feature


class _Bool(Helper):
    """eq ne gt gte lt lte (two operands), not (one), and/or (any number)."""

    def __init__(self, arity: int | None, op: Callable[..., bool]) -> None:
        self.arity = arity
        self.op = op

    def value(self, r: Renderer, h: HelperCall) -> Any:
        if self.arity is None:
            return self.op([p.json for p in h.params])
        args = []
        for i in range(self.arity):
            p = h.param(i)
            if r.strict and p.missing:
                raise _RenderFailure(f"helper '{h.name}': parameter {i} is not defined")
            args.append(p.json)
        return self.op(*args)

    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        value = self.value(r, h) is True
        if not h.is_block:
            out.append("true" if value else "false")
            return
        tmpl = h.template if value else h.inverse
        if tmpl is not None:
            r.render(tmpl, out)


class _Len(Helper):
    def value(self, r: Renderer, h: HelperCall) -> Any:
        p = h.param(0)
        if r.strict and p.missing:
            raise _RenderFailure("helper 'len': parameter 0 is not defined")
        v = p.json
        if isinstance(v, str):
            return len(v.encode())
        return len(v) if isinstance(v, list | dict) else 0


def _ordered(pred: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def op(a: Any, b: Any) -> bool:
        c = compare(a, b)
        return c is not None and pred(c)

    return op


BUILTIN_HELPERS: Mapping[str, Helper] = {
    "if": _If(True),
    "unless": _If(False),
    "each": _Each(),
    "with": _With(),
    "lookup": _Lookup(),
    "raw": _Raw(),
    "log": _Log(),
    "eq": _Bool(2, json_equal),
    "ne": _Bool(2, lambda a, b: not json_equal(a, b)),
    "gt": _Bool(2, _ordered(lambda c: c > 0)),
    "gte": _Bool(2, _ordered(lambda c: c >= 0)),
    "lt": _Bool(2, _ordered(lambda c: c < 0)),
    "lte": _Bool(2, _ordered(lambda c: c <= 0)),
    "and": _Bool(None, lambda vs: all(truthy(v) for v in vs)),
    "or": _Bool(None, lambda vs: any(truthy(v) for v in vs)),
    "not": _Bool(1, lambda v: not truthy(v)),
    "len": _Len(),
}


# --------------------------------------------------------------------------- butido's helpers


def _string_param(h: HelperCall, index: int, what: str) -> str:
    v = h.param(index).json
    if not isinstance(v, str):
        raise _RenderFailure(f"helper '{h.name}': {what} must be a string, got {render_value(v)!r}")
    return v


class _Phase(Helper):
    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        out.append(f"echo '#BUTIDO:PHASE:{_string_param(h, 0, 'the phase name')}'")


class _State(Helper):
    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        state = _string_param(h, 0, "the state")
        if state == "OK":
            out.append("echo '#BUTIDO:STATE:OK'")
        elif state == "ERR":
            out.append(f"echo '#BUTIDO:STATE:ERR:{render_value(h.param(1).json)}'")
        else:
            raise _RenderFailure(f"helper 'state': the state must be 'OK' or 'ERR', not '{state}'")


class _Progress(Helper):
    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        v = h.param(0).json
        if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
            raise _RenderFailure(f"helper 'progress': needs an integer, got {render_value(v)!r}")
        out.append(f"echo '#BUTIDO:PROGRESS:{v}'")


class _Join(Helper):
    def __init__(self, with_separator: bool) -> None:
        self.with_separator = with_separator

    def call(self, r: Renderer, h: HelperCall, out: list[str]) -> None:
        sep = _string_param(h, 0, "the separator") if self.with_separator else ""
        first = 1 if self.with_separator else 0
        parts = [_string_param(h, i, f"parameter {i}") for i in range(first, len(h.params))]
        out.append(sep.join(parts))


BUTIDO_HELPERS: Mapping[str, Helper] = {
    **BUILTIN_HELPERS,
    "phase": _Phase(),
    "state": _State(),
    "progress": _Progress(),
    "join": _Join(False),
    "joinwith": _Join(True),
}


def render(
    template: str,
    context: Mapping[str, Any],
    *,
    strict: bool = True,
    name: str | None = None,
    helpers: Mapping[str, Helper] | None = None,
) -> str:
    """Render ``template`` with butido's dialect (its helpers included, no HTML escaping).

    ``name`` only labels errors. Raises TemplateError (with line and column) on syntax
    errors, undefined values in strict mode, and helper misuse.
    """
    compiled = compile_template(template, name=name)
    renderer = Renderer(_json(context), strict, BUTIDO_HELPERS if helpers is None else helpers)
    out: list[str] = []
    try:
        renderer.render(compiled, out)
    except _RenderFailure as exc:
        raise TemplateError(exc.message, name=name, line=exc.line, column=exc.column) from None
    except RecursionError:
        raise TemplateError("the template nests too deeply to render", name=name) from None
    return "".join(out)
