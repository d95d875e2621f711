"""The #BUTIDO: line grammar and the build verdict (butido's log parser tests, ported)."""

from __future__ import annotations

import pytest

from airflow_butido.scripts.logproto import (
    BuildOutcome,
    Line,
    PhaseMarker,
    Progress,
    State,
    iter_lines,
    parse_line,
    parse_log,
    posthoc_state,
    raw,
)

GRAMMAR = [
    # butido's own parser tests
    ("foo bar", Line("foo bar")),  # test_non_log
    ("#BUTIDO:PROGRESS:1", Progress(1)),  # test_progress_1
    ("#BUTIDO:PROGRESS:100", Progress(100)),  # test_progress_100
    ("#BUTIDO:PROGRESS:-1", Line("#BUTIDO:PROGRESS:-1")),  # test_progress_negative
    ("#BUTIDO:PHASE:a", PhaseMarker("a")),  # test_phase
    ("#BUTIDO:PHASE:a\n\n            ", PhaseMarker("a\n\n            ")),  # test_phase_multiline
    # the rest of the grammar
    ("#BUTIDO:STATE:OK", State(True)),
    ("#BUTIDO:STATE:OKAY and more", State(True)),  # trailing characters are ignored
    ("#BUTIDO:STATE:ERR:make failed", State(False, "make failed")),
    ("#BUTIDO:STATE:ERR:", State(False, "")),
    ('#BUTIDO:STATE:ERR:"errormessage"', State(False, "")),  # the documented form: empty
    ('#BUTIDO:STATE:ERR:bad "quoted" part', State(False, "bad ")),
    ('#BUTIDO:STATE:ERR:a\\tb\\nc\\\\d\\/e\\"f', State(False, 'a\tb\nc\\d/e"f')),
    ("#BUTIDO:STATE:ERR:stop\\xhere", State(False, "stop")),  # unknown escape ends it
    ("#BUTIDO:STATE:ERR:b\\b\\f\\r", State(False, "b\b\f\r")),
    ("#BUTIDO:STATE:ERROR", Line("#BUTIDO:STATE:ERROR")),
    ("#BUTIDO:STATE:", Line("#BUTIDO:STATE:")),
    ("#BUTIDO:STATE:ok", Line("#BUTIDO:STATE:ok")),
    ("#BUTIDO:PROGRESS:42%", Progress(42)),
    ("#BUTIDO:PROGRESS:007", Progress(7)),
    ("#BUTIDO:PROGRESS:", Line("#BUTIDO:PROGRESS:")),
    ("#BUTIDO:PROGRESS:x1", Line("#BUTIDO:PROGRESS:x1")),
    ("#BUTIDO:PROGRESS:99999999999999999999999", Line("#BUTIDO:PROGRESS:99999999999999999999999")),
    ("#BUTIDO:PHASE:", PhaseMarker("")),
    ("#BUTIDO:PHASE:build phase", PhaseMarker("build phase")),
    (" #BUTIDO:STATE:OK", Line(" #BUTIDO:STATE:OK")),  # prefix only at column 0
    ("echo '#BUTIDO:STATE:OK'", Line("echo '#BUTIDO:STATE:OK'")),
    ("#butido:STATE:OK", Line("#butido:STATE:OK")),
    ("#BUTIDO:UNKNOWN:x", Line("#BUTIDO:UNKNOWN:x")),
    ("", Line("")),
]


@pytest.mark.parametrize(("line", "item"), GRAMMAR)
def test_line_grammar(line: str, item) -> None:
    assert parse_line(line) == item


MULTILINE = """#BUTIDO:PROGRESS:0
Some log line
#BUTIDO:PHASE:configure
Some log line
Some log line
Some log line
#BUTIDO:PHASE:Build
Some other log line
Some other log line
Some other log line
#BUTIDO:STATE:OK
"""


def test_multiline_log_parses_item_by_item() -> None:  # test_multiline
    assert parse_log(MULTILINE) == [
        Progress(0),
        Line("Some log line"),
        PhaseMarker("configure"),
        Line("Some log line"),
        Line("Some log line"),
        Line("Some log line"),
        PhaseMarker("Build"),
        Line("Some other log line"),
        Line("Some other log line"),
        Line("Some other log line"),
        State(True),
    ]


