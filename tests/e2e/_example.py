"""A copy of butido's example repository set up to build here, with one switchable failure.

The copy's overlay config builds in the test image on the local Docker socket with the
example source cache, stores in the temporary directory. Package ``h`` differs from the
example: it fails when the build env sets ``FAIL_H`` (an allowed env name), which drives the
failure runs: ``c`` and ``a`` depend on it, ``b`` and its subtree do not; with ``SLEEP_H`` it
sleeps ten minutes first (a build to kill).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support import make_dirs, overlay_toml

FAILING_H = """name = "h"
version = "8"

[sources.src]
url = "https://example.com"
hash.hash = "{hash}"

[phases]
build.script = '''
    if [[ -n "${{SLEEP_H:-}}" ]]; then
        echo "h sleeps on purpose"
        sleep 600
    fi
    if [[ -n "${{FAIL_H:-}}" ]]; then
        echo "h fails on purpose"
        {{{{state "ERR" "FAIL_H is set"}}}}
        exit 1
    fi
    mkdir /outputs
    echo "{{{{this.version}}}}" > /outputs/{{{{this.name}}}}-{{{{this.version}}}}.pkg
    {{{{state "OK"}}}}
'''
"""


def example_workspace(base: Path, butido_examples: Path, build_image: str) -> dict[str, Path]:
    repo = base / "repo"
    shutil.copytree(butido_examples / "repo", repo)
    h_hash = next(
        line.split('"')[1]
        for line in (repo / "h" / "pkg.toml").read_text().splitlines()
        if "hash.hash" in line
    )
    (repo / "h" / "pkg.toml").write_text(FAILING_H.format(hash=h_hash))
    stores = base / "stores"
    make_dirs(stores, ("staging", "releases", "logs"))
    overlay = base / "overlay.toml"
    overlay.write_text(
        overlay_toml(
            stores,
            source_cache=butido_examples / "sources",
            images=[(build_image, "bookworm")],
            endpoints={"testhostname": 2},
            allowed_env=("FAIL_H", "SLEEP_H"),
        )
    )
    return {"base": base, "repo": repo, "stores": stores, "overlay": overlay}


def butido_in_workspace(
    ws: dict[str, Path], *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``butido --repo <copy> ARGS`` with the workspace's overlay and settings (its
    ``airflow-butido.toml`` beside the stores), outside any Airflow home."""
    full = {
        **os.environ,
        **(env or {}),
        "BUTIDO_CONFIG": str(ws["overlay"]),
        "BUTIDO_SETTINGS": str(ws["base"] / "airflow-butido.toml"),
        "BUTIDO_PARSE_CACHE": str(ws["base"] / "parse-cache"),
        "XDG_CACHE_HOME": str(ws["base"] / "cache"),
    }
    full.pop("AIRFLOW_HOME", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "butido"), "--repo", str(ws["repo"]), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=900,
    )
