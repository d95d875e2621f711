"""The ``#BUTIDO:`` log protocol: what a build script tells butido through its output.

Each output line is one item: ``#BUTIDO:PROGRESS:<digits>``, ``#BUTIDO:PHASE:<string>``,
``#BUTIDO:STATE:ERR:<string>``, ``#BUTIDO:STATE:OK``, or a plain line. The prefix must start
at column 0 and anything after a recognised token is ignored; ``<string>`` ends at the first
unescaped ``"`` or ``\\`` and its JSON-style escapes are decoded (so the documented form
``#BUTIDO:STATE:ERR:"msg"`` carries an empty message, as in butido).

The fold over a build's items is butido's (the first ERR is sticky, no state line counts as
success) plus one rule of ours: a non-zero exit status is a failure too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

PREFIX = "#BUTIDO:"
_DIGITS = re.compile(r"[0-9]+")
_ESCAPES = {"\\": "\\", "/": "/", '"': '"', "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class Progress:
    n: int


@dataclass(frozen=True)
class PhaseMarker:
    name: str


@dataclass(frozen=True)
class State:
    ok: bool
    message: str | None = None


LogItem = Line | Progress | PhaseMarker | State


def _string(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            break
        if c == "\\":
            decoded = _ESCAPES.get(text[i + 1 : i + 2])
            if decoded is None:
                break
            out.append(decoded)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_line(line: str) -> LogItem:
    """One output line (without its line break) as a log item."""
    if line.startswith(PREFIX):
        rest = line[len(PREFIX) :]
        if rest.startswith("PROGRESS:"):
            m = _DIGITS.match(rest, len("PROGRESS:"))
            if m is not None and int(m.group()) < 2**64:
                return Progress(int(m.group()))
        elif rest.startswith("PHASE:"):
            return PhaseMarker(_string(rest[len("PHASE:") :]))
        elif rest.startswith("STATE:ERR:"):
            return State(False, _string(rest[len("STATE:ERR:") :]))
        elif rest.startswith("STATE:OK"):
            return State(True)
    return Line(line.split("\n", 1)[0])


def raw(item: LogItem) -> str:
    """The item as a log line again (what butido stores for the job)."""
    if isinstance(item, Line):
        return item.text
    if isinstance(item, Progress):
        return f"{PREFIX}PROGRESS:{item.n}"
    if isinstance(item, PhaseMarker):
        return f"{PREFIX}PHASE:{item.name}"
    if item.ok:
        return f"{PREFIX}STATE:OK"
    return f"{PREFIX}STATE:ERR:{item.message}"


def readable(item: LogItem) -> str:
    """How a log line reads for a person: protocol lines as ``[butido] ...`` events."""
    if isinstance(item, PhaseMarker):
        return f"[butido] phase: {item.name}"
    if isinstance(item, Progress):
        return f"[butido] progress: {item.n}%"
    if isinstance(item, State):
        return (
            "[butido] state: OK"
            if item.ok
            else f"[butido] state: ERR {item.message or ''}".rstrip()
        )
    return item.text


def iter_lines(text: str) -> Iterator[str]:
    """Lines split like Rust's ``str::lines``: on ``\\n``, a trailing ``\\r`` dropped."""
    if not text:
        return
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    for part in parts:
        yield part[:-1] if part.endswith("\r") else part


def parse_log(text: str) -> list[LogItem]:
    return [parse_line(line) for line in iter_lines(text)]


class BuildOutcome:
    """The running verdict over one build's log; constant memory however long the log is.

    Feed every item (or line) as it arrives, then ask ``succeeded(exit_code)``.
    """

    def __init__(self) -> None:
        self.last_phase: str | None = None
        self.progress: int | None = None
        self.seen_ok = False
        self.error_message: str | None = None  # message of the first ERR state
        self._error_seen = False
        self._phase_at_error: str | None = None

    def feed(self, item: LogItem) -> LogItem:
        if isinstance(item, PhaseMarker):
            self.last_phase = item.name
        elif isinstance(item, Progress):
            self.progress = item.n
        elif isinstance(item, State):
            if item.ok:
                self.seen_ok = True
            elif not self._error_seen:
                self._error_seen = True
                self.error_message = item.message
                self._phase_at_error = self.last_phase
        return item

    def feed_line(self, line: str) -> LogItem:
        return self.feed(parse_line(line))

    def feed_all(self, items: Iterable[LogItem]) -> BuildOutcome:
        for item in items:
            self.feed(item)
        return self

    @property
    def state_failed(self) -> bool:
        """butido's own verdict: an ERR state was printed (the exit status aside)."""
        return self._error_seen

    @property
    def has_state(self) -> bool:
        return self._error_seen or self.seen_ok

    def succeeded(self, exit_code: int | None = 0) -> bool:
        """No ERR state and (when known) exit status 0; no state line at all is success."""
        return not self._error_seen and (exit_code is None or exit_code == 0)

    @property
    def failed_phase(self) -> str | None:
        """Last phase announced before the first ERR; without an ERR, the last phase seen."""
        return self._phase_at_error if self._error_seen else self.last_phase


def posthoc_state(log_text: str) -> Literal["ok", "err", "unknown"]:
    """butido's verdict for a stored log (``db jobs``): the last state line wins."""
    verdict: Literal["ok", "err", "unknown"] = "unknown"
    for line in iter_lines(log_text):
        item = parse_line(line)
        if isinstance(item, State):
            verdict = "ok" if item.ok else "err"
    return verdict
