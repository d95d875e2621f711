"""DAG shape: tasks, edges, trigger rules, per-image conditions, parsing context, DAG file."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from airflow_butido.dag_factory import create_dags
from airflow_butido.graph import resolve
from airflow_butido.plan import task_ids_for
from airflow_butido.recipes.repository import load_repository
from tests.unit._repos import write_repo

ROOT = Path(__file__).resolve().parents[2]

# reference 1.9: the example repository's dependency edges (dependent -> dependencies)
EXAMPLE_EDGES = {
    "a-1": {"b-2", "c-3"},
    "b-2": {"d-4", "e-5", "f-6"},
    "c-3": {"g-7", "h-8", "i-9"},
    "d-4": {"j-10"},
    "e-5": {"k-11"},
    "f-6": {"l-12", "m-13"},
    "g-7": {"m-13", "n-14", "o-15", "p-16"},
    "i-9": {"q-17", "r-18"},
    "j-10": {"s-19.0", "s-19.1", "s-19.2", "s-19.3", "t-20"},
    "k-11": {"u-21"},
    "l-12": {"u-21"},
    "o-15": {"x-24"},
    "p-16": {"x-24"},
    "q-17": {"v-22"},
    "v-22": {"w-23"},
    "w-23": {"x-24"},
    "x-24": {"y-25"},
    "y-25": {"z-26"},
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BUTIDO_PARSE_CACHE", str(tmp_path / "parse-cache"))
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", raising=False)
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", raising=False)


@pytest.fixture
def example_dag(example_repo: Path):
    dags = create_dags(example_repo)
    assert list(dags) == ["butido_deb11"]
    return dags["butido_deb11"]


def package_tasks(dag):
    return {t.task_id: t for t in dag.tasks if t.task_id not in ("plan", "report")}


def test_one_task_per_package_plus_plan_and_report(example_dag):
    assert len(package_tasks(example_dag)) == 29
    assert {"plan", "report", "a-1", "s-19.0", "s-19.3", "z-26"} <= set(example_dag.task_ids)


def test_edges_follow_the_dependency_graph(example_dag):
    """Dependency edges, plus the plan before every package task and the report after
    every one: the report never starts while a branch is still building."""
    packages = package_tasks(example_dag)
    for task_id, task in packages.items():
        expected = EXAMPLE_EDGES.get(task_id, set()) | {"plan"}
        assert set(task.upstream_task_ids) == expected, task_id
        assert "report" in task.downstream_task_ids
    assert example_dag.get_task("report").upstream_task_ids == set(packages)
    assert example_dag.get_task("plan").downstream_task_ids == set(packages)
    assert example_dag.get_task("a-1").downstream_task_ids == {"report"}
    assert example_dag.get_task("m-13").downstream_task_ids == {"f-6", "g-7", "report"}


def test_relations_are_consistent_in_both_directions(example_dag):
    for task in example_dag.tasks:
        for up in task.upstream_task_ids:
            assert task.task_id in example_dag.get_task(up).downstream_task_ids


def test_trigger_rules(example_dag):
    rules = {t.trigger_rule.value for t in package_tasks(example_dag).values()}
    assert rules == {"none_failed"}
    assert example_dag.get_task("report").trigger_rule.value == "all_done"
    assert example_dag.get_task("plan").trigger_rule.value == "all_success"


def test_package_tasks_know_their_package_and_image(example_dag):
    task = example_dag.get_task("s-19.2")
    assert (task.package_name, task.package_version) == ("s", "19.2")
    assert task.image == "debian:bullseye"


def test_params_form_offers_packages_env_and_force_rebuild(example_dag):
    params = example_dag.params
    assert params["packages"] == [] and params["env"] == {} and params["force_rebuild"] is False
    schema = params.get_param("packages").schema
    assert schema["type"] == ["array", "null"]  # "null": the form does not require it
    assert params.get_param("env").schema["type"] == ["object", "null"]
    assert "a" in schema["examples"] and "s 19.3" in schema["examples"]
    assert example_dag.schedule is None or str(example_dag.schedule) in ("None", "")


def test_form_help_and_dag_docs_say_the_same_about_an_empty_packages(example_repo: Path):
    for default, meaning in ([], "every package the image may build"), (["c"], "c"):
        dag = create_dags(example_repo, default_packages=default)["butido_deb11"]
        help_text = dag.params.get_param("packages").description
        assert f"An empty Packages builds {meaning}." in help_text
        assert f"An empty Packages builds {meaning if not default else '`c`'}." in dag.doc_md


def test_env_field_lists_the_allowed_names_and_refuses_others(tmp_path: Path):
    from airflow.sdk.definitions.param import ParamValidationError

    root = write_repo(
        tmp_path / "repo", {"app/1": ""}, check_env_names=True, allowed_env=("FOO", "BAR")
    )
    dag = create_dags(root)["butido_one"]
    env = dag.params.get_param("env")
    assert env.schema["propertyNames"] == {"enum": ["BAR", "FOO"]}
    assert "Allowed names: BAR, FOO." in env.description
    assert env.resolve({"FOO": "1"}) == {"FOO": "1"} and env.resolve(None) is None
    with pytest.raises(ParamValidationError):
        env.resolve({"NOPE": "1"})
    open_dag = create_dags(write_repo(tmp_path / "open", {"app/1": ""}))["butido_one"]
    assert "propertyNames" not in open_dag.params.get_param("env").schema


def test_package_tasks_are_named_and_documented_from_their_recipes(tmp_path: Path):
    root = write_repo(
        tmp_path / "repo",
        {
            "lib/1": "",
            "app/2.1": """patches = ["fix.patch"]
