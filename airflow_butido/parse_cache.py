"""A cache of the loaded repository and its per-image graphs, keyed by the repository's content.

The DAG processor imports the DAG file again and again, and every task process imports it
once more; loading and resolving thousands of pkg.toml files each time would dominate. Two
levels keep an unchanged repository cheap:

1. a stat fingerprint (path, mtime_ns, size of every file, plus the settings that shape the
   configuration) is compared with the one recorded for this repository; when equal, the
   content hash recorded with it is trusted;
2. otherwise the files are read and hashed (much cheaper than parsing TOML); a pickle stored
   under that content hash is used when present (e.g. after a checkout touched mtimes),
   else the repository is loaded, resolved and pickled.

The cache directory is ``$BUTIDO_PARSE_CACHE``, else ``$XDG_CACHE_HOME/airflow-butido/parse``
(``~/.cache/...``). It is private to the user (created mode 0700): pickles are only read from
a directory the user owns that nobody else can write or read; any other directory is not
used (a warning says why) and the repository is loaded without the cache. The pickles hold
no database credentials: ``database_password`` and ``database_url`` are left out and taken
from the configuration files at every load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_butido.graph import PackageGraph
    from airflow_butido.recipes.layers import Listing
    from airflow_butido.recipes.repository import Repository

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_SETTINGS_FILES = ("config.toml", "airflow-butido.toml")


@dataclass(frozen=True)
class LoadedRepository:
    """A repository and, per build image (full name), its graph with env conditions open."""

    repo: Repository
    graphs: Mapping[str, PackageGraph]
    content_hash: str


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("BUTIDO_PARSE_CACHE"):
        return Path(environ["BUTIDO_PARSE_CACHE"])
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "airflow-butido" / "parse"


def load(
    repo_path: Path | str,
    *,
    environ: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> LoadedRepository:
    """The repository at ``repo_path`` with its graphs, from the cache when unchanged.

    Raises the loader's ``RecipeErrors`` / ``ResolveError`` for a broken repository (never
    cached, so a fix is seen at once).
    """
    environ = dict(os.environ if environ is None else environ)
    root = Path(repo_path).resolve()
    if not use_cache or environ.get("BUTIDO_PARSE_CACHE") == "off":
        return _load_fresh(root, environ, "")
    cache = cache_dir or default_cache_dir(environ)
    problem = _private_directory(cache)
    if problem is not None:
        log.warning("parse cache %s not used: %s; loading without cache", cache, problem)
        return _load_fresh(root, environ, "")

    from airflow_butido.recipes.layers import scan

    listing = scan(root)  # the loader reads what this walk found: one walk, not two
    inputs = _input_files(listing.files, environ)
    settings = _settings_key(environ)
    stat_fp = _stat_fingerprint(root, inputs, settings)
    recent = _recent.get(str(root))
    if recent is not None and recent[0] == stat_fp:
        _log_warnings(recent[1])
        return recent[1]  # loaded by this process already, nothing changed since
    index_path = cache / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.index"
    content_hash = _read_index(index_path, stat_fp)
    if content_hash is None and _deferred is not None and not _holds_pickles(cache):
        # Nothing stored yet, so no pickle can match: load now, hash the files later.
        loaded = _load_fresh(root, environ, "", listing)
        _deferred.append(lambda: _store_later(root, environ, index_path, stat_fp, loaded))
        _recent[str(root)] = (stat_fp, loaded)
        return loaded
    if content_hash is None:
        content_hash = _content_hash(root, inputs, settings)
        _write_atomic(index_path, json.dumps({"stat": stat_fp, "content": content_hash}).encode())

    pickle_path = cache / f"{content_hash}.pickle"
    cached = _read_pickle(pickle_path)
    if cached is not None:
        _log_warnings(cached)
        loaded = _with_secrets(cached, root, environ)
    else:
        loaded = _load_fresh(root, environ, content_hash, listing)
        if _deferred is None:
            dict(loaded.graphs)  # a repository that does not resolve raises here, uncached
            _write_pickle(pickle_path, loaded)
        else:
            _deferred.append(lambda: _write_pickle(pickle_path, loaded))
    _recent[str(root)] = (stat_fp, loaded)
    return loaded


def _log_warnings(loaded: LoadedRepository) -> None:
    """As a fresh load would: the accepted problems (unknown keys, links) are logged."""
    for warning in loaded.repo.warnings:
        logging.getLogger("airflow_butido.recipes.repository").warning("%s", warning)


# The last load of each repository in this process, by its stat fingerprint: a command or
# task loads the repository several times (plan, report, DAG), the files once.
_recent: dict[str, tuple[str, LoadedRepository]] = {}

# Pickles to write once the command's output is out (see defer_writes), or None: at once.
_deferred: list[Callable[[], None]] | None = None


def defer_writes() -> None:
    """From now on, a fresh load leaves writing its pickle to :func:`write_deferred`: a
    command prints its answer first (and the graphs nobody asked for are resolved then)."""
    global _deferred
    if _deferred is None:
        _deferred = []


def write_deferred(*, detach: bool = False) -> None:
    """Write the pickles left by :func:`defer_writes`. With ``detach`` (the ``butido``
    command, once its output is flushed), a forked child writes them and this process
    returns at once; the child holds none of the caller's pipes open."""
    global _deferred
    pending, _deferred = _deferred or [], None
    if not pending:
        return
    # Not after Airflow was imported (a build that ran its DAG): its fork handlers are for
    # its own workers; writing here after a long build costs nothing anyway.
    if detach and hasattr(os, "fork") and "airflow" not in sys.modules:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if os.fork() != 0:
            return
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            for write in pending:
                write()
        finally:
            os._exit(0)
    for write in pending:
        write()


