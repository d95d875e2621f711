"""HTML of the build-record view: plain server-rendered pages, every value escaped.

Small on purpose: tables and ``<pre>`` blocks styled to sit inside Airflow's UI (it shows
the view in an iframe from its navigation), no scripts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow_butido.web import urls

if TYPE_CHECKING:
    from airflow_butido.db.queries import JobDetail, ReleaseRow, SubmitDetail, SubmitRow

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a202c; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #e2e8f0; padding: 0.3rem 0.8rem; text-align: left; }
th { background: #f7fafc; }
pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: 0.8rem; overflow: auto;
      max-height: 40rem; }
.state { padding: 0.1rem 0.5rem; border-radius: 0.3rem; font-weight: 600; }
.state-success { background: #c6f6d5; } .state-failed { background: #fed7d7; }
.state-reused { background: #bee3f8; } .state-running { background: #fefcbf; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)} · butido</title><style>{_STYLE}</style></head><body>"
        f"<nav><a href='{urls.view('/')}'>Submits</a>"
        f"<a href='{urls.view('/releases')}'>Releases</a></nav>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def _a(href: str, text: str, *, target: str | None = None) -> str:
    extra = f" target='{target}'" if target else ""
    return f"<a href='{escape(href, quote=True)}'{extra}>{escape(text)}</a>"


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _state(state: str) -> str:
    return f"<span class='state state-{escape(state)}' id='state'>{escape(state)}</span>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f" id='{table_id}'" if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _airflow_link(dag_id: str | None, run_id: str | None) -> str:
    if not (dag_id and run_id):
        return ""
    return _a(urls.airflow_run(dag_id, run_id), f"{dag_id} / {run_id}", target="_top")


def submits(rows: Sequence[SubmitRow]) -> str:
    table = _table(
        ("submitted", "submit", "requested", "image", "commit"),
        (
            (
                escape(_time(r.time)),
                _a(urls.view(f"/submits/{r.uuid}"), r.uuid),
                escape(f"{r.package} {r.version}"),
                escape(r.image),
                escape(r.commit[:12] + (" (dirty)" if r.dirty else "")),
            )
            for r in rows
        ),
        table_id="submits",
    )
    return _page("Submits", table if rows else "<p>No submits recorded yet.</p>")


def submit(detail: SubmitDetail) -> str:
    s = detail.submit
    info = (
        "<dl>"
        f"<dt>requested</dt><dd>{escape(f'{s.package} {s.version}')}</dd>"
        f"<dt>image</dt><dd>{escape(s.image)}</dd>"
        f"<dt>submitted</dt><dd>{escape(_time(s.time))}</dd>"
        f"<dt>commit</dt><dd>{escape(s.commit)}</dd>"
        f"<dt>Airflow run</dt><dd>{_airflow_link(detail.dag_id, detail.run_id)}</dd>"
        f"<dt>env</dt><dd>{escape(' '.join(f'{k}={v}' for k, v in detail.env))}</dd>"
        "</dl>"
    )
    jobs = _table(
        ("package", "state", "endpoint", "job", "artifact"),
        (
            (
                escape(f"{j.package} {j.version}"),
                _state(j.state),
                escape(j.endpoint),
                _a(urls.job(j.job_uuid), j.job_uuid),
                _a(_artifact_url(j.job_uuid, j.artifact), j.artifact) if j.artifact else "",
            )
            for j in detail.jobs
        ),
        table_id="jobs",
    )
    return _page(f"Submit {s.uuid}", info + "<h2>Jobs</h2>" + jobs)


def _artifact_url(job_uuid: str, path: str) -> str:
    return urls.view(f"/jobs/{quote(job_uuid, safe='')}/artifacts/{quote(path)}")


def job(detail: JobDetail, releases: Sequence[ReleaseRow]) -> str:
    d = detail
    reused = ""
    if d.reused_from:
        reused = (
            f"<dt>reused from</dt><dd>{_a(urls.job(d.reused_from), d.reused_from)} "
            f"({_a(urls.job_run(d.reused_from), 'the run that built it', target='_top')}): "
            f"{escape(d.reuse_reason or '')}</dd>"
        )
    info = (
        "<dl>"
        f"<dt>state</dt><dd>{_state(d.state)}</dd>"
        f"<dt>submit</dt><dd>{_a(urls.view(f'/submits/{d.submit_uuid}'), d.submit_uuid)}</dd>"
        f"<dt>image</dt><dd>{escape(d.image)}</dd>"
        f"<dt>endpoint</dt><dd>{escape(d.endpoint)}</dd>"
        f"<dt>started</dt><dd>{escape(_time(d.started_at))}</dd>"
        f"<dt>finished</dt><dd>{escape(_time(d.finished_at))}</dd>"
        f"<dt>exit status</dt><dd>{'' if d.exit_status is None else d.exit_status}</dd>"
        f"<dt>Airflow run</dt><dd>{_airflow_link(d.dag_id, d.run_id)}"
        f"{escape(f' (try {d.try_number})' if d.try_number else '')}</dd>"
        f"{reused}"
        f"<dt>env</dt><dd>{escape(' '.join(f'{k}={v}' for k, v in d.env))}</dd>"
        f"<dt>build key</dt><dd><code>{escape(d.build_key or '')}</code></dd>"
        "</dl>"
    )
    artifacts = _table(
        ("artifact", "size", "sha256"),
        (
            (
                _a(_artifact_url(d.uuid, path), path),
                escape(str(size if size is not None else "")),
                f"<code>{escape(sha or '')}</code>",
            )
            for path, sha, size in d.artifacts
        ),
        table_id="artifacts",
    )
    released = _table(
        ("store", "artifact", "released"),
        ((escape(r.store), escape(r.path), escape(_time(r.date))) for r in releases),
        table_id="releases",
    )
    return _page(
        f"{d.package} {d.version} · job {d.uuid}",
        info
        + "<h2 id='artifacts-heading'>Artifacts</h2>"
        + (artifacts if d.artifacts else "<p>No artifacts.</p>")
        + ("<h2>Releases</h2>" + released if releases else "")
        + f"<h2>Script</h2><p>{_a(urls.view(f'/jobs/{d.uuid}/script'), 'plain text')}</p>"
        + f"<pre id='script'>{escape(d.script or '')}</pre>"
        + f"<h2>Log</h2><p>{_a(urls.view(f'/jobs/{d.uuid}/log'), 'plain text')}</p>"
        + f"<pre id='log'>{escape(d.log or '')}</pre>",
    )


def releases(rows: Sequence[ReleaseRow]) -> str:
    table = _table(
        ("released", "package", "store", "artifact", "sha256"),
        (
            (
                escape(_time(r.date)),
                escape(f"{r.package} {r.version}"),
                escape(r.store),
                escape(r.path),
                f"<code>{escape(r.sha256 or '')}</code>",
            )
            for r in rows
        ),
        table_id="releases",
    )
    return _page("Releases", table if rows else "<p>No releases yet.</p>")


def error(status_code: int, message: str, *, login_url: str) -> str:
    login = f"<p>{_a(login_url, 'Log in to Airflow')}</p>" if status_code == 401 else ""
    return _page(f"{status_code}", f"<p>{escape(message)}</p>{login}")