[meta]
description = "The app."
[sources.src]
url = "https://example.com/app.tar.gz"
hash.hash = "0000000000000000000000000000000000000000"
hash.type = "sha1"
[dependencies]
build = ["lib =1"]
[environment]
MODE = "fast"
""",
        },
    )
    (root / "app" / "2.1" / "fix.patch").write_text("")
    dag = create_dags(root)["butido_one"]
    task = dag.get_task("app-2.1")
    assert task.task_display_name == "app 2.1"
    doc = task.doc_md
    assert doc.startswith("### app 2.1") and "The app." in doc
    assert "<https://example.com/app.tar.gz>" in doc and "fix.patch" in doc
    assert "build dependency `lib 1`" in doc and "`MODE=fast`" in doc
    assert dag.description == "butido packages of repo, built in registry.local/one:1"
    assert "registry.local/one:1" in dag.tags


def test_dag_arguments_and_prefix(example_repo: Path):
    dags = create_dags(
        example_repo, dag_id_prefix="nightly_", schedule="@daily", tags=["ci"], max_active_runs=2
    )
    dag = dags["nightly_deb11"]
    assert {"butido", "ci"} <= set(dag.tags)
    assert dag.max_active_runs == 2
    assert dag.schedule == "@daily"
    assert dag.get_task("plan").default_packages == ()
    picked = create_dags(example_repo, default_packages=["c"])["butido_deb11"]
    assert picked.get_task("plan").default_packages == ("c",)


def test_airflow_settings_of_the_repository(tmp_path: Path):
    root = write_repo(tmp_path / "repo", {"app/1": "", "lib/1": ""})
    (root / "airflow-butido.toml").write_text(
        """[airflow]
dag_id_prefix = "pkgs_"
schedule = "@daily"
tags = ["nightly"]
default_packages = ["lib"]
max_active_runs = 1
"""
    )
    dags = create_dags(root)
    assert set(dags) == {"pkgs_one", "pkgs_two"}
    dag = dags["pkgs_one"]
    assert dag.max_active_runs == 1 and "nightly" in dag.tags
    assert dag.get_task("plan").default_packages == ("lib",)
    assert "`lib`" in dag.doc_md
    assert create_dags(root, dag_id_prefix="x_", default_packages=["app"])["x_one"].get_task(
        "plan"
    ).default_packages == ("app",)


@pytest.fixture
def two_image_repo(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path / "repo",
        {
            "app/1": """[dependencies]
