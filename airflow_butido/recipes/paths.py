"""Keeping paths inside their root: the repository, the source cache, the stores.

A path is checked after every symbolic link in it is resolved, so a link such as
``p/shadow.patch -> /etc/shadow`` or a name like ``../../tmp/x`` cannot reach a file
outside the directory it belongs to.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow_butido.errors import BuildError


class OutsideRoot(BuildError):
    """A path leaves the directory it must stay in: the recipe's fault, not worth a retry."""


def _first_link(root: Path, relative: Path) -> Path | None:
    """The first component of ``root / relative`` (below ``root``) that is a symbolic link."""
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def confine(root: Path, relative: str | Path, *, what: str) -> Path:
    """The real path of ``root / relative``; raise OutsideRoot if it is not below ``root``.

    ``what`` names the path in the message (``"patch p/1/x.patch"``). The file need not
    exist; every link that does exist is followed before the check.
    """
    base = Path(os.path.realpath(root))
    rel = Path(relative)
    real = Path(os.path.realpath(Path(root) / rel))
    if real == base or base in real.parents:
        return real
    link = None if rel.is_absolute() else _first_link(Path(root), rel)
    if link is not None:
        raise OutsideRoot(
            f"{what}: {link} is a symbolic link to {os.readlink(link)}, "
            f"which leaves {base} (resolves to {real})"
        )
    raise OutsideRoot(f"{what}: {Path(root) / rel} resolves to {real}, outside {base}")
