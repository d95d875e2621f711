"""butido's template dialect: outputs pinned against handlebars-rust 6 (what butido runs).

Every expected string below was checked against handlebars-rust's own output.
"""

from __future__ import annotations

import pytest

from airflow_butido.errors import ButidoError
from airflow_butido.scripts.handlebars import TemplateError, format_float, render

CTX = {
    "name": "a",
    "version": "1",
    "patches": ["p/1.patch", "p/2.patch"],
    "empty": [],
    "deps": {"build": [], "runtime": ["b =2", "c =3"]},
    "num": 3,
    "zero": 0,
    "flt": 1.5,
    "t": True,
    "f": False,
    "nul": None,
    "obj": {"x": "1", "y": {"z": "deep"}},
    "str": "héllo",
    "list": [1, "two", [3, 4], {"k": "v"}, None, True],
    "nested": [{"n": "a", "items": ["x", "y"]}, {"n": "b", "items": []}],
}

# (template, expected) rendered in strict mode with CTX.
BUILTINS = [
    ("{{name}}-{{this.version}}-{{./name}}-{{this/version}}", "a-1-a-1"),
    ("{{num}} {{zero}} {{flt}} {{t}} {{f}}[{{nul}}]", "3 0 1.5 true false[]"),
    ("{{list}}", "[1, two, [3, 4], [object], , true]"),
    ("{{obj}}", "[object]"),
    ("{{str}}", "héllo"),
    (
        "{{patches.[1]}} {{patches.1}} {{obj.[x]}} {{list.2.0}} {{[name]}}",
        "p/2.patch p/2.patch 1 3 a",
    ),
    ("{{@root.name}}", "a"),
    ("{{#if t}}yes{{/if}}{{#if f}}no{{/if}}", "yes"),
    ("{{#if nul}}a{{else}}b{{/if}}", "b"),
    ("{{#if empty}}a{{else}}b{{/if}}{{#if patches}}c{{/if}}", "bc"),
    ("{{#if zero}}a{{else}}b{{/if}}{{#if zero includeZero=true}}c{{/if}}", "bc"),
    ("{{#if missing}}a{{else}}b{{/if}}", "b"),
    # handlebars-rust parses `this.patches[0]` as two parameters: `this.patches` and `[0]`
    ("{{#if this.patches[0]}}has{{else}}none{{/if}}", "has"),
    ("{{#if this.empty[0]}}has{{else}}none{{/if}}", "none"),
    ("{{#if f}}A{{else if t}}B{{else}}C{{/if}}", "B"),
    ("{{#if f}}A{{^}}C{{/if}}", "C"),
    ("{{#unless f}}a{{/unless}}{{#unless t}}b{{else}}c{{/unless}}", "ac"),
    (
        "{{#each patches}}{{@index}}:{{this}}{{#if @first}}<{{/if}}{{#if @last}}>{{/if}} {{/each}}",
        "0:p/1.patch< 1:p/2.patch> ",
    ),
    ("{{#each obj}}{{@key}}={{this}};{{/each}}", "x=1;y=[object];"),
    ("{{#each empty}}x{{else}}none{{/each}}", "none"),
    ("{{#each empty}}x{{/each}}", ""),
    ("{{#each nested}}{{n}}[{{#each items}}{{../n}}{{this}}{{/each}}]{{/each}}", "a[axay]b[]"),
    ("{{#each patches as |p i|}}{{i}}={{p}} {{/each}}", "0=p/1.patch 1=p/2.patch "),
    ("{{#with obj}}{{x}}/{{y.z}}/{{../name}}{{/with}}", "1/deep/a"),
    ("{{#with missing}}a{{else}}b{{/with}}", "b"),
    ('{{lookup patches 1}} {{lookup obj "x"}} {{lookup list 2}}', "p/2.patch 1 [3, 4]"),
    (
        '{{eq name "a"}} {{eq num 3}} {{eq num 3.0}} {{eq "1" 1}} {{ne name "b"}}',
        "true true false false true",
    ),
    (
        '{{gt num 2}} {{gte num 3}} {{lt num "10"}} {{lte "b" "a"}} {{gt "abc" 1}} {{lt f t}}',
        "true true true false false true",
    ),
    (
        "{{and t num}} {{and t zero}} {{or f nul}} {{or f str}} {{not empty}} {{not t}}",
        "true false false true true false",
    ),
    ('{{#eq name "a"}}yes{{else}}no{{/eq}}', "yes"),
    ("{{len patches}} {{len obj}} {{len str}} {{len num}}", "2 2 6 0"),
    ('{{#if (and (eq name "a") (gt num 1))}}both{{/if}}', "both"),
    ("{{{{raw}}}}{{name}} {{#if}}{{{{/raw}}}}", "{{name}} {{#if}}"),
    ('{{log "x"}}{{name}}', "a"),
    ("{{! short }}a{{!-- long }} comment --}}b", "ab"),
    ("{{{name}}} {{&name}}", "a a"),
    ("\\{{name}} \\\\{{name}}", "{{name}} \\a"),
    ("a {{~name~}} b", "aab"),
    ("{{ name }} {{# if t }}x{{/ if }}", "a x"),
    ("{{#if 'q'}}{{eq 'it\\'s' \"it's\"}}{{/if}}", "true"),
]


