"""The plan of a run: run conf validation, task ids, selection, closure, conditions, checks."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from airflow_butido.plan import (
    Plan,
    PlanError,
    RunRequest,
    parse_run_conf,
    prepare_plan,
    resolve_plan,
    source_failures,
    task_ids_for,
)
from airflow_butido.recipes.repository import load_repository
from tests.unit._repos import IMAGE_ONE, IMAGE_TWO, write_repo

EXAMPLE_IMAGE = "debian:bullseye"


@pytest.fixture(scope="module")
def example(example_repo: Path):
    return load_repository(example_repo)


# --- run conf ---------------------------------------------------------------------------


def test_run_conf_defaults_to_everything_without_env():
    assert parse_run_conf(None) == RunRequest((), (), False)
    assert parse_run_conf({"packages": [], "env": {}}) == RunRequest()


def test_run_conf_keeps_packages_and_sorts_env():
    request = parse_run_conf(
        {"packages": ["a", "s 19.1"], "env": {"Z": "1", "A": "x"}, "force_rebuild": True}
    )
    assert request.packages == ("a", "s 19.1")
    assert request.env == (("A", "x"), ("Z", "1"))
    assert request.force_rebuild is True
    assert parse_run_conf(request.to_conf()) == request


def test_run_conf_carries_butidos_build_flags():
    request = parse_run_conf(
        {"lint": False, "verify": False, "shebang": "#!/bin/sh", "staging_dir": "/s/x"}
    )
    assert (request.lint, request.verify) == (False, False)
    assert (request.shebang, request.staging_dir) == ("#!/bin/sh", "/s/x")
    assert parse_run_conf(request.to_conf()) == request
    assert parse_run_conf({"shebang": None, "staging_dir": ""}) == RunRequest()
    assert RunRequest().to_conf() == {"packages": [], "env": {}, "force_rebuild": False}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"packages": "a b c"}, None),  # a single string is one package spec
        ({"packages": [1]}, '"packages" must be a list'),
        ({"env": ["A=1"]}, '"env" must be an object'),
        ({"env": {"1A": "x"}}, "invalid variable name '1A'"),
        ({"force_rebuild": "yes"}, '"force_rebuild" must be true or false'),
        ({"pakages": ["a"]}, "unknown key(s) pakages"),
        ({"lint": "no"}, '"lint" must be true or false'),
        ({"verify": 0}, '"verify" must be true or false'),
        ({"shebang": ["#!/bin/sh"]}, '"shebang" must be one line of text'),
        ({"shebang": "#!/bin/sh\nrm -rf /"}, '"shebang" must be one line of text'),
        ({"staging_dir": 7}, '"staging_dir" must be one line of text'),
    ],
)
def test_run_conf_rejects_malformed_values(conf, message):
    if message is None:
        assert parse_run_conf(conf).packages == ("a b c",)
        return
    with pytest.raises(PlanError, match=None) as info:
        parse_run_conf(conf)
    assert message in str(info.value)


# --- task ids -----------------------------------------------------------------------------


def test_task_ids_are_name_dash_version():
    assert task_ids_for([("a", "1"), ("s", "19.0")]) == {("a", "1"): "a-1", ("s", "19.0"): "s-19.0"}


def test_task_ids_replace_characters_airflow_rejects():
    ids = task_ids_for([("gcc", "13.2+deb1~2:x")])
    assert ids[("gcc", "13.2+deb1~2:x")] == "gcc-13.2_deb1_2_x"


def test_colliding_task_ids_both_get_a_hash_suffix():
    ids = task_ids_for([("a-b", "1"), ("a", "b-1"), ("c", "1")])
    assert ids[("c", "1")] == "c-1"
    assert ids[("a-b", "1")] != ids[("a", "b-1")]
    assert ids[("a-b", "1")].startswith("a-b-1-") and ids[("a", "b-1")].startswith("a-b-1-")


# --- selection and closure ------------------------------------------------------------------


def test_plan_of_a_holds_the_whole_example_graph(example):
    plan = resolve_plan(example, EXAMPLE_IMAGE, RunRequest(("a",)), submit_uuid="u1")
    assert plan.requested == ("a-1",)
    assert len(plan.packages) == 29
    assert plan.packages[-1] == "a-1"  # dependencies first
    assert len(plan.dependencies_of("a-1")) == 28
    f_deps = {"l-12", "m-13", "u-21"}
    assert plan.dependencies_of("f-6") == tuple(t for t in plan.packages if t in f_deps)
    assert plan.dependencies_of("z-26") == ()
    assert ("a-1", "b-2") in plan.edges and ("y-25", "z-26") in plan.edges
    assert Plan.from_json(plan.to_json()) == plan
    # all at once (deciding reuse), the same lists in the same order
    assert plan.all_dependencies() == {t: plan.dependencies_of(t) for t in plan.packages}


def test_plan_takes_the_short_image_name(example):
    plan = resolve_plan(example, "deb11", RunRequest(("h",)))
    assert plan.image == EXAMPLE_IMAGE
    assert plan.packages == ("h-8",)
    assert plan.dependencies_of("h-8") == () and plan.edges == ()


def test_name_with_several_versions_lists_them(example):
    with pytest.raises(PlanError) as info:
        resolve_plan(example, EXAMPLE_IMAGE, RunRequest(("s",)))
    assert "19.0, 19.1, 19.2, 19.3" in str(info.value)


def test_exact_version_and_unknown_names(example):
    plan = resolve_plan(example, EXAMPLE_IMAGE, RunRequest(("s 19.2",)))
    assert plan.packages == ("s-19.2",)
    with pytest.raises(PlanError) as info:
        resolve_plan(example, EXAMPLE_IMAGE, RunRequest(("nope", "s 20")))
    assert "'nope' not found" in str(info.value)
    assert "s 20 not found; versions of s: 19.0" in str(info.value)


def test_unknown_image_is_refused(example):
    from airflow_butido.errors import ButidoError

    with pytest.raises(ButidoError):
        resolve_plan(example, "fedora:40", RunRequest(("a",)))


def test_empty_request_builds_defaults_or_every_package(example):
    everything = resolve_plan(example, EXAMPLE_IMAGE, RunRequest())
    assert len(everything.packages) == 29
    defaults = resolve_plan(example, EXAMPLE_IMAGE, RunRequest(), default_packages=("c",))
    assert defaults.requested == ("c-3",)
    assert "a-1" not in defaults.packages and "m-13" in defaults.packages


# --- conditions ------------------------------------------------------------------------------


@pytest.fixture
def conditional(tmp_path: Path):
    root = write_repo(
        tmp_path / "repo",
        {
            "app/1": """[dependencies]