def _holds_pickles(cache: Path) -> bool:
    with os.scandir(cache) as entries:
        return any(entry.name.endswith(".pickle") for entry in entries)


def _store_later(
    root: Path, environ: Mapping[str, str], index_path: Path, stat_fp: str, loaded: LoadedRepository
) -> None:
    """Hash the files of a repository loaded before hashing, index and store it: only when
    their stat fingerprint is still the one taken before the load (a file changed since
    could give a pickle of the old content under the new content's hash)."""
    from airflow_butido.recipes.layers import scan

    inputs = _input_files(scan(root).files, environ)
    settings = _settings_key(environ)
    if _stat_fingerprint(root, inputs, settings) != stat_fp:
        return
    content_hash = _content_hash(root, inputs, settings)
    _write_pickle(
        index_path.parent / f"{content_hash}.pickle", replace(loaded, content_hash=content_hash)
    )
    _write_atomic(index_path, json.dumps({"stat": stat_fp, "content": content_hash}).encode())


def _write_pickle(path: Path, loaded: LoadedRepository) -> None:
    """Store ``loaded`` (every image's graph resolved, no credentials) under its content
    hash; a repository whose graphs do not resolve is not stored."""
    import pickle

    from airflow_butido.errors import ResolveError

    try:
        stored = _without_secrets(loaded)
        data = pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL)
        _write_atomic(path, data)
    except ResolveError:
        return
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
        log.warning("could not write the parse cache %s: %s", path, exc)


def _private_directory(path: Path) -> str | None:
    """Create ``path`` mode 0700, or check that an existing one is the user's alone.

    A pickle is code: one read from a directory others can write runs their code.
    Returns why the directory must not be used, or None.
    """
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"mode {stat.S_IMODE(st.st_mode):04o} lets others in; run chmod 700 {path}"
    return None


def _without_secrets(loaded: LoadedRepository) -> LoadedRepository:
    """The same, its configuration without credentials: what goes into a pickle."""
    config = replace(loaded.repo.config, database_password=None, database_url=None)
    return replace(loaded, repo=replace(loaded.repo, config=config))


def _with_secrets(
    cached: LoadedRepository, root: Path, environ: Mapping[str, str]
) -> LoadedRepository:
    """A pickled repository with the credentials of the configuration as it is now."""
    from airflow_butido.recipes.config import load_config

    fresh = load_config(root, environ=environ)
    config = replace(
        cached.repo.config,
        database_password=fresh.database_password,
        database_url=fresh.database_url,
    )
    return replace(cached, repo=replace(cached.repo, config=config))


