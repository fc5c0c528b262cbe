"""The C renderer of a GGUF's Jinja chat template (tp_chat_template_render, native/text/chat_template.c) against
transformers' own rendering (transformers.utils.chat_template_utils.render_jinja_template: jinja2's
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loopcontrols, as apply_chat_template uses it):

- PaddleOCR-VL's template as the llama.cpp fixture stores it, over prompts (ASCII, CJK, newlines, empty, no text,
  several images), system and assistant turns, add_generation_prompt both ways, with and without the tokens;
- variants of it (another generation prompt, no "-" whitespace control so that trim_blocks / lstrip_blocks do
  the work, if / elif / else, loops with loop.*, comments, concatenation), a DeepSeek-V3-like template,
  whitespace edge cases (CRLF, trailing newlines, "+", Unicode spaces) and the expression subset;
- refusals: constructs outside the subset are TP_ERR_UNSUPPORTED naming them with line:column; malformed
  templates (which jinja2 refuses too) TP_ERR_FORMAT; errors jinja2 raises while rendering are errors here;
- a fuzz loop of mutated and truncated templates: never a crash, only OK / FORMAT / UNSUPPORTED, and whenever
  both render, the same text.

Also run under ASan + UBSan by `make santest`."""

from __future__ import annotations

import random
import re
from pathlib import Path

import cffi
import gguf
import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from encoder.native import ffi, lib

pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")  # jinja2 on "\\d"

FIXTURE = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "llamacpp-tiny-paddleocr-vl" / "text-f16.gguf"
TP_OK, TP_ERR_FORMAT, TP_ERR_UNSUPPORTED = 0, 6, 7

_libc_ffi = cffi.FFI()
_libc_ffi.cdef("void free(void *);")
_libc = _libc_ffi.dlopen(None)

Message = tuple[str, int, "str | None"]  # role, image parts, text part (None: no text part)


def _fixture_template() -> str:
    reader = gguf.GGUFReader(FIXTURE)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


TEMPLATE = _fixture_template()


def c_render(template: str | bytes, messages: list[Message], add_generation_prompt: bool = True,
             bos_token: str | None = None, eos_token: str | None = None) -> tuple[int, str]:
    """(status, rendered text or error message) from tp_chat_template_render."""
    data = template.encode("utf-8") if isinstance(template, str) else template
    keep = []
    arr = ffi.new("tp_chat_message[]", max(1, len(messages)))
    for i, (role, n_images, text) in enumerate(messages):
        keep.append(ffi.new("char[]", role.encode()))
        arr[i].role = keep[-1]
        arr[i].n_images = n_images
        if text is not None:
            keep.append(ffi.new("char[]", text.encode()))
        arr[i].text = keep[-1] if text is not None else ffi.NULL
    tv = ffi.new("tp_chat_template_vars *")
    tv.add_generation_prompt = add_generation_prompt
    for name, value in (("bos_token", bos_token), ("eos_token", eos_token)):
        if value is not None:
            keep.append(ffi.new("char[]", value.encode()))
            setattr(tv, name, keep[-1])
    out, n, err = ffi.new("char **"), ffi.new("size_t *"), ffi.new("tp_error *")
    status = lib.tp_chat_template_render(data, len(data), arr, len(messages), tv, out, n, err)
    if status != TP_OK:
        assert out[0] == ffi.NULL and n[0] == 0
        return status, ffi.string(err.message).decode()
    text = ffi.unpack(out[0], n[0]).decode("utf-8")
    assert out[0][n[0]] == b"\0"
    _libc.free(_libc_ffi.cast("void *", int(ffi.cast("uintptr_t", out[0]))))
    return status, text


def hf_messages(messages: list[Message]) -> list[dict]:
    """The messages as transformers' processors build them: image parts, then the text part."""
    out = []
    for role, n_images, text in messages:
        content: list[dict] = [{"type": "image"} for _ in range(n_images)]
        if text is not None:
            content.append({"type": "text", "text": text})
        out.append({"role": role, "content": content})
    return out