POSTHOC = [
    ("foo bar\n", "unknown"),  # test_is_successfull_1
    ("#BUTIDO:PROGRESS:1\n", "unknown"),  # test_is_successfull_2
    ("#BUTIDO:PHASE:a\n", "unknown"),  # test_is_successfull_3
    ("#BUTIDO:STATE:OK\n", "ok"),  # test_successfull_4
    ("#BUTIDO:STATE:ERR:FOO\n", "err"),  # test_successfull_5
    (MULTILINE, "ok"),  # test_successfull_6
    (
        "make: *** No targets specified and no makefile found.  Stop.\n"
        "#BUTIDO:STATE:ERR:make failed\n",
        "err",
    ),  # test_successfull_7
    ("#BUTIDO:STATE:ERR:x\n#BUTIDO:STATE:OK\n", "ok"),  # last state wins
    ("#BUTIDO:STATE:OK\n#BUTIDO:STATE:ERR:x", "err"),
    ("#BUTIDO:STATE:OK\r\n", "ok"),  # CRLF lines
    ("", "unknown"),
]


@pytest.mark.parametrize(("log", "verdict"), POSTHOC)
def test_posthoc_state_last_state_wins(log: str, verdict: str) -> None:
    assert posthoc_state(log) == verdict


def outcome(*lines: str) -> BuildOutcome:
    o = BuildOutcome()
    for line in lines:
        o.feed_line(line)
    return o


# (log lines, exit code, succeeded, error message, failed phase)
FOLD = [
    ((), 0, True, None, None),  # no state line at all: success
    (("hello",), 0, True, None, None),
    (("#BUTIDO:STATE:OK",), 0, True, None, None),
    (("#BUTIDO:STATE:OK",), 1, False, None, None),  # ours: non-zero exit fails
    (("#BUTIDO:PHASE:build",), 2, False, None, "build"),
    (("hello",), None, True, None, None),  # exit status unknown: state decides
    (
        (
            "#BUTIDO:PHASE:fetch",
            "#BUTIDO:STATE:ERR:first",
            "#BUTIDO:PHASE:build",
            "#BUTIDO:STATE:OK",
            "#BUTIDO:STATE:ERR:second",
        ),
        0,
        False,
        "first",
        "fetch",
    ),  # the first ERR is sticky, a later OK cannot undo it
    (("#BUTIDO:STATE:ERR:x", "#BUTIDO:STATE:OK"), 0, False, "x", None),
    (("#BUTIDO:PHASE:a", "#BUTIDO:PHASE:b", "#BUTIDO:STATE:ERR:boom"), 0, False, "boom", "b"),
    (("#BUTIDO:PHASE:a", "#BUTIDO:STATE:OK", "#BUTIDO:PHASE:b"), 1, False, None, "b"),
]


@pytest.mark.parametrize(("lines", "code", "ok", "message", "phase"), FOLD)
def test_build_outcome_fold(lines, code, ok, message, phase) -> None:
    o = outcome(*lines)
    assert o.succeeded(code) is ok
    assert o.error_message == message
    if not ok:
        assert o.failed_phase == phase


def test_outcome_tracks_progress_and_state_lines() -> None:
    o = outcome("#BUTIDO:PROGRESS:10", "#BUTIDO:PROGRESS:80", "x")
    assert o.progress == 80
    assert not o.has_state
    assert outcome("#BUTIDO:STATE:OK").has_state
    assert outcome("#BUTIDO:STATE:ERR:e").state_failed


@pytest.mark.parametrize(
    "line",
    ["plain", "#BUTIDO:PROGRESS:5", "#BUTIDO:PHASE:x", "#BUTIDO:STATE:OK", "#BUTIDO:STATE:ERR:m"],
)
def test_raw_round_trips(line: str) -> None:
    assert raw(parse_line(line)) == line


def test_iter_lines_splits_like_rust() -> None:
    assert list(iter_lines("a\r\nb\n\nc")) == ["a", "b", "", "c"]
    assert list(iter_lines("a\n")) == ["a"]
    assert list(iter_lines("")) == []