def _load_fresh(
    root: Path, environ: Mapping[str, str], content_hash: str, listing: Listing | None = None
) -> LoadedRepository:
    from airflow_butido.recipes.repository import load_repository

    repo = load_repository(root, environ=environ, listing=listing)
    images = [image.name for image in repo.config.docker.images]
    return LoadedRepository(repo, _Graphs(repo, images), content_hash)


class _Graphs(Mapping[str, "PackageGraph"]):
    """Per build image, the graph of the whole repository, resolved when first asked for
    (a command about one package needs none of them). Pickled as a plain dict with every
    graph resolved, which raises the ResolveError of a repository that does not resolve."""

    def __init__(self, repo: Repository, images: list[str]) -> None:
        self._repo = repo
        self._images = images
        self._resolved: dict[str, PackageGraph] = {}

    def __getitem__(self, image: str) -> PackageGraph:
        if image not in self._images:
            raise KeyError(image)
        if image not in self._resolved:
            from airflow_butido.graph import resolve
            from airflow_butido.recipes.repository import _gc_paused

            with _gc_paused():
                self._resolved[image] = resolve(self._repo, list(self._repo), image=image, env=None)
        return self._resolved[image]

    def __iter__(self) -> Iterator[str]:
        return iter(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def __reduce__(self) -> tuple[type[dict[str, PackageGraph]], tuple[dict[str, PackageGraph]]]:
        return dict, (dict(self.items()),)


def _input_files(files: list[str], environ: Mapping[str, str]) -> list[str]:
    """Every file of the repository (``files``, as :func:`~airflow_butido.recipes.layers.scan`
    found them: dot entries skipped, as the loader does) and the configuration overlays
    outside it. Plain strings: this runs on every DAG-file import."""
    inputs = list(files)
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for extra in (
        os.path.join(xdg, "butido", "config.toml"),
        environ.get("BUTIDO_CONFIG"),
        environ.get("BUTIDO_SETTINGS"),
    ):
        if extra and os.path.isfile(extra):
            inputs.append(os.path.abspath(extra))
    return inputs


def _settings_key(environ: Mapping[str, str]) -> str:
    """What shapes the pickle besides the files: ``BUTIDO_*`` overrides of the configuration,
    and the code that loads and pickles (a pickle of older classes must not be reused)."""
    items = sorted(
        (k, v) for k, v in environ.items() if k.startswith("BUTIDO_") and k != "BUTIDO_REPO"
    )
    return json.dumps([CACHE_FORMAT, _code_fingerprint(), items])


def _code_fingerprint() -> list[tuple[str, int, int]]:
    import airflow_butido

    package = Path(airflow_butido.__file__).parent
    modules = [package / "graph.py", package / "parse_cache.py"]
    modules += sorted((package / "recipes").glob("*.py"))
    fingerprint = []
    for module in modules:
        try:
            st = module.stat()
        except OSError:
            continue
        fingerprint.append((module.name, st.st_mtime_ns, st.st_size))
    return fingerprint


def _stat_fingerprint(root: Path, files: list[str], settings: str) -> str:
    parts = [settings, str(root)]
    for path in sorted(files):
        try:
            st = os.stat(path)
        except OSError:
            continue
        parts.append(f"\0{path}\0{st.st_mtime_ns}\0{st.st_size}")
    return hashlib.sha256("".join(parts).encode()).hexdigest()  # one update: the same digest


def _content_hash(root: Path, files: list[str], settings: str) -> str:
    from airflow_butido.recipes.layers import read_bytes

    digest = hashlib.sha256(settings.encode())
    digest.update(str(root).encode())
    for path in sorted(files):
        try:
            data = read_bytes(path)
        except OSError:
            continue
        digest.update(f"\0{path}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _read_index(path: Path, stat_fp: str) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("stat") == stat_fp:
        return str(data.get("content"))
    return None


def _read_pickle(path: Path) -> LoadedRepository | None:
    import pickle

    from airflow_butido.recipes.repository import _gc_paused

    try:
        # unpickling builds a large acyclic graph: the cyclic GC would double the time
        with open(path, "rb") as fh, _gc_paused():
            loaded = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a stale or truncated pickle is rebuilt, never fatal
        log.warning("ignoring unreadable parse cache %s: %s", path, exc)
        return None
    return loaded if isinstance(loaded, LoadedRepository) else None


def _write_atomic(path: Path, data: bytes) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
