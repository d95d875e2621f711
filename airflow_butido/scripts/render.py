"""From a package to its build script: assemble the phases, then render the template.

The assembled text is byte-for-byte what butido builds before templating (shebang, phase
markers, dedented phase bodies, the ``path`` phase stub, the missing-phase comment), so a
repository's scripts, and therefore artifact reuse by script text, stay comparable with butido.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from airflow_butido.scripts import handlebars
from airflow_butido.scripts.handlebars import TemplateError, render_value

DIALECTS = ("handlebars", "jinja2")

# The stub butido emits for a phase given as ``path`` (unsupported): indentation included.
_PATH_PHASE = (
    "\n"
    "                        # Phase (from file {path}): {name}\n"
    "                        # NOT SUPPORTED YET\n"
    "                        exit 1\n"
    "                    \n"
)


class ScriptPackage(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def path(self) -> str: ...

    def phase(self, name: str) -> Any: ...

    def template_context(self) -> dict[str, Any]: ...


class ScriptConfig(Protocol):
    @property
    def available_phases(self) -> tuple[str, ...]: ...

    @property
    def shebang(self) -> str: ...

    @property
    def strict_script_interpolation(self) -> bool: ...

    @property
    def script_dialect(self) -> str: ...


def unindent(text: str) -> str:
    """The ``unindent`` crate: strip the common leading blanks of the lines after the first.

    Blank lines (spaces and tabs only) do not count towards the common indentation; a first
    line that is empty is dropped. Spaces and tabs count alike, one column each.
    """
    ignore_first = text.startswith(("\n", "\r\n"))
    body = text[1:] if text.startswith("\r\n") else text
    lines = body.split("\n")

    def indent(line: str) -> int | None:
        stripped = line.lstrip(" \t")
        return None if stripped == "" else len(line) - len(stripped)

    widths = [w for w in map(indent, lines[1:]) if w is not None]
    spaces = min(widths, default=0)
    out: list[str] = []
    for i, line in enumerate(lines):
        if i > 1 or (i == 1 and not ignore_first):
            out.append("\n")
        if i == 0:
            out.append(line)
        elif len(line) > spaces:
            out.append(line[spaces:])
    return "".join(out)


def dedent_phase(text: str) -> str:
    """A phase body as butido places it: ``unindent("\\n" + text)`` (trailing newline kept)."""
    return unindent("\n" + text)


def _pieces(package: ScriptPackage, config: ScriptConfig, shebang: str | None):
    yield None, f"{config.shebang if shebang is None else shebang}\n"
    for name in config.available_phases:
        phase = package.phase(name)
        if phase is None:
            yield name, f"# No script for phase: {name}\n"
        elif phase.script is not None:
            body = dedent_phase(phase.script)
            yield name, f"### phase {name}\n{body}\n### / {name} phase\n\n"
        else:
            yield name, _PATH_PHASE.format(path=phase.path, name=name)


def assemble_script(
    package: ScriptPackage, config: ScriptConfig, *, shebang: str | None = None
) -> str:
    """The script text before templating; ``shebang`` overrides ``config.shebang``."""
    return "".join(text for _, text in _pieces(package, config, shebang))


def _phase_at_line(package: ScriptPackage, config: ScriptConfig, shebang, line: int) -> str | None:
    first = 1
    for name, text in _pieces(package, config, shebang):
        last = first + text.count("\n")
        if name is not None and first <= line < last:
            return name
        first = last
    return None


def render_script(
    package: ScriptPackage, config: ScriptConfig, *, shebang: str | None = None
) -> str:
    """The final build script, rendered in the repository's dialect (``script_dialect``).

    Raises TemplateError naming the package, the line and column in the assembled script,
    and the phase that line belongs to.
    """
    script = assemble_script(package, config, shebang=shebang)
    dialect = getattr(config, "script_dialect", "handlebars")
    strict = config.strict_script_interpolation
    context = package.template_context()
    label = f"script of {package.label} ({package.path})"
    try:
        if dialect == "handlebars":
            return handlebars.render(script, context, strict=strict, name=label)
        if dialect == "jinja2":
            return render_jinja2(script, context, strict=strict, name=label)
    except TemplateError as exc:
        phase = None if exc.line is None else _phase_at_line(package, config, shebang, exc.line)
        name = label if phase is None else f"{label[:-1]}, phase {phase})"
        raise exc.named(name) from None
    raise TemplateError(f"unknown script_dialect {dialect!r}; use one of {', '.join(DIALECTS)}")


# --------------------------------------------------------------------------- Jinja2 dialect


def _string(value: Any, helper: str, what: str) -> str:
    if not isinstance(value, str):
        raise TemplateError(f"{helper}(): {what} must be a string, got {value!r}")
    return value


def _phase(name: Any) -> str:
    return f"echo '#BUTIDO:PHASE:{_string(name, 'phase', 'the phase name')}'"


def _state(state: Any, message: Any = None, *rest: Any) -> str:
    state = _string(state, "state", "the state")
    if state == "OK":
        return "echo '#BUTIDO:STATE:OK'"
    if state == "ERR":
        return f"echo '#BUTIDO:STATE:ERR:{render_value(message)}'"
    raise TemplateError(f"state(): the state must be 'OK' or 'ERR', not {state!r}")


def _progress(n: Any) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TemplateError(f"progress(): needs an integer, got {n!r}")
    return f"echo '#BUTIDO:PROGRESS:{n}'"


def _join(*parts: Any) -> str:
    return "".join(_string(p, "join", f"argument {i}") for i, p in enumerate(parts))


def _joinwith(sep: Any, *parts: Any) -> str:
    sep = _string(sep, "joinwith", "the separator")
    return sep.join(_string(p, "joinwith", f"argument {i + 1}") for i, p in enumerate(parts))


JINJA2_GLOBALS: Mapping[str, Callable[..., str]] = {
    "phase": _phase,
    "state": _state,
    "progress": _progress,
    "join": _join,
    "joinwith": _joinwith,
}


def _finalize(value: Any) -> Any:
    """Print values the way butido's scripts print them (``true``, ``[a, b]``, none as empty)."""
    if value is None or isinstance(value, bool | int | float | list | dict):
        return render_value(value)
    return value


