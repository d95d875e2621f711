"""Reading a whole package repository: discovery, layer merging, validation.

Every file is parsed once (layers shared by many leaves are not re-read), every error
of every file is collected, and the result is a mapping ``(name, version) -> Package``.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from airflow_butido.errors import ConfigError
from airflow_butido.recipes.config import Config, InvalidConfiguration, load_config
from airflow_butido.recipes.dependency import KINDS, Dependency, parse_dependency
from airflow_butido.recipes.errors import (
    STRICT_KEYS_HINT,
    InvalidValue,
    RecipeError,
    RecipeErrors,
    UnknownKey,
    type_name,
)
from airflow_butido.recipes.layers import (
    PKG_TOML,
    Listing,
    find_key_line,
    has_key_path,
    merge,
    normalize_relative_path,
    read_toml,
    scan,
    trails,
)
from airflow_butido.recipes.names import name_problem
from airflow_butido.recipes.package import HASH_TYPES, Package, Phase, Source
from airflow_butido.recipes.paths import OutsideRoot, confine
from airflow_butido.recipes.versions import VersionConstraint

Key = tuple[str, str]
log = logging.getLogger(__name__)

TOP_LEVEL_KEYS = (
    "name",
    "version",
    "version_is_semver",
    "sources",
    "dependencies",
    "patches",
    "environment",
    "allowed_images",
    "denied_images",
    "phases",
    "meta",
)
_REQUIRED = ("name", "version", "version_is_semver", "sources", "dependencies", "patches", "phases")
_SOURCE_KEYS = ("url", "hash", "download_manually")
_HASH_KEYS = ("type", "hash")
_HASH_LENGTHS = {"sha1": 40, "sha256": 64, "sha512": 128}
_HEX_RE = re.compile(r"[0-9a-f]+")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_INDEX_RE = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Repository:
    root: Path
    config: Config
    packages: Mapping[Key, Package]
    pkg_toml_files: tuple[str, ...] = ()
    warnings: tuple[RecipeError, ...] = ()  # accepted problems: unknown keys, links skipped
    _by_name: dict[str, tuple[Package, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_name: dict[str, list[Package]] = {}
        for key in sorted(self.packages):
            by_name.setdefault(key[0], []).append(self.packages[key])
        object.__setattr__(self, "_by_name", {k: tuple(v) for k, v in by_name.items()})

    def get(self, name: str, version: str) -> Package | None:
        return self.packages.get((name, version))

    def find(self, name: str, constraint: str | VersionConstraint | None = None) -> list[Package]:
        """Packages called ``name`` whose version matches the CLI-style ``constraint``."""
        candidates = self._by_name.get(name, ())
        if constraint is None:
            return list(candidates)
        if isinstance(constraint, str):
            constraint = VersionConstraint.parse(constraint)
        return [p for p in candidates if constraint.matches(p.version)]

    def versions_of(self, name: str) -> list[str]:
        return [p.version for p in self._by_name.get(name, ())]

    def names(self) -> list[str]:
        return list(self._by_name)

    def __len__(self) -> int:
        return len(self.packages)

    def __iter__(self) -> Iterator[Package]:
        for key in sorted(self.packages):
            yield self.packages[key]

    def __contains__(self, key: object) -> bool:
        return key in self.packages


class _Trail:
    """The layers of one leaf, to name the file that set a key."""

    def __init__(self, files: tuple[str, ...], data: Mapping[str, dict[str, Any]], root: Path):
        self.files = files
        self.data = data
        self.root = root

    def origin(self, key: str) -> str:
        parts = tuple(p for p in _INDEX_RE.sub("", key).split(".") if p)
        for depth in range(len(parts), 0, -1):
            for rel in reversed(self.files):
                if has_key_path(self.data[rel], parts[:depth]):
                    return rel
        return self.files[-1]

    def error(self, key: str | None, message: str) -> RecipeError:
        rel = self.origin(key) if key else self.files[-1]
        line = None
        if key:
            try:
                text = (self.root / rel).read_text(encoding="utf-8")
                line = find_key_line(text, key)
            except OSError:
                pass
        return RecipeError(rel, key, line, message)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading builds a large, acyclic object graph; the cyclic GC would only rescan it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_repository(
    root: Path,
    *,
    config: Config | None = None,
    environ: Mapping[str, str] | None = None,
    listing: Listing | None = None,
) -> Repository:
    """Load every package below ``root``; raise ``RecipeErrors`` with all problems found.

    ``listing`` is a :func:`scan` of ``root`` the caller made already (the parse cache's
    fingerprint walks the repository just before)."""
    with _gc_paused():
        return _load_repository(Path(root).absolute(), config, environ, listing)


def _load_repository(
    root: Path, config: Config | None, environ: Mapping[str, str] | None, listing: Listing | None
) -> Repository:
    config_error: InvalidConfiguration | None = None
    if config is None:
        try:
            config = load_config(root, environ=environ)
        except InvalidConfiguration as exc:
            config_error = exc  # report the broken pkg.toml files along with it
    listing = listing or scan(root)
    files, links = listing.pkg_tomls(), listing.links
    errors: list[RecipeError] = []
    warnings: list[RecipeError] = []
    for link in sorted(links):
        target = os.readlink(root / link)
        if os.path.basename(link) == PKG_TOML:
            message = f"is a symbolic link to {target}; a pkg.toml must be a regular file"
            errors.append(RecipeError(link, None, None, message))
        else:
            message = f"is a symbolic link to {target}; not searched for pkg.toml files"
            warnings.append(RecipeError(link, None, None, message))
    strict = config.strict_keys if config is not None else True
    data: dict[str, dict[str, Any]] = {}
    base = str(root)
    for rel in files:
        try:
            data[rel] = read_toml(f"{base}/{rel}")
        except InvalidValue as exc:
            errors.append(RecipeError(rel, None, exc.line, exc.message))
    merged_prefix: dict[tuple[str, ...], dict[str, Any]] = {(): {}}
    memo: _Memo = {}
    missing: _Missing = {}
    packages: dict[Key, Package] = {}
    for trail in trails(files):
        if any(rel not in data for rel in trail):
            continue  # a syntax error in a layer is already reported
        merged = _merged(trail, data, merged_prefix)
        context = _Trail(trail, data, root)
        package = _build_package(merged, context, root, errors, memo, missing, strict, warnings)
        if package is None:
            continue
        other = packages.get(package.key)
        if other is not None:
            errors.append(
                RecipeError(
                    package.path,
                    None,
                    None,
                    f"package {package.label} is defined twice: {other.path} and {package.path}",
                )
            )
            continue
        packages[package.key] = package
    errors.extend(_with_leaves(error, leaves) for error, leaves in missing.items())
    if config is not None and not errors:  # a broken pkg.toml would show up here, too
        errors.extend(_unknown_queue_packages(config, {name for name, _ in packages}))
    if config_error is not None:
        if errors:
            raise ConfigError(f"{config_error}\ninvalid packages:\n{RecipeErrors(errors)}")
        raise config_error
    if errors:
        raise RecipeErrors(errors)
    assert config is not None
    found = tuple(dict.fromkeys(warnings))
    for warning in found:
        log.warning("%s", warning)
    ordered = {key: packages[key] for key in sorted(packages)}
    return Repository(root, config, ordered, tuple(files), found)


def _unknown_queue_packages(config: Config, names: set[str]) -> list[RecipeError]:
    """``[airflow.queues]`` names packages of this repository: a typo would otherwise
    leave the package on the default queue without a word."""
    return [
        RecipeError(
            route.file,
            f"airflow.queues.{route.package}",
            route.line,
            f"no package named {route.package!r} in the repository",
        )
        for route in config.airflow.queues
        if route.package not in names
    ]


def _merged(
    trail: tuple[str, ...],
    data: Mapping[str, dict[str, Any]],
    cache: dict[tuple[str, ...], dict[str, Any]],
) -> dict[str, Any]:
    """Merge root -> leaf, reusing the merged result of shared parent trails."""
    parent = trail[:-1]
    if parent not in cache:
        cache[parent] = _merged(parent, data, cache)
    return merge(cache[parent], data[trail[-1]])


def _string(value: Any, key: str, *, allow_int: bool = False) -> str:
    if isinstance(value, str):
        return value
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidValue(f"expected a string, got {type_name(value)}", key)


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidValue(f"expected an array of strings, got {type_name(value)}", key)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidValue(f"expected a string, got {type_name(item)}", f"{key}[{i}]")
    return tuple(value)


def _string_table(value: Any, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise InvalidValue(f"expected a table of strings, got {type_name(value)}", key)
    return tuple((k, _string(v, f"{key}.{k}", allow_int=True)) for k, v in value.items())


def _table(value: Any, key: str, allowed: tuple[str, ...], errs: list[InvalidValue]) -> bool:
    if not isinstance(value, dict):
        errs.append(InvalidValue(f"expected a table, got {type_name(value)}", key))
        return False
    for k in value:
        if k not in allowed:
            errs.append(UnknownKey(f"unknown key (allowed: {', '.join(allowed)})", f"{key}.{k}"))
    return True


def _parse_source(name: str, value: Any, errs: list[InvalidValue]) -> Source | None:
    at = f"sources.{name}"
    if not _table(value, at, _SOURCE_KEYS, errs):
        return None
    before = len(errs)
    url = value.get("url")
    if url is None:
        errs.append(InvalidValue("missing required key", f"{at}.url"))
    elif not isinstance(url, str) or not _URL_RE.fullmatch(url):
        errs.append(InvalidValue(f"not a URL: {url!r}", f"{at}.url"))
    hash_table = value.get("hash")
    hash_type = digest = None
    if hash_table is None:
        errs.append(InvalidValue("missing required table", f"{at}.hash"))
    elif _table(hash_table, f"{at}.hash", _HASH_KEYS, errs):
        hash_type = hash_table.get("type")
        digest = hash_table.get("hash")
        if hash_type is None:
            errs.append(InvalidValue("missing required key", f"{at}.hash.type"))
        elif hash_type not in HASH_TYPES:
            errs.append(
                InvalidValue(
                    f"unknown hash type {hash_type!r} (allowed: {', '.join(HASH_TYPES)})",
                    f"{at}.hash.type",
                )
            )
        if digest is None:
            errs.append(InvalidValue("missing required key", f"{at}.hash.hash"))
        elif not isinstance(digest, str) or not _HEX_RE.fullmatch(digest):
            errs.append(
                InvalidValue(
                    f"expected a lower-case hexadecimal digest, got {digest!r}", f"{at}.hash.hash"
                )
            )
        elif hash_type in _HASH_LENGTHS and len(digest) != _HASH_LENGTHS[hash_type]:
            errs.append(
                InvalidValue(
                    f"a {hash_type} digest has {_HASH_LENGTHS[hash_type]} hex digits, "
                    f"this one has {len(digest)}",
                    f"{at}.hash.hash",
                )
            )
    manual = value.get("download_manually", False)
    if not isinstance(manual, bool):
        errs.append(
            InvalidValue(f"expected a boolean, got {type_name(manual)}", f"{at}.download_manually")
        )
    if len(errs) != before:
        return None
    return Source(name, url, str(hash_type), str(digest), manual)


def _parse_dependencies(
    value: Any, errs: list[InvalidValue], strict: bool = True
) -> tuple[Dependency, ...]:
    if not _table(value, "dependencies", KINDS, errs):
        return ()
    deps: list[Dependency] = []
    for kind in KINDS:
        at = f"dependencies.{kind}"
        if kind not in value:
            errs.append(InvalidValue("missing required key", at))
            continue
        items = value[kind]
        if not isinstance(items, list):
            errs.append(InvalidValue(f"expected an array, got {type_name(items)}", at))
            continue
        for i, item in enumerate(items):
            unknown: list[InvalidValue] | None = None if strict else []
            try:
                deps.append(parse_dependency(item, kind, unknown))
            except InvalidValue as exc:
                sub = f"{at}[{i}]" + (f".{exc.key}" if exc.key else "")
                errs.append(type(exc)(exc.message, sub))
            if unknown:
                errs.extend(UnknownKey(u.message, f"{at}[{i}].{u.key}") for u in unknown)
    return tuple(deps)


def _parse_phases(value: Any, errs: list[InvalidValue]) -> tuple[Phase, ...]:
    if not isinstance(value, dict):
        errs.append(InvalidValue(f"expected a table, got {type_name(value)}", "phases"))
        return ()
    phases = []
    for name, body in value.items():
        at = f"phases.{name}"
        if not _table(body, at, ("script", "path"), errs):
            continue
        if len([k for k in body if k in ("script", "path")]) != 1:
            errs.append(InvalidValue("expected exactly one of 'script' and 'path'", at))
            continue
        kind, text = next(iter(body.items()))
        if not isinstance(text, str):
            errs.append(InvalidValue(f"expected a string, got {type_name(text)}", f"{at}.{kind}"))
            continue
        phases.append(Phase(name, text, None) if kind == "script" else Phase(name, None, text))
    return tuple(phases)


def _resolve_patches(
    value: Any, context: _Trail, root: Path, errors: list[RecipeError]
) -> tuple[str, ...]:
    """Patch paths are relative to the directory of the layer that set ``patches``."""
    origin = context.origin("patches")
    base = os.path.dirname(origin)
    out = []
    for i, patch in enumerate(value):
        try:
            if patch.startswith("/"):
                raise InvalidValue(f"patch path {patch!r} must be relative to {origin}")
            rel = normalize_relative_path(f"{base}/{patch}" if base else patch)
        except InvalidValue as exc:
            errors.append(context.error(f"patches[{i}]", exc.message))
            continue
        try:
            confine(root, rel, what=f"patch {rel}")
        except OutsideRoot as exc:
            errors.append(context.error(f"patches[{i}]", str(exc)))
            continue
        if not (root / rel).is_file():
            errors.append(context.error(f"patches[{i}]", f"patch does not exist: {rel}"))
            continue
        out.append(rel)
    return tuple(out)


def _check_phase_paths(
    phases: tuple[Phase, ...], context: _Trail, root: Path, errors: list[RecipeError]
) -> bool:
    """A ``path`` phase names a file relative to the layer that set it; it must stay in
    the repository, links resolved. True when an error was added."""
    failed = False
    for phase in phases:
        if phase.path is None:
            continue
        key = f"phases.{phase.name}.path"
        base = os.path.dirname(context.origin(key))
        try:
            if phase.path.startswith("/"):
                raise InvalidValue(f"path {phase.path!r} must be relative to its pkg.toml")
            rel = normalize_relative_path(f"{base}/{phase.path}" if base else phase.path)
            confine(root, rel, what=f"phase script {rel}")
        except (InvalidValue, OutsideRoot) as exc:
            errors.append(context.error(key, getattr(exc, "message", str(exc))))
            failed = True
    return failed


_Memo = dict[tuple[str, int], tuple[Any, Any, list[InvalidValue]]]
_Parse = Callable[[Any, list[InvalidValue]], Any]
_Missing = dict[RecipeError, list[str]]
_MISSING = "missing required"


def _with_leaves(error: RecipeError, leaves: list[str]) -> RecipeError:
    """A key missing below a shared layer's table: say which packages lack it."""
    shown = ", ".join(leaves[:3])
    more = f" and {len(leaves) - 3} more" if len(leaves) > 3 else ""
    return replace(error, message=f"{error.message} in {shown}{more}")