@pytest.mark.parametrize(("template", "expected"), BUILTINS)
def test_builtin_renders_like_handlebars_rust(template: str, expected: str) -> None:
    assert render(template, CTX) == expected


# butido's helpers: the exact lines of the reference table.
HELPERS = [
    ('{{phase "build"}}', "echo '#BUTIDO:PHASE:build'"),
    ('{{state "OK"}}', "echo '#BUTIDO:STATE:OK'"),
    ('{{state "ERR" "Missing input"}}', "echo '#BUTIDO:STATE:ERR:Missing input'"),
    ('{{state "ERR" "it\'s"}}', "echo '#BUTIDO:STATE:ERR:it's'"),  # quote not escaped
    ('{{state "ERR" num}}', "echo '#BUTIDO:STATE:ERR:3'"),
    ('{{state "ERR" patches}}', "echo '#BUTIDO:STATE:ERR:[p/1.patch, p/2.patch]'"),
    ('{{state "ERR" obj}}', "echo '#BUTIDO:STATE:ERR:[object]'"),
    ('{{state "ERR" missing}}', "echo '#BUTIDO:STATE:ERR:'"),
    ("{{progress 42}}", "echo '#BUTIDO:PROGRESS:42'"),
    ("{{progress -1}}", "echo '#BUTIDO:PROGRESS:-1'"),
    ("{{progress num}}", "echo '#BUTIDO:PROGRESS:3'"),
    ('{{join "foo" "bar"}}', "foobar"),
    ("{{join name version}}", "a1"),
    ("{{join}}", ""),
    ('{{joinwith ", " "foo" "bar"}}', "foo, bar"),
    ('{{joinwith "-" name version}}', "a-1"),
    ('{{joinwith "-"}}', ""),
    ('{{join (phase "x") "!"}}', "echo '#BUTIDO:PHASE:x'!"),
]


@pytest.mark.parametrize(("template", "expected"), HELPERS)
def test_butido_helper_output(template: str, expected: str) -> None:
    assert render(template, CTX) == expected


HELPER_ERRORS = [
    '{{state "MAYBE"}}',  # any other state is an error
    '{{state "ERR"}}',  # ERR needs a message parameter
    "{{state}}",
    "{{state 1}}",
    '{{progress "3"}}',  # a string is not an integer
    "{{progress 1.5}}",
    "{{progress}}",
    "{{phase}}",
    "{{phase num}}",
    '{{join "a" num}}',
    "{{joinwith num}}",
]


@pytest.mark.parametrize("template", HELPER_ERRORS)
def test_butido_helper_misuse_is_an_error(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, CTX)


STRICT_ERRORS = [
    "{{missing}}",
    "{{obj.missing}}",
    "{{this.meta.key}}",  # optional tables are absent from the context
    "{{@index}}",  # outside each
    "{{#each missing}}x{{/each}}",
    "{{#each name}}x{{/each}}",  # not iterable, no else
    "{{#with missing}}x{{/with}}",
    "{{lookup patches 9}}",
    '{{lookup obj "nope"}}',
    "{{eq missing 1}}",
    "{{not missing}}",
    "{{len missing}}",
]


@pytest.mark.parametrize("template", STRICT_ERRORS)
def test_strict_mode_rejects_undefined_values(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, CTX, strict=True)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("[{{missing}}]", "[]"),
        ("[{{obj.missing}}]", "[]"),
        ("[{{#each missing}}x{{/each}}]", "[]"),
        ("[{{lookup patches 9}}]", "[]"),
        ("[{{eq missing nul}}]", "[true]"),
        ("[{{len missing}}]", "[0]"),
    ],
)
def test_lenient_mode_renders_undefined_as_nothing(template: str, expected: str) -> None:
    assert render(template, CTX, strict=False) == expected