def hf_render(template: str, messages: list[Message], add_generation_prompt: bool = True,
              bos_token: str | None = None, eos_token: str | None = None) -> str:
    kwargs = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None}
    rendered, _ = render_jinja_template([hf_messages(messages)], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, **kwargs)
    return rendered[0]


def assert_same(template: str, messages: list[Message], **kw) -> str:
    expected = hf_render(template, messages, **kw)
    status, got = c_render(template, messages, **kw)
    assert status == TP_OK, got
    assert got == expected
    return got


USER = [("user", 1, "OCR:")]
PROMPTS = ["OCR:", "Table Recognition:", "识别图中的文字：请输出。", "line one\nline two\n", "", "  spaced  ",
           "tabs\tand \"quotes\" and 'apostrophes' and {{ braces }} {% tags %}", "emoji 😀 and é\u0301"]
CONVERSATIONS = [
    [("user", 1, "OCR:")],
    [("user", 0, "hello")],
    [("user", 3, "three images")],
    [("user", 2, None)],
    [("user", 0, None)],
    [("system", 0, "You are a helpful assistant."), ("user", 1, "OCR:")],
    [("user", 1, "OCR:"), ("assistant", 0, "some text"), ("user", 0, "and now?")],
    [("system", 0, "sys"), ("user", 2, "a\nb"), ("assistant", 0, ""), ("assistant", 0, None), ("user", 0, "c")],
    [],
]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_fixture_template_prompts(prompt: str, add_generation_prompt: bool) -> None:
    assert_same(TEMPLATE, [("user", 1, prompt)], add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("tokens", [(None, None), ("<s>", "</s>"), ("<bos>", "<|end|>")])
def test_fixture_template_conversations(conv: int, tokens: tuple) -> None:
    for agp in (True, False):
        assert_same(TEMPLATE, CONVERSATIONS[conv], add_generation_prompt=agp, bos_token=tokens[0], eos_token=tokens[1])


def test_fixture_template_value() -> None:
    """The prompt PaddleOCR-VL's processor builds for one image and "OCR:" (transformers' rendering, checked by
    assert_same, must also be this string: the model's prompt format)."""
    got = assert_same(TEMPLATE, USER)
    assert got == "<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>OCR:\nAssistant: "


def _no_dash(t: str) -> str:
    return re.sub(r"-([%}#])\}", r"\1}", re.sub(r"\{([%{#])-", r"{\1", t))


VARIANTS = {
    "newline_prompt": TEMPLATE[::-1].replace('"Assistant: "'[::-1], '"Assistant:\\n"'[::-1], 1)[::-1],
    "no_whitespace_control": _no_dash(TEMPLATE),
    "no_whitespace_control_crlf": _no_dash(TEMPLATE).replace("\n", "\r\n"),
    "if_elif_else": (
        "{% for m in messages %}\n"
        "  {% if m.role == 'user' %}\n"
        "U:{{ m.content[-1].text }}\n"
        "  {% elif m.role == 'assistant' and m.content|length > 0 %}\n"
        "A:{{ m.content[0]['text'] }}\n"
        "  {% elif m.role != 'system' %}\n"
        "?\n"
        "  {% else %}\n"
        "    S:{{ m['content'][0].text|trim }}\n"
        "  {% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}A:{% else %}<end>{% endif %}\n"),
    "loop_vars": (
        "{%- for m in messages -%}\n"
        "{{ loop.index0 }}/{{ loop.index }}/{{ loop.length }}/{{ loop.revindex }}/{{ loop.revindex0 }}"
        "{% if loop.first %}[first]{% endif %}{% if loop.last %}[last]{% endif %}:"
        "{% for p in m.content %}{{ p.type }}{% if not loop.last %},{% endif %}{% endfor %}\n"
        "{%- endfor %}\n"),
    "comments": (
        "{# a comment at the start #}\n"
        "  {# an indented comment #}\n"
        "{{ bos_token }}  {#- stripped before -#}  x\n"
        "{% for m in messages %}{# inside #}{{ m.role }}{#+ kept +#}\n{% endfor %}\n"
        "{#- last -#}\n"),
    "concat": (
        "{% set sep = '\\n' %}{% set n = 0 %}"
        "{% for m in messages %}{% set n = n + loop.index %}"
        "{{ m.role + ': ' + (m.content[-1].text if false else '') ~ n ~ sep }}{% endfor %}"),
    "concat_plain": (
        "{% set sep = '\\n' %}{% set head = '<' ~ 'h' ~ '>' %}{{ head }}"
        "{% for m in messages %}{{ m.role + ': ' ~ loop.index ~ ' ' ~ (m.content|length) ~ sep }}{% endfor %}"
        "{{ head + sep + 'done' }}"),
    "deepseek_v3_like": (
        "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
        "{% set system_prompt = '' %}"
        "{%- for message in messages %}{%- if message['role'] == 'system' %}"
        "{% set system_prompt = message['content'][-1]['text'] %}{%- endif %}{%- endfor %}"
        "{{ bos_token }}{{ system_prompt }}"
        "{%- for message in messages %}"
        "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'][-1]['text'] }}"
        "{%- elif message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'][-1]['text'] + eos_token }}"
        "{%- endif %}{%- endfor %}"
        "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"),
    "deepseek_ocr_like": "{% for m in messages %}{{ m['content'][-1]['text'] }}{% endfor %}",
}
VARIANT_CONVERSATIONS = [
    [("user", 1, "OCR:")],
    [("system", 0, "  sys  "), ("user", 2, "a\nb"), ("assistant", 0, "reply"), ("user", 0, "c")],
    [],
]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants(name: str) -> None:
    template = VARIANTS[name]
    if name == "concat":  # a conditional expression: outside the subset
        status, msg = c_render(template, USER)
        assert status == TP_ERR_UNSUPPORTED and "conditional expression" in msg and re.search(r"\b1:\d+\b", msg), msg
        return
    for conv in VARIANT_CONVERSATIONS:
        if name.startswith("deepseek") and any(t is None for _, _, t in conv):
            continue
        for agp in (True, False):
            assert_same(template, conv, add_generation_prompt=agp, bos_token="<｜begin▁of▁sentence｜>",
                        eos_token="<｜end▁of▁sentence｜>")


WHITESPACE = [
    "", "\n", "\n\n", "a\n", "a\n\n", "a\r\n", "a\r", "a\r\n\r\n", "x\r\ny\rz\n",
    "  {% if true %}x{% endif %}  \n  y", "\t{% if true %}\n\tx\n\t{% endif %}\n",
    "a  {% if true %}b{% endif %}\n", "a\n  {% if true %}b\n  {% endif %}c",
    "a\n  {%+ if true %}b\n  {% endif +%}\nc", "a\n  {%- if true %}b\n  {% endif -%}\n  c",
    "a\n  {{ 'v' }}\n  b", "a\n  {{- 'v' -}}\n  b", "a \u3000{%- if true %}b{% endif %}", "a\u3000\n  {% if true %}b{% endif %}",
    "a\u00a0\n\u00a0{% if true %}b{% endif %}", "a\u2003\t{# c #}\nb", "a\n\t {#- c #}\nb", "a\n {# c -#}\n\n b",
    "{% if true %}\n\n{% endif %}\n\n", "{% for m in messages %}\n  {{ m.role }}\n{% endfor %}\n",
    "{%- for m in messages -%}\n  {{ m.role }}\n{%- endfor -%}\n", "{{ 'a' }}\n{{ 'b' }}\n",
    "x{%   if   true   -%}   y   {%-   endif   %}z", "{% if true %}\r\n  x\r\n{% endif %}\r\n",
    "a{# multi\nline\ncomment #}\nb", "{{\n'multi'\n~\n'line'\n}}", "{{ '%}' }}{{ \"}}\" }}{{ '{#' }}",
    "  {% set x = 1 %}\n  {{ x }}", "{%- set x = 'v' -%}\n\n  {{ x }}  \n",
]


@pytest.mark.parametrize("i", range(len(WHITESPACE)))
def test_whitespace(i: int) -> None:
    assert_same(WHITESPACE[i], [("user", 1, "u"), ("assistant", 0, "a")])


EXPRESSIONS = [
    "{{ 1 + 2 }}|{{ -3 }}|{{ 7 - 10 }}|{{ - -2 }}|{{ +4 }}|{{ 1_000 }}|{{ 0 }}",
    "{{ 'a' ~ 1 ~ true ~ false ~ none ~ undefined_name ~ True ~ None }}|{{ 'a' 'b' \"c\" }}",
    "{{ 'x' in 'xyz' }}{{ 'q' not in 'xyz' }}{{ '' in 'a' }}{{ 'role' in messages[0] }}{{ 'text' in messages[0].content[0] }}",
    "{{ 'a' in u }}{{ messages[0] in messages }}{{ messages[1] not in messages }}{{ 'image' in messages[0].content }}",
    "{{ 3 > 2 }}{{ 2 >= 2 }}{{ 1 < 0 }}{{ 1 <= 1 }}{{ 'a' < 'b' }}{{ 'é' > 'z' }}{{ 'ab' < 'a' }}{{ true > 0 }}",
    "{{ 1 == 1 }}{{ 1 != 1 }}{{ true == 1 }}{{ u == u }}{{ u == none }}{{ none == none }}{{ 'a' == 'a' }}{{ 1 == '1' }}",
    "{{ messages[0] == messages[0] }}{{ messages[0] == messages[1] }}{{ messages[0].content[0] == messages[2].content[0] }}",
    "{{ messages|length }}{{ '  a b \n'|trim }}|{{ '中文'|length }}{{ u|length }}{{ u|trim }}{{ 12|trim }}{{ messages[0]|length }}",
    "{{ u is defined }}{{ u is not defined }}{{ u is undefined }}{{ none is none }}{{ 0 is none }}{{ 'a' is string }}",
    "{{ 1 is number }}{{ true is number }}{{ 'a' is number }}{{ messages is defined }}{{ messages[9] is defined }}",
    "{{ messages[0]['role'] }}{{ messages[-1].role }}{{ messages[-9] is defined }}{{ messages.0.role }}",
    "{{ 'héllo'[1] }}{{ 'abc'[-1] }}{{ 'abc'[5] }}{{ messages[0].content[0].type }}{{ messages[0].content[1].text }}",
    "{{ 'a' and 'b' }}|{{ '' and 'b' }}|{{ '' or 'c' }}|{{ 'd' or 'c' }}|{{ not '' }}|{{ not not 1 }}|{{ u or 'x' }}",
    "{{ not 1 == 2 }}{{ not u is defined }}{{ (1 + 2) ~ 3 }}{{ 1 + (2) }}{{ 'a' + 'b' ~ 'c' }}{{ 1 == 1 and 2 > 1 or false }}",
    "{{ tools is none }}{{ documents is none }}{{ loop is defined }}{{ messages[0].missing is defined }}{{ 'x'[0] }}",
    "{{ \"\\x41\\u00e9\\n\\t\\\\\\'\\\"\\101\\d\" }}|{{ '\\U0001F600' }}",
    "{% set a = 'one' %}{% if true %}{% set a = 'two' %}{% endif %}{{ a }}"
    "{% for m in messages %}{% set a = m.role %}{{ a }}{% endfor %}{{ a }}",
    "{% set c = 0 %}{% for m in messages %}{{ c }}{% set c = c + 1 %}{{ c }},{% endfor %}{{ c }}",
    "{% for m in messages %}{% for p in m.content %}{{ loop.index }}{% endfor %}{{ loop.index }}{% endfor %}{{ loop }}",
    "{% for ch in 'aé中' %}{{ loop.index0 }}{{ ch }}{% endfor %}{% for x in u %}x{% else %}empty{% endfor %}",
    "{% for m in messages %}{% if m.role == 'user' %}{% for p in m.content if false %}{% endfor %}{% endif %}{% endfor %}",
    "{{ add_generation_prompt }}{{ bos_token }}{{ eos_token }}{{ eos_token is defined }}",
    "{% set loop = 'top' %}{{ loop }}{% for m in messages %}{{ loop.index }}{% endfor %}{{ loop }}",
    "{{ none[-9223372036854775807 - 1] is defined }}{{ 'abc'[-9223372036854775807 - 1] is defined }}{{ messages[] is defined }}",
]


@pytest.mark.parametrize("i", range(len(EXPRESSIONS)))
def test_expressions(i: int) -> None:
    template = EXPRESSIONS[i]
    conv = [("user", 1, "hi"), ("assistant", 0, "there"), ("user", 2, None)]
    if "if false %}" in template:  # a loop filter: outside the subset
        status, msg = c_render(template, conv)
        assert status == TP_ERR_UNSUPPORTED and "loop 'if'" in msg, msg
        return
    for tokens in ((None, None), ("<s>", "</s>")):
        for agp in (True, False):
            assert_same(template, conv, add_generation_prompt=agp, bos_token=tokens[0], eos_token=tokens[1])


UNSUPPORTED = [
    ("x\n{% macro f() %}{% endmacro %}", "'macro' statement", "2:4"),
    ("{{ raise_exception('no') }}", "call", "1:19"),
    ("ab\ncd {{ messages|upper }}", "filter 'upper'", "2:16"),
    ("{{ x|trim('a') }}", "filter arguments", "1:10"),
    ("{{ [1, 2] }}", "list literal", "1:4"),
    ("{{ {'a': 1} }}", "dict literal", "1:4"),
    ("{{ 1.5 }}", "float literal", "1:4"),
    ("{% for m in messages %}{% break %}{% endfor %}", "'break' statement", "1:27"),
    ("{{ 2 * 3 }}", "operator '*'", "1:6"),
    ("{{ 'a' if x else 'b' }}", "conditional expression", "1:8"),
    ("{% set a, b = 1, 2 %}", "set of a tuple", "1:9"),
    ("{% set ns.a = 1 %}", "set of a tuple or an attribute", "1:10"),
    ("{% set x %}y{% endset %}", "block set", "1:10"),
    ("{% for m in messages %}{{ loop.cycle }}{% endfor %}", "loop.cycle", "1:31"),
    ("{% raw %}{{ x }}{% endraw %}", "'raw' statement", "1:4"),
    ("{{ messages }}", "printing a list", "1:1"),
    ("{{ messages[0] }}", "printing a dict", "1:1"),
    ("{{ messages[0].items }}", "method 'items'", "1:15"),
    ("{{ 'abc'.upper }}", "attribute 'upper' of a string", "1:9"),
    ("{{ x is divisibleby 3 }}", "test 'divisibleby'", "1:9"),
    ("{{ x is defined(1) }}", "test arguments", "1:16"),
    ("{{ 1 < 2 < 3 }}", "chained comparison", "1:10"),
    ("{{ messages[1:] }}", "slice", "1:12"),
    ("{% for a, b in messages %}{% endfor %}", "tuple loop target", "1:9"),
    ("{{ 'a\\N{BULLET}' }}", "escape sequence", "1:6"),
    ("{{ 99999999999999999999 }}", "beyond 64 bits", "1:4"),
    ("{% include 'x' %}", "'include' statement", "1:4"),
    ("{{ (1, 2) }}", "tuple", "1:6"),
    ("{{ 9223372036854775807 + 1 }}", "integer beyond 64 bits", "1:24"),
]


@pytest.mark.parametrize("i", range(len(UNSUPPORTED)))
def test_unsupported(i: int) -> None:
    template, what, where = UNSUPPORTED[i]
    status, msg = c_render(template, USER)
    assert status == TP_ERR_UNSUPPORTED, msg
    assert what in msg and f"line {where}:" in msg, msg


FORMAT = [
    ("{% if true %}x", "block not closed (no endif)", "1:1"),
    ("a\n{% for m in messages %}{% if true %}x{% endfor %}", "unexpected tag 'endfor'", "2:41"),
    ("{{ x ", "tag not closed", "1:1"),
    ("x\n{% endif %}", "unexpected tag 'endif'", "2:4"),
    ("{{ 'abc }}", "unterminated string", "1:4"),
    ("a {# comment", "comment not closed", "1:3"),
    ("{{ }}", "expected an expression", "1:4"),
    ("{{ a b }}", "expected the end of the tag", "1:6"),
    ("{% for %}{% endfor %}", "expected a name after 'for'", "1:8"),
    ("{% for x of y %}{% endfor %}", "expected 'in'", "1:10"),
    ("{{ (a }}", "unexpected '}', expected ')'", "1:7"),
    ("{{ a) }}", "unexpected ')'", "1:5"),
    ("{% foo %}", "unexpected tag 'foo'", "1:4"),
    ("{% if true %}{% else %}{% elif x %}{% endif %}", "unexpected tag 'elif'", "1:27"),
    ("{% %}", "expected a tag name", "1:4"),
    ("{{ a ! b }}", "unexpected character '!'", "1:6"),
    ("{{ 'a\\x4' }}", "truncated", "1:6"),
    ("{{ 007 }}", "leading zero", "1:4"),
    ("{% set x 1 %}", "expected '='", "1:10"),
    ("{{ a. }}", "expected an attribute name", "1:7"),
    ("{% for x in messages %}{% if true %}{% set loop = 1 %}{% endif %}{% endfor %}", "assignment to 'loop'", "1:44"),
    ("{% for loop in messages %}{% endfor %}", "'loop' as a for loop's target", "1:8"),
]


@pytest.mark.parametrize("i", range(len(FORMAT)))
def test_format_errors(i: int) -> None:
    template, what, where = FORMAT[i]
    status, msg = c_render(template, USER)
    assert status == TP_ERR_FORMAT, msg
    assert what in msg and f"line {where}:" in msg, msg
    with pytest.raises(Exception):  # jinja2 refuses it too (TemplateSyntaxError or UndefinedError)
        hf_render(template, USER)


RENDER_ERRORS = ["{{ u.x }}", "{{ u['x'] }}", "{{ 'a' + 1 }}", "{{ u + 'a' }}", "{% for x in none %}{% endfor %}",
                 "{{ 1 in 'abc' }}", "{{ 'a' in none }}", "{{ 12|length }}", "{{ 'a' < 1 }}", "{{ -'a' }}"]


@pytest.mark.parametrize("template", RENDER_ERRORS)
def test_render_errors(template: str) -> None:
    status, msg = c_render(template, USER)
    assert status == TP_ERR_FORMAT and re.search(r"line 1:\d+:", msg), msg
    with pytest.raises(Exception):
        hf_render(template, USER)


def test_invalid_arguments() -> None:
    out, n, err = ffi.new("char **"), ffi.new("size_t *"), ffi.new("tp_error *")
    arr = ffi.new("tp_chat_message[1]")
    assert lib.tp_chat_template_render(ffi.NULL, 3, ffi.NULL, 0, ffi.NULL, out, n, err) == 1
    assert lib.tp_chat_template_render(b"x", 1, ffi.NULL, 1, ffi.NULL, out, n, err) == 1
    assert lib.tp_chat_template_render(b"x", 1, arr, 1, ffi.NULL, out, n, err) == 1  # no role
    assert lib.tp_chat_template_render(b"x", 1, ffi.NULL, 0, ffi.NULL, ffi.NULL, n, err) == 1
    assert lib.tp_chat_template_render(b"x", 1, ffi.NULL, -1, ffi.NULL, out, n, err) == 1
    assert lib.tp_chat_template_render(b"{{ x }}y{{", 8, ffi.NULL, 0, ffi.NULL, out, ffi.NULL, err) == 0  # 8 bytes only
    assert ffi.string(out[0]) == b"y"  # "{{ x }}" rendered as "" (x undefined), then "y"
    _libc.free(_libc_ffi.cast("void *", int(ffi.cast("uintptr_t", out[0]))))


def test_limits() -> None:
    big = "{% for m in messages %}" + "x" * 4096 + "{% endfor %}"
    status, msg = c_render(big, [("user", 0, "a")] * 300)
    assert status == TP_ERR_UNSUPPORTED and "output longer than 1048576 bytes" in msg, msg
    nested = "{% if true %}" * 100 + "{% endif %}" * 100
    status, msg = c_render(nested, USER)
    assert status == TP_ERR_UNSUPPORTED and "nested deeper" in msg, msg
    deep = "{{ " + "(" * 100 + "1" + ")" * 100 + " }}"
    status, msg = c_render(deep, USER)
    assert status == TP_ERR_UNSUPPORTED and "nested" in msg, msg
    chain = "{{ " + " + ".join(["1"] * 400) + " }}"
    status, msg = c_render(chain, USER)
    assert status == TP_ERR_UNSUPPORTED and "nested deeper than 256" in msg, msg
    loops = "{% for a in messages %}{% for b in messages %}{% for c in messages %}{% endfor %}{% endfor %}{% endfor %}"
    status, msg = c_render(loops, [("user", 0, "a")] * 50)
    assert status == TP_ERR_UNSUPPORTED and "loop iterations" in msg, msg
    grow = "{% set s = 'ab' %}{% for a in messages %}{% set s = s ~ s %}{{ s|length }},{% endfor %}"
    status, msg = c_render(grow, [("user", 0, "a")] * 30)
    assert status == TP_OK  # each iteration starts again from the outer s (loop scoping): no growth
    assert msg == hf_render(grow, [("user", 0, "a")] * 30)


def _mutate(rng: random.Random, t: str) -> str:
    alphabet = ["{", "}", "%", "#", "-", "+", "{{", "}}", "{%", "%}", "{#", "#}", "'", '"', "\\", " ", "\n", "\r",
                "(", ")", "[", "]", ".", "|", "~", "=", "not ", " in ", " is ", "if", "endif", "for", "endfor",
                "else", "elif", "set", "loop", "0", "-1", "\u3000", "é", "\x00", "trim", "length", "defined"]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(5)
        i = rng.randrange(len(t) + 1)
        if op == 0:
            t = t[:i]
        elif op == 1:
            t = t[:i] + rng.choice(alphabet) + t[i:]
        elif op == 2:
            t = t[:i] + t[i + rng.randint(1, 8):]
        elif op == 3:
            j = rng.randrange(len(t) + 1)
            t = t[:i] + t[min(i, j):max(i, j)][:200] + t[i:]
        else:
            t = t[:i] + rng.choice(alphabet) + t[i + 1:]
    return t


def test_fuzz() -> None:
    rng = random.Random(1234)
    seeds = [TEMPLATE, _no_dash(TEMPLATE)] + list(VARIANTS.values()) + EXPRESSIONS[:8]
    conv = [("system", 0, "s"), ("user", 2, "u"), ("assistant", 0, "a")]
    counts = {TP_OK: 0, TP_ERR_FORMAT: 0, TP_ERR_UNSUPPORTED: 0}
    compared = 0
    for k in range(3000):
        template = _mutate(rng, rng.choice(seeds))
        status, got = c_render(template, conv)
        assert status in counts, (template, got)
        counts[status] += 1
        if status == TP_OK:  # whenever both render: the same text
            try:
                expected = hf_render(template, conv)
            except Exception:
                continue
            compared += 1
            assert got == expected, template
        elif status != TP_OK:
            assert re.search(r"line \d+:\d+: ", got), got
    print(counts, compared)
    assert counts[TP_OK] > 500 and counts[TP_ERR_FORMAT] > 500 and compared > 500, (counts, compared)
    for n in range(0, len(TEMPLATE.encode()) + 1, 7):  # every truncation (bytes: also mid-character)
        status, _ = c_render(TEMPLATE.encode()[:n], conv)
        assert status in counts
