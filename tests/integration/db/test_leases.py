"""Endpoint slot leases under real concurrency (threads and processes)."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections import Counter

import pytest

from airflow_butido.db import leases

from .lease_worker import hold_slots

pytestmark = pytest.mark.postgres

CANDIDATES = [("small", 1), ("big", 3)]


def test_the_least_utilised_endpoint_with_a_free_slot_is_chosen(engine) -> None:
    chosen = [leases.acquire_slot(engine, f"job-{i}", CANDIDATES) for i in range(5)]
    # 0/1 vs 0/3 -> small (first on ties); then big 0/3, 1/3, 2/3; then full
    assert chosen == ["small", "big", "big", "big", None]
    assert leases.slot_usage(engine) == {"small": 1, "big": 3}
    leases.release_slot(engine, "job-2")
    assert leases.acquire_slot(engine, "job-5", CANDIDATES) == "big"


def test_acquiring_twice_for_one_job_returns_the_same_slot(engine) -> None:
    assert leases.acquire_slot(engine, "job", CANDIDATES) == "small"
    assert leases.acquire_slot(engine, "job", CANDIDATES) == "small"
    assert leases.slot_usage(engine) == {"small": 1}


def test_an_expired_lease_is_reclaimed_and_a_renewed_one_is_not(engine) -> None:
    only = [("ep", 1)]
    assert leases.acquire_slot(engine, "crashed", only, ttl_seconds=0.2) == "ep"
    assert leases.acquire_slot(engine, "waiting", only) is None
    time.sleep(0.3)
    assert leases.acquire_slot(engine, "waiting", only, ttl_seconds=0.5) == "ep"
    assert leases.renew_slot(engine, "waiting", ttl_seconds=60)
    time.sleep(0.6)
    assert leases.acquire_slot(engine, "third", only) is None
    assert not leases.renew_slot(engine, "crashed")


def _max_concurrency(events: list[tuple[float, int, str]]) -> dict[str, int]:
    current: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    # releases before acquisitions at the same instant
    for _, delta, endpoint in sorted(events, key=lambda e: (e[0], e[1])):
        current[endpoint] += delta
        peak[endpoint] = max(peak[endpoint], current[endpoint])
    return dict(peak)


def test_maxjobs_holds_under_concurrent_threads(engine) -> None:
    events: list[tuple[float, int, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(4):
                job = str(uuid.uuid4())
                endpoint = leases.acquire_slot_waiting(
                    engine, job, CANDIDATES, poll_seconds=0.01, timeout_seconds=60
                )
                assert endpoint is not None
                with lock:
                    events.append((time.monotonic(), 1, endpoint))
                time.sleep(0.03)
                with lock:
                    events.append((time.monotonic(), -1, endpoint))
                leases.release_slot(engine, job)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    peak = _max_concurrency(events)
    assert peak["small"] == 1 and peak["big"] <= 3
    assert peak["big"] == 3  # the slots were actually contended
    assert leases.slot_usage(engine) == {}


def test_maxjobs_holds_across_processes(engine, db_url, tmp_path) -> None:
    log = tmp_path / "events.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=hold_slots, args=(db_url, CANDIDATES, 5, str(log))) for _ in range(5)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * 5
    events = []
    for line in log.read_text().splitlines():
        stamp, delta, endpoint = line.split()
        events.append((float(stamp), int(delta), endpoint))
    assert len(events) == 2 * 5 * 5
    peak = _max_concurrency(events)
    assert peak["small"] == 1 and peak["big"] <= 3
