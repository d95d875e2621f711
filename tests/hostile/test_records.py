"""The build record under load: logs of any size and any line length in bounded memory,
artifact recording that never locks other builds out, and success only with all
artifacts recorded."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_butido.container import LINE_CUT_MARKER, MAX_LINE_BYTES, iter_lines
from airflow_butido.db import records
from airflow_butido.db import schema as s
from airflow_butido.db.engine import make_engine
from airflow_butido.db.leases import acquire_slot, release_slot
from airflow_butido.db.migrate import upgrade
from airflow_butido.db.queries import job_detail
from tests.hostile._db import running_job
from tests.integration.conftest import db_url, engine  # noqa: F401 (fixtures)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from memory_bench import TARGET_MB, run_case  # noqa: E402

pytestmark = pytest.mark.postgres


def test_a_100_mib_log_is_stored_in_bounded_memory(db_url: str) -> None:  # noqa: F811
    result = run_case("log", db_url, 100)
    assert result["peak_mb"] < TARGET_MB, result


def test_a_300_mib_line_is_cut_and_stored_in_bounded_memory(db_url: str) -> None:  # noqa: F811
    result = run_case("line", db_url, 300)
    assert result["peak_mb"] < TARGET_MB, result


def test_the_measured_peak_is_the_case_alone(tmp_path: Path) -> None:
    """A large test process must not be counted: Linux keeps a process's ru_maxrss across
    exec, so a fresh interpreter forked from it reported the test process's size."""
    ballast = bytearray((TARGET_MB + 64) << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    result = run_case("baseline", f"sqlite:///{tmp_path / 'b.sqlite'}", 0)
    assert result["peak_mb"] < TARGET_MB, result
    del ballast


def test_a_long_line_keeps_its_start_and_says_how_much_was_cut() -> None:
    frames = [(1, b"a" * 1000)] * 200 + [(1, b"\nnext\n")]
    lines = list(iter_lines(frames))
    assert (
        lines[0] == "a" * MAX_LINE_BYTES + f" {LINE_CUT_MARKER} {200_000 - MAX_LINE_BYTES} bytes]"
    )
    assert lines[1:] == ["next"]


def test_a_long_log_reads_back_whole_and_butido_sees_its_end(engine) -> None:  # noqa: F811
    job = running_job(engine)
    log = "".join(f"line {i} " + "x" * 80 + "\n" for i in range(40_000)) + "#BUTIDO:STATE:OK"
    assert len(log) > 3 * records.LOG_CHUNK_CHARS
    records.record_job_finish(engine, uuid=job, state="success", exit_status=0, log=log)
    detail = job_detail(engine, job)
    assert detail is not None and detail.log == log
    with engine.connect() as conn:
        log_text = conn.execute(sa.select(s.jobs.c.log_text).where(s.jobs.c.uuid == job)).scalar()
    assert log_text.startswith(records.LOG_CUT_MARKER + "\nline ")
    assert log_text.endswith("#BUTIDO:STATE:OK")
    assert len(log_text) <= records.LOG_TEXT_MAX_CHARS + len(records.LOG_CUT_MARKER) + 1
    # finishing again (a retry) replaces the log instead of appending to it
    records.record_job_finish(engine, uuid=job, state="failed", exit_status=1, log="short")
    assert job_detail(engine, job).log == "short"  # type: ignore[union-attr]


def test_success_is_recorded_only_with_every_artifact(engine) -> None:  # noqa: F811
    job = running_job(engine)
    good = [records.ArtifactRecord(f"f{i}", "0" * 64, 1) for i in range(3 * records.ARTIFACT_BATCH)]
    bad = records.ArtifactRecord(None, None, None)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 (the database refuses the NULL path)
        records.record_job_finish(
            engine, uuid=job, state="success", exit_status=0, log="", artifacts=[*good, bad]
        )
    with engine.connect() as conn:
        state = conn.execute(sa.select(s.jobs.c.state).where(s.jobs.c.uuid == job)).scalar()
    assert state == "running"


def test_recording_100000_artifacts_does_not_lock_out_a_slot_acquisition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_butido.db.engine as db_engine

    monkeypatch.setattr(db_engine, "SQLITE_BUSY_TIMEOUT_S", 3.0)
    engine = make_engine(f"sqlite:///{tmp_path}/butido.sqlite")  # noqa: F811
    upgrade(engine)
    job = running_job(engine)
    count = 100_000
    artifacts = [records.ArtifactRecord(f"d/f{i}.pkg", "0" * 64, i) for i in range(count)]
    failures: list[BaseException] = []

    def record() -> None:
        try:
            records.record_job_finish(
                engine, uuid=job, state="success", exit_status=0, log="", artifacts=artifacts
            )
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    thread = threading.Thread(target=record)
    thread.start()
    acquired = 0
    waits: list[float] = []
    inconsistent: list[tuple[str, int]] = []
    while thread.is_alive():
        started = time.monotonic()
        slot = f"other-{acquired}"
        assert acquire_slot(engine, slot, [("local", 4)]) == "local"
        release_slot(engine, slot)
        waits.append(time.monotonic() - started)
        acquired += 1
        with engine.connect() as conn:
            state = conn.execute(sa.select(s.jobs.c.state).where(s.jobs.c.uuid == job)).scalar()
            rows = conn.execute(sa.select(sa.func.count()).select_from(s.artifacts)).scalar()
        if state == "success" and rows != count:
            inconsistent.append((state, rows))
        time.sleep(0.2)
    thread.join()
    assert failures == []
    assert acquired >= 3
    assert max(waits) < 3.0
    assert inconsistent == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s.artifacts)).scalar() == count
    engine.dispose()