runtime = [
  "base =1",
  { name = "gfx =1", condition = { in_image = "registry.local/one:1" } },
  { name = "tool =1", condition = { has_env = "WITH_TOOL" } },
]""",
            "base/1": "",
            "gfx/1": "",
            "tool/1": "",
        },
    )


def test_in_image_resolved_per_image_env_edges_kept(two_image_repo: Path):
    dags = create_dags(two_image_repo)
    assert set(dags) == {"butido_one", "butido_two"}
    one, two = dags["butido_one"].get_task("app-1"), dags["butido_two"].get_task("app-1")
    assert one.upstream_task_ids == {"base-1", "gfx-1", "tool-1", "plan"}
    assert two.upstream_task_ids == {"base-1", "tool-1", "plan"}
    # gfx is still a task in image two (every package is), just without the edge
    assert dags["butido_two"].get_task("gfx-1").upstream_task_ids == {"plan"}
    assert dags["butido_two"].get_task("gfx-1").downstream_task_ids == {"report"}


def test_images_argument_selects_dags(two_image_repo: Path):
    assert list(create_dags(two_image_repo, images=["two"])) == ["butido_two"]


def test_task_process_builds_only_its_task(two_image_repo: Path, monkeypatch):
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "butido_two")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "app-1")
    dags = create_dags(two_image_repo)
    assert list(dags) == ["butido_two"]
    assert dags["butido_two"].task_ids == ["app-1"]
    assert dags["butido_two"].params["packages"] == []


def test_graph_edges_match_the_resolver(example_repo: Path, example_dag):
    repo = load_repository(example_repo)
    graph = resolve(repo, list(repo), image="debian:bullseye", env=None)
    ids = task_ids_for(repo.packages)
    dag_edges = {
        (t.task_id, u)
        for t in package_tasks(example_dag).values()
        for u in t.upstream_task_ids
        if u != "plan"
    }
    assert dag_edges == {(ids[e.dependent], ids[e.dependency]) for e in graph.edges}


def _import_dag_file(monkeypatch, repo: Path):
    monkeypatch.setenv("BUTIDO_REPO", str(repo))
    spec = importlib.util.spec_from_file_location(
        "butido_build_dagfile", ROOT / "dags/butido_build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dag_file_exposes_the_dags(monkeypatch, example_repo: Path):
    module = _import_dag_file(monkeypatch, example_repo)
    assert module.butido_deb11.dag_id == "butido_deb11"


def test_broken_repository_fails_the_dag_file_with_the_recipe_errors(monkeypatch, tmp_path: Path):
    root = write_repo(tmp_path / "repo", {"app/1": 'colour = "red"', "lib/1": "version = 3"})
    (root / "lib" / "1" / "pkg.toml").write_text('name = "lib"\nversion = "1"\nsources = 3\n')
    with pytest.raises(Exception) as info:
        _import_dag_file(monkeypatch, root)
    text = str(info.value)
    assert "app/1/pkg.toml" in text and "colour" in text
    assert "lib/1/pkg.toml" in text and "sources" in text


def test_airflow_dagbag_lists_recipe_errors_as_import_errors(monkeypatch, tmp_path: Path):
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    root = write_repo(tmp_path / "repo", {"app/1": 'colour = "red"'})
    monkeypatch.setenv("BUTIDO_REPO", str(root))
    tracebacks = conf.get("core", "dagbag_import_error_tracebacks")
    try:
        dagbag = DagBag(dag_folder=str(ROOT / "dags"))
    finally:  # the DAG file turned tracebacks off in its process: this one
        conf.set("core", "dagbag_import_error_tracebacks", tracebacks)
    assert not dagbag.dags
    (message,) = dagbag.import_errors.values()
    assert "app/1/pkg.toml:3: colour: unknown key" in message  # file, line, key
    # the recipe errors themselves, not a traceback of the DAG factory's frames
    assert message.startswith(f"butido repository {root} does not load:\n"), message
    assert "Traceback" not in message and "dag_factory.py" not in message


def test_second_import_comes_from_the_parse_cache(two_image_repo: Path, monkeypatch):
    import airflow_butido.parse_cache as parse_cache

    calls = []
    real = parse_cache._load_fresh
    monkeypatch.setattr(
        parse_cache, "_load_fresh", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    first = parse_cache.load(two_image_repo)
    second = parse_cache.load(two_image_repo)
    assert len(calls) == 1
    assert second.content_hash == first.content_hash
    assert set(second.graphs) == {"registry.local/one:1", "registry.local/two:2"}
    assert len(second.repo) == 4


def test_parse_cache_sees_changed_and_restored_files(two_image_repo: Path, monkeypatch):
    import airflow_butido.parse_cache as parse_cache

    calls = []
    real = parse_cache._load_fresh
    monkeypatch.setattr(
        parse_cache, "_load_fresh", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    leaf = two_image_repo / "base" / "1" / "pkg.toml"
    original = leaf.read_text()
    first = parse_cache.load(two_image_repo)
    leaf.write_text(original + "\n[environment]\nX = '1'\n")
    changed = parse_cache.load(two_image_repo)
    assert changed.content_hash != first.content_hash
    assert changed.repo.get("base", "1").environment == (("X", "1"),)
    leaf.write_text(original)  # same content, new mtime: the content-hash pickle is reused
    os.utime(leaf, ns=(1, 1))
    restored = parse_cache.load(two_image_repo)
    assert restored.content_hash == first.content_hash
    assert len(calls) == 2
    assert restored.repo.get("base", "1").environment in (None, ())


def test_parse_cache_can_be_switched_off(two_image_repo: Path, monkeypatch, tmp_path: Path):
    import airflow_butido.parse_cache as parse_cache

    monkeypatch.setenv("BUTIDO_PARSE_CACHE", "off")
    loaded = parse_cache.load(two_image_repo)
    assert loaded.content_hash == ""
    assert not (tmp_path / "parse-cache").exists()
    assert "off" not in os.listdir(tmp_path)


@pytest.mark.skipif(sys.platform != "linux", reason="stat semantics")
def test_parse_cache_key_includes_config_overlay(two_image_repo: Path, monkeypatch, tmp_path):
    import airflow_butido.parse_cache as parse_cache

    first = parse_cache.load(two_image_repo)
    overlay = tmp_path / "overlay.toml"
    overlay.write_text('staging = "/tmp/other-staging"\n')
    monkeypatch.setenv("BUTIDO_CONFIG", str(overlay))
    second = parse_cache.load(two_image_repo)
    assert second.content_hash != first.content_hash
    assert str(second.repo.config.staging) == "/tmp/other-staging"