def _checked(parse: Callable[[Any, str], Any], key: str) -> _Parse:
    """``parse(value, key)`` as a memo parser: its ``InvalidValue`` goes to the list."""

    def run(value: Any, local: list[InvalidValue]) -> Any:
        try:
            return parse(value, key)
        except InvalidValue as exc:
            local.append(exc)
            return None

    return run


# The tables parsed once per distinct object (see _build_package), in the order their
# errors are reported; dependencies, whose parse depends on ``strict``, come first.
_SHARED: tuple[tuple[str, _Parse], ...] = (
    ("environment", _checked(_string_table, "environment")),
    ("allowed_images", _checked(_string_list, "allowed_images")),
    ("denied_images", _checked(_string_list, "denied_images")),
    ("phases", _parse_phases),
    ("meta", _checked(_string_table, "meta")),
)
_TOP_LEVEL = frozenset(TOP_LEVEL_KEYS)


def _strict_dependencies(value: Any, errs: list[InvalidValue]) -> tuple[Dependency, ...]:
    return _parse_dependencies(value, errs, True)


def _lenient_dependencies(value: Any, errs: list[InvalidValue]) -> tuple[Dependency, ...]:
    return _parse_dependencies(value, errs, False)


def _shared(
    merged: dict[str, Any], key: str, parse: _Parse, memo: _Memo, errs: list[InvalidValue]
) -> Any:
    """Parse ``merged[key]`` once per distinct object (the memo keeps it alive)."""
    if key not in merged:
        return None
    value = merged[key]
    hit = memo.get((key, id(value)))
    if hit is None:
        local: list[InvalidValue] = []
        hit = memo[(key, id(value))] = (value, parse(value, local), local)
    if hit[2]:
        errs.extend(hit[2])
    return hit[1]


