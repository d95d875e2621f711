"""The one rule for package names, versions and source names.

They become file and directory names (the source cache, staging, container names), so
they are limited to a safe character set: letters, digits and ``. _ + - ~ :``, starting
with a letter, a digit or ``_``. Debian- and RPM-style versions (``1.2.3-1``, ``2:1.0``,
``1.0~rc1``, ``1.0+git``) fit; ``/``, NUL, whitespace and a leading ``.`` or ``-`` do not.
"""

from __future__ import annotations

import re

MAX_LENGTH = 128
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+~:-]*")


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a safe name, or None when it is."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_LENGTH} are allowed"
    if _SAFE.fullmatch(value):
        return None
    if value[0] in ".-":
        return f"{value!r} must not start with {value[0]!r}"
    bad = sorted({c for c in value if not _SAFE.fullmatch("a" + c)})
    shown = ", ".join(repr(c) for c in bad)
    return (
        f"{value!r} contains {shown}; allowed are letters, digits and . _ + - ~ : "
        "(not starting with . or -)"
    )
