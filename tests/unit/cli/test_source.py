from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.unit.cli.runner import butido_fixture
from tests.unit.recipes.repo_factory import leaf, write_repo


def _src(content: bytes, *, manual: bool = False) -> str:
    digest = hashlib.sha1(content).hexdigest()
    extra = "download_manually = true\n" if manual else ""
    return (
        f"[sources.src]\nurl = 'https://example.com/{digest[:6]}'\n"
        f"hash.type = 'sha1'\nhash.hash = '{digest}'\n{extra}"
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = write_repo(
        tmp_path / "repo",
        {
            "a/pkg.toml": leaf("a", "1") + _src(b"a\n"),
            "b/pkg.toml": leaf("b", "1") + _src(b"b\n"),
            "c/pkg.toml": leaf("c", "1") + _src(b"c\n"),
        },
    )
    cache = root / "sources"
    (cache / "a-1").mkdir(parents=True)
    (cache / "a-1" / "src.source").write_bytes(b"a\n")
    (cache / "b-1").mkdir()
    (cache / "b-1" / "src.source").write_bytes(b"corrupt\n")
    return root


run = butido_fixture()


def test_source_url_and_of(run, repo: Path) -> None:
    code, out, _ = run("--repo", repo, "source", "url", "a")
    digest = hashlib.sha1(b"a\n").hexdigest()
    assert out == f"a\t1\tsrc\thttps://example.com/{digest[:6]}\n"
    code, out, _ = run("--repo", repo, "source", "of", "--matching", "^[bc]$", "--json")
    rows = json.loads(out)
    assert [r["path"] for r in rows] == [
        str(repo / "sources/b-1/src.source"),
        str(repo / "sources/c-1/src.source"),
    ]


def test_source_list_missing(run, repo: Path) -> None:
    code, out, _ = run("--repo", repo, "source", "list-missing")
    assert (code, out) == (0, f"c\t1\tsrc\t{repo / 'sources/c-1/src.source'}\n")


def test_source_verify(run, repo: Path) -> None:
    assert run("--repo", repo, "source", "verify", "a")[0] == 0
    code, out, err = run("--repo", repo, "source", "verify")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("a\t1\tsrc\tok")
    assert lines[1].startswith("b\t1\tsrc\tFAILED") and "Hash mismatch" in lines[1]
    assert lines[2].startswith("c\t1\tsrc\tFAILED")
    assert "error: 2 of 3 sources failed verification" in err


def test_source_name_and_matching_are_exclusive(run, repo: Path) -> None:
    code, _, err = run("--repo", repo, "source", "url", "a", "--matching", "b")
    assert code == 1 and "either NAME or --matching" in err


def test_source_download_passes_the_selection(run, repo: Path, monkeypatch) -> None:
    import airflow_butido.sources as sources

    seen = {}

    def fake(cache_root, items, *, force, timeout, on_event, **_limits):
        seen.update(
            cache=cache_root,
            items=[(p.label, s.name) for p, s in items],
            force=force,
            timeout=timeout,
        )
        return [sources.DownloadResult("c 1", "src", cache_root / "c-1/src.source", False, "boom")]

    monkeypatch.setattr(sources, "download_sources", fake)
    code, out, err = run("--repo", repo, "source", "download", "c", "--force", "--timeout", "5")
    assert seen == {
        "cache": repo / "sources",
        "items": [("c 1", "src")],
        "force": True,
        "timeout": 5.0,
    }
    assert code == 1 and "FAILED" in out and "1 of 1 downloads failed" in err


def test_source_verify_on_the_butido_examples(
    run, butido_examples: Path, tmp_path: Path, monkeypatch
) -> None:
    overlay = tmp_path / "overlay.toml"
    overlay.write_text(f'source_cache = "{butido_examples / "sources"}"\n')
    monkeypatch.setenv("BUTIDO_CONFIG", str(overlay))
    code, out, err = run("--repo", butido_examples / "repo", "source", "verify")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 29 and all(line.split("\t")[3] == "ok" for line in lines)
    assert run("--repo", butido_examples / "repo", "source", "list-missing") == (0, "", "")
