"""A heartbeat: renew something (a slot lease, a build claim) every few seconds while a job
holds it, so that what a dead job held expires on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(beat: Callable[[], object], every: float, what: str) -> Iterator[None]:
    """Call ``beat`` every ``every`` seconds in a daemon thread for the duration of the block.

    A failed beat is logged and the next one tried: one missed renewal is not fatal, the
    holder's time-to-live spans several beats.
    """
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            try:
                beat()
            except Exception as exc:
                log.warning("renewing %s failed: %s", what, exc)

    thread = threading.Thread(target=run, name=f"heartbeat {what}"[:60], daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