def _name_or_version(merged: dict[str, Any], key: str, errs: list[InvalidValue]) -> str | None:
    if key not in merged:
        return None
    try:
        return _string(merged[key], key, allow_int=True)
    except InvalidValue as problem:
        errs.append(problem)
        return None


def _build_package(
    merged: dict[str, Any],
    context: _Trail,
    root: Path,
    errors: list[RecipeError],
    memo: _Memo,
    missing: _Missing,
    strict: bool = True,
    warnings: list[RecipeError] | None = None,
) -> Package | None:
    """Validate one merged leaf. ``memo`` shares parsed values between leaves that
    inherit the very same table from a common layer (phases, environment, ...);
    ``missing`` gathers the leaves lacking a key of a table a shared layer declared.
    Unknown keys are errors when ``strict``, else they go to ``warnings``."""
    errs: list[InvalidValue] = []
    for key in merged:
        if key not in _TOP_LEVEL:
            hint = " (flags were removed in butido 0.2)" if key == "flags" else ""
            errs.append(UnknownKey(f"unknown key{hint}", key))
    for key in _REQUIRED:
        if key not in merged:
            errs.append(InvalidValue("missing required key", key))
    name = _name_or_version(merged, "name", errs)
    version = _name_or_version(merged, "version", errs)
    for key, value in (("name", name), ("version", version)):
        problem = None if value is None else name_problem(value)
        if problem is not None:
            errs.append(InvalidValue(problem, key))
    semver = merged.get("version_is_semver")
    if semver is not None and not isinstance(semver, bool):
        errs.append(
            InvalidValue(f"expected a boolean, got {type_name(semver)}", "version_is_semver")
        )
    sources: list[Source] = []
    if "sources" in merged:
        if isinstance(merged["sources"], dict):
            for src_name, src in merged["sources"].items():
                problem = name_problem(src_name)
                if problem is not None:
                    errs.append(InvalidValue(f"source name {problem}", f"sources.{src_name}"))
                    continue
                parsed = _parse_source(src_name, src, errs)
                if parsed is not None:
                    sources.append(parsed)
        else:
            errs.append(InvalidValue("expected a table", "sources"))
    parse_deps = _strict_dependencies if strict else _lenient_dependencies
    dependencies = _shared(merged, "dependencies", parse_deps, memo, errs) or ()
    patches_raw = None
    if "patches" in merged:
        try:
            patches_raw = _string_list(merged["patches"], "patches")
        except InvalidValue as problem:
            errs.append(problem)
    environment, allowed, denied, phases, meta = (
        _shared(merged, key, parse, memo, errs) for key, parse in _SHARED
    )
    phases = phases or ()
    leaf = context.files[-1]
    accepted = [e for e in errs if isinstance(e, UnknownKey)] if not strict else []
    for exc in errs:
        if exc in accepted:
            if warnings is not None:
                warnings.append(
                    context.error(exc.key, f"{exc.message}; ignored (strict_keys = false)")
                )
            continue
        message = (
            f"{exc.message}; {STRICT_KEYS_HINT}" if isinstance(exc, UnknownKey) else exc.message
        )
        error = context.error(exc.key, message)
        if error.file != leaf and exc.message.startswith(_MISSING):
            missing.setdefault(error, []).append(leaf)
        else:
            errors.append(error)
    patches = _resolve_patches(patches_raw, context, root, errors) if patches_raw else ()
    path_errors = _check_phase_paths(phases, context, root, errors)
    if len(errs) != len(accepted) or len(patches) != len(patches_raw or ()) or path_errors:
        return None
    if name is None or version is None:  # reported above: missing, or not a string
        return None
    return Package(
        name=name,
        version=version,
        version_is_semver=bool(semver),
        sources=tuple(sources),
        dependencies=dependencies,
        patches=patches,
        environment=environment,
        allowed_images=allowed,
        denied_images=denied,
        phases=phases,
        meta=meta,
        path=context.files[-1],
        layers=context.files,
    )