def _template_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _sandbox_class() -> type:
    """Jinja2's immutable sandbox, raising at once on an unsafe attribute.

    The stock sandbox returns an undefined value there, which non-strict mode would print
    as empty text: a refused escape must be an error in both modes.
    """
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class Sandbox(ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise SecurityError(
                f"access to attribute {attribute!r} of a {type(obj).__name__} value is unsafe"
            )

    return Sandbox


def render_jinja2(
    template: str, context: Mapping[str, Any], *, strict: bool = True, name: str | None = None
) -> str:
    """Render with Jinja2: ``this`` and bare names, butido's helpers as functions.

    No autoescaping, trailing newline kept, StrictUndefined in strict mode. Comments are
    ``{## ... ##}`` because ``{#`` is everyday shell (``${#VAR}``).

    The environment is Jinja2's immutable sandbox: a recipe is untrusted text, and the
    templates run on the machine that lints, plans and builds. Reaching for internals
    (``__class__``, ``__globals__``, ``cycler.__init__``, ``str.format`` tricks) or
    mutating a value is a TemplateError, never executed.
    """
    import jinja2
    import jinja2.sandbox

    env = _sandbox_class()(
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
        comment_start_string="{##",
        comment_end_string="##}",
        finalize=_finalize,
    )
    env.globals.update(JINJA2_GLOBALS)
    try:
        compiled = env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(exc.message or str(exc), name=name, line=exc.lineno) from None
    variables = {**context, "this": dict(context)}
    try:
        return compiled.render(variables)
    except TemplateError as exc:
        line = _template_line(exc.__traceback__)
        raise TemplateError(exc.message, name=name, line=line) from None
    except jinja2.sandbox.SecurityError as exc:
        line = _template_line(exc.__traceback__)
        raise TemplateError(f"refused by the sandbox: {exc}", name=name, line=line) from None
    except jinja2.TemplateError as exc:
        line = _template_line(exc.__traceback__)
        raise TemplateError(str(exc), name=name, line=line) from None
    except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError) as exc:
        line = _template_line(exc.__traceback__)
        raise TemplateError(f"{type(exc).__name__}: {exc}", name=name, line=line) from None