ALWAYS_ERRORS = [
    "{{unknown a}}",  # unknown helper
    "{{#unknown}}x{{/unknown}}",
    "{{patches.foo}}",  # arrays need numeric indexes, even in lenient mode
    "{{#if t}}x{{/each}}",  # mismatched close
    "{{#if t}}x",  # never closed
    "{{else}}",
    "{{name}",
    "{{this.patches[0]}}",  # indexing syntax is only valid as a second parameter
    "{{> partial}}",  # butido registers no partials
    "{{#if t}}a{{else}}b{{else}}c{{/if}}",
]


@pytest.mark.parametrize("template", ALWAYS_ERRORS)
@pytest.mark.parametrize("strict", [True, False])
def test_invalid_templates_fail_in_both_modes(template: str, strict: bool) -> None:
    with pytest.raises(TemplateError):
        render(template, CTX, strict=strict)


SHELL = [
    "${#VAR}",
    "${VAR:-x}",
    "${VAR:+{a,b}}",
    "echo {a,b}",
    "{# not a comment #}",
    "$((1+2))",
    "f() { echo x; }",
    "awk '{print $1}'",
    "[[ -e $f ]] || { exit 1; }",
    "arr=({1..3}); echo ${arr[@]}",
    "a\\b \\n \\\\",
    "{ {",
]


@pytest.mark.parametrize("text", SHELL)
def test_shell_text_passes_through_untouched(text: str) -> None:
    assert render(text, CTX) == text
    assert render(f"{text} {{{{name}}}}", CTX) == f"{text} a"


# Standalone block/comment lines vanish with their line break; `~` trims all whitespace.
WHITESPACE = [
    ("{{#each patches}}\n{{this}}\n{{/each}}\n", "p/1.patch\np/2.patch\n"),
    ("  {{#each patches}}\n    {{this}}\n  {{/each}}\nend", "    p/1.patch\n    p/2.patch\nend"),
    ("    {{#if empty}}\n        x\n    {{/if}}\nafter", "after"),
    ("{{#if t}}\n  a\n{{else}}\n  b\n{{/if}}\n", "  a\n"),
    ("x {{#if t}} y {{/if}} z", "x  y  z"),
    ("line1\n{{!c}}\nline2", "line1\nline2"),
    ("line1\n  {{!-- c --}}  \nline2", "line1\nline2"),
    ("a{{#if t}}\nx\n{{/if}}b", "a\nx\nb"),
    ("{{#each patches~}}\n   {{this}}\n{{~/each}}", "p/1.patchp/2.patch"),
    ("a\n  {{~#if t~}}\n  b\n  {{~/if~}}\n  c", "abc"),
    ("{{name~}}\n\n   {{version}}", "a1"),
    ("{{#if t}}\r\nx\r\n{{/if}}\r\n", "x\r\n"),
    ("{{name}}\n", "a\n"),
]


@pytest.mark.parametrize(("template", "expected"), WHITESPACE)
def test_whitespace_follows_handlebars_rust(template: str, expected: str) -> None:
    assert render(template, CTX) == expected


def test_decorators_are_rejected() -> None:
    # handlebars-rust would accept the inline decorator; butido repositories have no use for it
    with pytest.raises(TemplateError, match="not supported"):
        render('{{#*inline "x"}}y{{/inline}}{{> x}}', CTX)


def test_errors_name_the_template_line_and_column() -> None:
    with pytest.raises(TemplateError) as info:
        render("ok\n  {{#if t}}\n    {{nope}}\n  {{/if}}", CTX, name="script of a 1")
    err = info.value
    assert (err.line, err.column) == (3, 5)
    assert str(err).startswith("script of a 1, line 3, column 5: ")
    assert '"nope"' in str(err)
    assert isinstance(err, ButidoError)


def test_syntax_errors_name_the_position() -> None:
    with pytest.raises(TemplateError) as info:
        render("a\nb {{#if t}}x{{/each}}", CTX)
    assert (info.value.line, info.value.column) == (2, 13)


def test_context_mappings_and_tuples_are_accepted() -> None:
    ctx = {"items": ("x", "y"), "m": {"k": ("v",)}}
    assert render("{{#each items}}{{this}}{{/each}} {{m.k}}", ctx) == "xy [v]"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1.0"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (-2.25, "-2.25"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e16"),
        (1.5e20, "1.5e20"),
        (0.0001, "0.0001"),
        (1e-5, "0.00001"),
        (1e-7, "1e-7"),
        (0.0, "0.0"),
    ],
)
def test_floats_print_like_serde_json(value: float, text: str) -> None:
    assert format_float(value) == text


def test_values_are_never_html_escaped() -> None:
    value = '<a href="x">&\'=`</a>'
    rendered = render("{{v}} {{{v}}} {{this.v}} {{joinwith v v}}", {"v": value})
    assert rendered == " ".join([value] * 4)
