"""Build keys: which input changes make a different key, and which do not."""

from __future__ import annotations

import pytest

from airflow_butido.build_key import BuildKeyInputs, build_key, compare_inputs

BASE = BuildKeyInputs(
    script="#!/bin/bash\nmake\n",
    phases=("sourcecheck", "build"),
    image_digest="sha256:" + "1" * 64,
    environment={"A": "1", "B": "2"},
    source_hashes={"src": "sha1:abc", "extra": "sha256:def"},
    patch_hashes={"fix.patch": "9" * 64},
    dependency_artifacts=("a" * 64, "b" * 64),
)


def changed(**kw: object) -> BuildKeyInputs:
    values = {f: getattr(BASE, f) for f in BASE.__dataclass_fields__}
    values.update(kw)
    return BuildKeyInputs(**values)  # type: ignore[arg-type]


SAME = {
    "environment order": changed(environment={"B": "2", "A": "1"}),
    "source order": changed(source_hashes={"extra": "sha256:def", "src": "sha1:abc"}),
    "dependency artifact order": changed(dependency_artifacts=("b" * 64, "a" * 64)),
    "phases as list": changed(phases=["sourcecheck", "build"]),
}
DIFFERENT = {
    "script": changed(script="#!/bin/bash\nmake -j2\n"),
    "script whitespace": changed(script="#!/bin/bash\nmake\n\n"),
    "phase order": changed(phases=("build", "sourcecheck")),
    "phase removed": changed(phases=("build",)),
    "image digest": changed(image_digest="sha256:" + "2" * 64),
    "env value": changed(environment={"A": "1", "B": "3"}),
    "env added": changed(environment={"A": "1", "B": "2", "C": ""}),
    "source hash": changed(source_hashes={"src": "sha1:abd", "extra": "sha256:def"}),
    "source renamed": changed(source_hashes={"src2": "sha1:abc", "extra": "sha256:def"}),
    "patch content": changed(patch_hashes={"fix.patch": "8" * 64}),
    "patch added": changed(patch_hashes={"fix.patch": "9" * 64, "more.patch": "7" * 64}),
    "dependency artifact": changed(dependency_artifacts=("a" * 64, "c" * 64)),
    "dependency artifact dropped": changed(dependency_artifacts=("a" * 64,)),
}


@pytest.mark.parametrize("name", sorted(SAME))
def test_inputs_that_differ_only_in_order_have_the_same_key(name: str) -> None:
    assert build_key(SAME[name]) == build_key(BASE)


@pytest.mark.parametrize("name", sorted(DIFFERENT))
def test_every_meaningful_input_changes_the_key(name: str) -> None:
    assert build_key(DIFFERENT[name]) != build_key(BASE)


def test_the_key_is_a_stable_sha256_hex() -> None:
    key = build_key(BASE)
    assert len(key) == 64 and int(key, 16) >= 0
    assert build_key(changed()) == key


def test_the_stored_inputs_hold_the_script_hash_not_the_script() -> None:
    stored = BASE.to_json()
    assert "make" not in str(stored)
    assert len(stored["script_sha256"]) == 64


@pytest.mark.parametrize(
    ("field", "new", "expected"),
    [
        ("script", "other", ["script: the rendered script differs"]),
        ("environment", {"A": "1"}, ["environment: B removed (was '2')"]),
        ("environment", {"A": "1", "B": "2", "Z": "z"}, ["environment: Z added ('z')"]),
        (
            "patch_hashes",
            {"fix.patch": "0"},
            [f"patch_hashes: fix.patch changed from '{'9' * 64}' to '0'"],
        ),
        ("dependency_artifacts", ("a" * 64,), [f"dependency_artifacts: {'b' * 64} removed"]),
        ("phases", ("build",), ["phases: changed from ['sourcecheck', 'build'] to ['build']"]),
        (
            "image_digest",
            "sha256:x",
            [f"image_digest: changed from 'sha256:{'1' * 64}' to 'sha256:x'"],
        ),
    ],
)
def test_compare_inputs_names_each_difference(field: str, new: object, expected: list[str]) -> None:
    assert compare_inputs(BASE.to_json(), changed(**{field: new}).to_json()) == expected


def test_compare_inputs_of_equal_inputs_is_empty() -> None:
    assert compare_inputs(BASE.to_json(), SAME["environment order"].to_json()) == []
