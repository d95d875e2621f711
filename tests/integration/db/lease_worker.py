"""A process that takes endpoint slots repeatedly and logs when it holds one."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from airflow_butido.db.engine import make_engine
from airflow_butido.db.leases import acquire_slot_waiting, release_slot


def hold_slots(url: str, candidates: list[tuple[str, int]], rounds: int, log: str) -> None:
    engine = make_engine(url)
    try:
        for _ in range(rounds):
            job = str(uuid.uuid4())
            endpoint = acquire_slot_waiting(
                engine, job, candidates, poll_seconds=0.02, timeout_seconds=60
            )
            assert endpoint is not None
            with open(Path(log), "a") as fh:
                fh.write(f"{time.monotonic():.6f} +1 {endpoint}\n")
            time.sleep(0.05)
            with open(Path(log), "a") as fh:
                fh.write(f"{time.monotonic():.6f} -1 {endpoint}\n")
            release_slot(engine, job)
    finally:
        engine.dispose()
