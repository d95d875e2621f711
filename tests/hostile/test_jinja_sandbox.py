"""A recipe's Jinja2 script cannot run code on the host that lints, plans or builds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_butido.recipes import load_repository
from airflow_butido.scripts.handlebars import TemplateError
from airflow_butido.scripts.render import render_jinja2, render_script

from .conftest import CliRunner
from .repos import hostile_repo

# Each would touch the marker file if the template could reach Python internals.
ESCAPES = {
    "cycler": "{{ cycler.__init__.__globals__.os.system('touch MARK') }}",
    "joiner": "{{ joiner.__init__.__globals__.os.system('touch MARK') }}",
    "namespace": "{{ namespace.__init__.__globals__['os'].system('touch MARK') }}",
    "globals": "{{ phase.__globals__.__builtins__.__import__('os').system('touch MARK') }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "class_attr": "{{ this.__class__ }}",
    "format": "{{ '{0.__class__.__mro__}'.format(this) }}",
    "format_map": "{{ '{x.__class__}'.format_map({'x': this}) }}",
    "format_filter": "{{ '%s'|format(this.__class__) }}",
    "mutation": "{{ this.update({'name': 'x'}) }}",
}


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_known_escapes_are_template_errors(
    name: str, strict: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    template = ESCAPES[name].replace("MARK", str(tmp_path / "pwned"))
    with pytest.raises(TemplateError) as info:
        render_jinja2(template, {"name": "p"}, strict=strict, name="script of p 1")
    assert "script of p 1" in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_ordinary_templates_still_render() -> None:
    text = "{{ name }} {{ this.version }} {% for d in deps %}{{ d }},{% endfor %}{{ phase('x') }}"
    out = render_jinja2(text, {"name": "p", "version": "1", "deps": ["a", "b"]})
    assert out == "p 1 a,b,echo '#BUTIDO:PHASE:x'"


def _jinja_repo(tmp_path: Path, body: str) -> Path:
    leaf = f'name = "p"\nversion = "1"\n[phases.build]\nscript = """\n{body}\n"""\n'
    return hostile_repo(
        tmp_path,
        leaf,
        settings=f'script_dialect = "jinja2"\ndatabase_url = "sqlite:///{tmp_path}/db.sqlite"\n',
    )


def test_script_error_names_package_file_and_phase(tmp_path: Path) -> None:
    body = ESCAPES["cycler"].replace("MARK", str(tmp_path / "pwned"))
    repo = load_repository(_jinja_repo(tmp_path, "echo ok\n" + body))
    with pytest.raises(TemplateError) as info:
        render_script(repo.get("p", "1"), repo.config)
    text = str(info.value)
    assert "p/1/pkg.toml" in text and "phase build" in text and "unsafe" in text


@pytest.mark.parametrize(
    "command",
    [
        ("lint",),
        ("find-pkg", "p", "-s"),
        ("find-artifact", "p", "1", "-I", "img", "--image-digest", "sha256:" + "0" * 64),
    ],
    ids=lambda c: c[0],
)
def test_cli_reports_the_escape_as_an_error(
    command: tuple[str, ...], tmp_path: Path, butido: CliRunner
) -> None:
    marker = tmp_path / "pwned"
    body = ESCAPES["cycler"].replace("MARK", str(marker))
    repo = _jinja_repo(tmp_path, body)
    if command[0] == "find-artifact":
        assert butido("--repo", repo, "db", "setup")[0] == 0
    code, out, err = butido("--repo", repo, *command)
    assert code == 1, (out, err)
    assert "p/1/pkg.toml" in out + err and "unsafe" in out + err
    assert "Traceback" not in err
    assert not marker.exists()
