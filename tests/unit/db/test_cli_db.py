"""Pure helpers of the db commands: time parsing, states of old jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_butido.cli.common import parse_when
from airflow_butido.db.queries import _posthoc_state_fallback, artifact_type, display_state
from airflow_butido.errors import ButidoError

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [("2h", timedelta(hours=2)), ("3weeks", timedelta(weeks=3)), ("1d 12h", timedelta(hours=36)),
     ("90s", timedelta(seconds=90)), ("5min", timedelta(minutes=5))],
)  # fmt: skip
def test_durations_count_back_from_now(text: str, ago: timedelta) -> None:
    assert parse_when(text, now=NOW) == NOW - ago


def test_dates_are_utc() -> None:
    assert parse_when("2024-03-01") == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_when("2024-03-01 10:11:12") == datetime(2024, 3, 1, 10, 11, 12, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "2x", "2h and", "2024-13-01"])
def test_unreadable_times_are_refused(text: str) -> None:
    with pytest.raises(ButidoError, match="neither a duration"):
        parse_when(text)


@pytest.mark.parametrize(
    ("log", "state"),
    [("x\n#BUTIDO:STATE:OK\n", "ok"), ('#BUTIDO:STATE:ERR:"boom"\n', "err"),
     ('#BUTIDO:STATE:ERR:"x"\n#BUTIDO:STATE:OK\n', "ok"), ("no marker", "unknown")],
)  # fmt: skip
def test_old_jobs_take_the_last_state_line(log: str, state: str) -> None:
    assert _posthoc_state_fallback(log) == state


def test_recorded_state_wins_over_the_log() -> None:
    assert display_state("failed", "#BUTIDO:STATE:OK") == "failed"
    assert display_state(None, "#BUTIDO:STATE:OK") == "success"
    assert display_state(None, "") == "unknown"


def test_artifact_type_is_the_upper_cased_extension() -> None:
    assert [artifact_type(p) for p in ("a-1.pkg", "x/y.tar.gz", "noext", None, "d.ir/f")] == [
        "PKG", "GZ", "", "", "",
    ]  # fmt: skip