runtime = [
  { name = "tool =1", condition = { has_env = "WITH_TOOL" } },
  { name = "gfx =1", condition = { in_image = "registry.local/one:1" } },
  { name = "lib =1", condition = { env_eq = { FLAVOR = "fat" } } },
]""",
            "tool/1": "",
            "gfx/1": "",
            "lib/1": "",
        },
    )
    return load_repository(root)


def test_env_conditions_decide_per_run(conditional):
    bare = resolve_plan(conditional, IMAGE_ONE, RunRequest(("app",)))
    assert set(bare.packages) == {"app-1", "gfx-1"}
    full = resolve_plan(
        conditional,
        IMAGE_ONE,
        RunRequest(("app",), (("FLAVOR", "fat"), ("WITH_TOOL", "1"))),
    )
    assert set(full.packages) == {"app-1", "gfx-1", "tool-1", "lib-1"}
    assert set(full.dependencies_of("app-1")) == {"gfx-1", "tool-1", "lib-1"}
    thin = resolve_plan(conditional, IMAGE_ONE, RunRequest(("app",), (("FLAVOR", "thin"),)))
    assert "lib-1" not in thin.packages


def test_in_image_condition_follows_the_image(conditional):
    plan = resolve_plan(conditional, IMAGE_TWO, RunRequest(("app",)))
    assert plan.packages == ("app-1",)
    assert plan.edges == ()


# --- checks ---------------------------------------------------------------------------------


def test_allowed_and_denied_images_fail_only_those_packages(tmp_path: Path):
    root = write_repo(
        tmp_path / "repo",
        {
            "app/1": (
                'allowed_images = ["registry.local/one:1"]\n[dependencies]\nruntime = ["dep =1"]'
            ),
            "dep/1": 'denied_images = ["registry.local/one:1"]',
        },
    )
    repo = load_repository(root)
    plan = resolve_plan(repo, IMAGE_ONE, RunRequest(("app",)))
    assert plan.failures == {
        "dep-1": "dep/1/pkg.toml: denied_images: dep 1 denies registry.local/one:1"
    }
    assert plan.failed_because("app-1") == ["dep-1"]
    plan = resolve_plan(repo, IMAGE_TWO, RunRequest(("app",)))
    assert list(plan.failures) == ["app-1"]
    assert (
        "allowed_images: app 1 may not be built in registry.local/two:2" in plan.failures["app-1"]
    )
    # the nightly run on image two leaves out what the image may not build
    assert resolve_plan(repo, IMAGE_TWO, RunRequest()).packages == ("dep-1",)


def test_env_names_of_the_run_fail_the_plan_those_of_a_package_fail_it(tmp_path: Path):
    root = write_repo(
        tmp_path / "repo",
        {"app/1": '[environment]\nCFLAGS = "-O2"\nSECRET = "x"'},
        check_env_names=True,
        allowed_env=("CFLAGS", "DEBUG"),
    )
    repo = load_repository(root)
    with pytest.raises(PlanError) as info:
        resolve_plan(
            repo, IMAGE_ONE, RunRequest(("app", "nosuch"), (("DEBUG", "1"), ("NOPE", "1")))
        )
    text = str(info.value)
    assert "environment variable NOPE is not allowed" in text
    assert "package 'nosuch' not found" in text  # every problem of the conf at once
    assert "DEBUG" not in text
    plan = resolve_plan(repo, IMAGE_ONE, RunRequest(("app",), (("DEBUG", "1"),)))
    assert (
        "app/1/pkg.toml: environment.SECRET: not in containers.allowed_env"
        in plan.failures["app-1"]
    )


def test_sources_are_verified_against_the_cache(example, butido_examples: Path, tmp_path: Path):
    cache = tmp_path / "sources"
    shutil.copytree(butido_examples / "sources", cache)
    repo = dataclasses.replace(
        example, config=dataclasses.replace(example.config, source_cache=cache)
    )
    plan = resolve_plan(repo, EXAMPLE_IMAGE, RunRequest(("c",)))
    assert source_failures(repo, plan) == {}
    (cache / "g-7" / "src.source").write_text("tampered\n")
    (cache / "h-8" / "src.source").unlink()
    failures = source_failures(repo, plan)
    assert sorted(failures) == ["g-7", "h-8"]
    assert failures["g-7"].startswith("g 7: source src:") and "Hash mismatch" in failures["g-7"]
    assert failures["h-8"].startswith("h 8: source src:") and "missing" in failures["h-8"]


def test_no_verify_skips_the_source_check(example, butido_examples: Path, tmp_path: Path):
    cache = tmp_path / "sources"
    shutil.copytree(butido_examples / "sources", cache)
    (cache / "g-7" / "src.source").write_text("tampered\n")
    repo = dataclasses.replace(
        example, config=dataclasses.replace(example.config, source_cache=cache)
    )
    assert "g-7" in prepare_plan(repo, EXAMPLE_IMAGE, RunRequest(("c",))).failures
    unverified = prepare_plan(repo, EXAMPLE_IMAGE, RunRequest(("c",), verify=False))
    assert unverified.failures == {} and unverified.verify is False


def linted_repo(example, tmp_path: Path, body: str):
    linter = tmp_path / "lint.sh"
    linter.write_text(f"#!/bin/sh\n{body}\n")
    linter.chmod(0o755)
    return dataclasses.replace(
        example, config=dataclasses.replace(example.config, script_linter=linter)
    )


def test_the_linter_sees_every_script_of_the_plan_with_its_shebang(example, tmp_path: Path):
    seen = tmp_path / "seen"
    repo = linted_repo(example, tmp_path, f"head -n1 >> {seen}")
    plan = prepare_plan(repo, EXAMPLE_IMAGE, RunRequest(("c",), shebang="#!/bin/sh"))
    assert seen.read_text().splitlines() == ["#!/bin/sh"] * len(plan.packages)
    assert plan.shebang == "#!/bin/sh" and Plan.from_json(plan.to_json()) == plan


def test_a_lint_failure_stops_the_plan_naming_package_and_output(example, tmp_path: Path):
    repo = linted_repo(
        example, tmp_path, "grep -q 'phase build' && echo 'no builds here' && exit 4"
    )
    request = RunRequest(("c",))
    with pytest.raises(PlanError) as info:
        prepare_plan(repo, EXAMPLE_IMAGE, request)
    text = str(info.value)
    assert "lint failed" in text and "--no-lint" in text
    assert "c 3 (" in text and "no builds here" in text
    assert prepare_plan(repo, EXAMPLE_IMAGE, dataclasses.replace(request, lint=False))
