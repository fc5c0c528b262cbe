"""encoder/chat_template.py against jinja2 as transformers configures it for chat templates.

The reference is transformers' own ``render_jinja_template`` (what ``apply_chat_template`` calls): the template is
compiled by ``_compile_jinja_template`` (an ``ImmutableSandboxedEnvironment`` with trim_blocks, lstrip_blocks, the
loopcontrols and generation extensions, transformers' ``tojson`` and ``raise_exception``), and the inputs are
rebuilt as plain data. Where both fail, ours must raise ``TemplateError`` (with the same message for
``raise_exception``).
"""

from __future__ import annotations

import itertools
import re
import time
from functools import lru_cache
from pathlib import Path

import gguf
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

from encoder import chat_template as ct
from encoder.chat_template import TemplateError, TemplateRaisedError, render_chat_template
from encoder.tokenizer import Tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"
PADDLE = FIXTURES / "llamacpp-tiny-paddleocr-vl"


@lru_cache(maxsize=None)
def gguf_chat_template(path: Path) -> str:
    assert path.is_file(), f"missing fixture {path}"
    field = gguf.GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def reference(template: str, messages: list, add_generation_prompt: bool = True, **variables) -> str:
    rendered, _ = render_jinja_template([messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, **variables)
    return rendered[0]


def outcome(fn, *args, **kwargs) -> tuple[str, str]:
    """("ok", text) or ("error", message of a raise_exception, else "")."""
    try:
        return "ok", fn(*args, **kwargs)
    except TemplateRaisedError as e:
        return "error", e.message
    except TemplateError:
        return "error", ""
    except Exception as e:  # the reference: jinja2 and Python errors
        from jinja2.exceptions import TemplateError as JinjaTemplateError
        from jinja2.exceptions import UndefinedError
        if type(e) is JinjaTemplateError:   # raise_exception raises exactly jinja2's TemplateError
            return "error", str(e)
        if isinstance(e, (UndefinedError, JinjaTemplateError, TypeError, ValueError, ZeroDivisionError,
                          OverflowError, AttributeError, KeyError, IndexError)):
            return "error", ""
        raise


def assert_same(template: str, messages: list, add_generation_prompt: bool = True, **variables) -> str:
    want = outcome(reference, template, messages, add_generation_prompt, **variables)
    got = outcome(render_chat_template, template, messages, add_generation_prompt=add_generation_prompt,
                  **variables)
    assert got == want, f"template {template!r}\nmessages {messages!r}"
    return got[1]


def test_reference_is_transformers_chat_environment():
    env = _compile_jinja_template("{{ x }}").environment
    assert isinstance(env, ImmutableSandboxedEnvironment)
    assert env.trim_blocks and env.lstrip_blocks and not env.keep_trailing_newline
    assert "jinja2.ext.LoopControlExtension" in env.extensions
    assert {"raise_exception", "namespace", "strftime_now", "dict"} <= set(env.globals)
    assert env.filters["tojson"]({"a": "é<"}) == '{"a": "é<"}'  # transformers' json.dumps, not jinja2's htmlsafe


# --- the fixtures' templates ------------------------------------------------------------------------------------

PADDLE_PROMPT = "<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>OCR:\nAssistant: "
OCR_MESSAGE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "OCR:"}]}]


def test_paddleocr_vl_fixture_template():
    path = PADDLE / "text-f16.gguf"
    template = gguf_chat_template(path)
    prompt = assert_same(template, OCR_MESSAGE)
    assert prompt == PADDLE_PROMPT  # the fixture README's prompt
    # reference.npz's prompt_ids are this prompt with the image placeholder repeated for the 1472 image tokens
    ids = np.load(PADDLE / "reference.npz")["prompt_ids"].tolist()
    expanded = prompt.replace("<|IMAGE_PLACEHOLDER|>", "<|IMAGE_PLACEHOLDER|>" * 1472)
    tok = Tokenizer.from_gguf(path)
    assert tok.decode(ids) == expanded
    assert tok.encode(expanded) == ids


@pytest.mark.parametrize("messages", [
    OCR_MESSAGE,
    [{"role": "system", "content": [{"type": "text", "text": "You read documents."}]}] + OCR_MESSAGE,
    OCR_MESSAGE + [{"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}]
    + [{"role": "user", "content": [{"type": "text", "text": "Table Recognition:"}, {"type": "image"}]}],
    [],
], ids=["ocr", "system", "multi-turn", "empty"])
@pytest.mark.parametrize("agp", [True, False])
def test_paddleocr_vl_fixture_template_conversations(messages, agp):
    template = gguf_chat_template(PADDLE / "text-f16.gguf")
    assert_same(template, messages, agp)
    assert_same(template, messages, agp, cls_token="<s>", eos_token="</s>", image_token="<img>")


def test_deepseek_ocr_fixture_template():
    template = gguf_chat_template(FIXTURES / "llamacpp-tiny-v1" / "text-f16.gguf")
    assert template == "{% for m in messages %}{{m['content']}}{% endfor %}"
    messages = [{"role": "user", "content": "<image>\n<|grounding|>Convert the document to markdown. "}]
    assert assert_same(template, messages) == messages[0]["content"]
    assert_same(template, messages + [{"role": "assistant", "content": "# Title"}], False)


# --- templates in the style of popular models' -------------------------------------------------------------------

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2-VL style: typed parts, a namespace counter, text between tags (trim_blocks/lstrip_blocks matter)
CHATML_VL = """{% set image_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}<|im_end|>
{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

# loop.last, set without namespace (scoped to one iteration), filters on typed parts, indented blocks
LOOP_LAST = """{# A plain transcript: roles upper-cased, parts joined. #}
{% for message in messages %}
    {% set role = message.role | upper %}
    {% if message.content is string %}
        {% set text = message.content %}
    {% else %}
        {% set text = message.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') %}
        {% set images = message.content | selectattr('type', 'equalto', 'image') | list | length %}
    {% endif %}
{{ role }}{% if images is defined and images %} [{{ images }} image{{ 's' if images > 1 else '' }}]{% endif %}: {{ text }}
    {%- if not loop.last %}

{% endif %}
{% endfor %}
{% if add_generation_prompt %}

ASSISTANT:{% endif %}
"""

# Qwen3 style: tools as JSON, reasoning split out of the content, a reversed scan with a namespace
REASONING_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- elif messages and messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_query=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if message.role == "user" and message.content is string %}
        {%- set ns.last_query = index %}
        {%- break %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + content }}
        {%- endif %}
        {%- for call in message.tool_calls or [] %}
            {%- set call = call.function if call.function else call %}
            {{- '\\n<tool_call>\\n{"name": "' + call.name + '", "arguments": ' }}
            {{- call.arguments if call.arguments is string else call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or messages[loop.index0 - 1].role != "tool" %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != "tool" %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

TEMPLATES = {"llama3": LLAMA3, "chatml": CHATML, "chatml-vl": CHATML_VL, "mistral": MISTRAL, "gemma": GEMMA,
             "zephyr": ZEPHYR, "loop-last": LOOP_LAST, "reasoning-tools": REASONING_TOOLS}

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system-user": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    "multi-turn": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "  And 3+3?\n"},
    ],
    "system-multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "<think>\nred or blue?\n</think>\n\nBlue."},
        {"role": "user", "content": "Another, with \"quotes\", {{ braces }} and ünïcödé"},
    ],
    "typed-parts": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "OCR:"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Some text"}]},
        {"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "image", "image": "a.png"},
                                     {"type": "image"}]},
    ],
    "assistant-first": [{"role": "assistant", "content": "I start"}, {"role": "user", "content": "ok"}],
    "tools": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "It is 21 °C and sunny.", "reasoning_content": "Read the tool output."},
        {"role": "user", "content": "Thanks"},
    ],
    "empty": [],
}

VARIABLES = {"bos_token": "<s>", "eos_token": "</s>"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("agp", [True, False], ids=["gen", "nogen"])
def test_popular_templates(name, conversation, agp):
    assert_same(TEMPLATES[name], CONVERSATIONS[conversation], agp, **VARIABLES)


def test_popular_templates_render_what_they_should():
    # a few outputs spelled out, so that the comparison above is known to compare real prompts
    msgs = CONVERSATIONS["system-user"]
    assert render_chat_template(LLAMA3, msgs, bos_token="<s>") == (
        "<s><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert render_chat_template(CHATML_VL, CONVERSATIONS["typed-parts"][:1], add_vision_id=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Picture 1: <|vision_start|><|image_pad|><|vision_end|>OCR:<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(TemplateRaisedError, match="Conversation roles must alternate"):
        render_chat_template(MISTRAL, CONVERSATIONS["assistant-first"], **VARIABLES)
    with pytest.raises(TemplateRaisedError, match="Only user and assistant roles are supported!"):
        render_chat_template(MISTRAL, [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
                             **VARIABLES)
    assert render_chat_template(LOOP_LAST, CONVERSATIONS["typed-parts"]) == (
        "USER [1 image]: OCR:\nASSISTANT: Some text\nUSER [2 images]: Compare\nASSISTANT:")


@pytest.mark.parametrize("conversation", ["user", "system-multi-turn", "tools"])
@pytest.mark.parametrize("extra", [{"tools": TOOLS}, {"enable_thinking": False},
                                   {"tools": TOOLS, "enable_thinking": True}],
                         ids=["tools", "no-thinking", "tools-thinking"])
def test_template_variables(conversation, extra):
    assert_same(REASONING_TOOLS, CONVERSATIONS[conversation], True, **extra)


# --- the language, piece by piece ---------------------------------------------------------------------------------

EXPRESSIONS = [
    # literals and printing
    "{{ 'a' }}{{ \"b\" }}{{ 'a' 'b' }}{{ 1 }}{{ -2 }}{{ 1.5 }}{{ 1e3 }}{{ 0x1f }}{{ 1_000 }}",
    "{{ true }}{{ false }}{{ True }}{{ none }}{{ None }}{{ [1, 'a', none] }}{{ (1,) }}{{ () }}{{ {'k': [1]} }}",
    "{{ 'esc\\n\\t\\u00e9\\x41' }}{{ '\\'' }}{{ \"\\\"\" }}",
    "{{ 1, 2 }}{{ [] }}{{ {} }}{{ [1, 2,] }}",
    # arithmetic and strings
    "{{ 1 + 2 }}{{ 'a' + 'b' }}{{ [1] + [2] }}{{ 7 - 10 }}{{ 2 * 3 }}{{ 'ab' * 3 }}{{ 7 / 2 }}{{ 7 // 2 }}{{ 7 % 3 }}",
    "{{ 2 ** 10 }}{{ 2 ** 3 ** 2 }}{{ -7 // 2 }}{{ 10 - 2 - 3 }}{{ - - 1 }}{{ +3 }}{{ 1.5 + 1 }}{{ true + 1 }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ u }}{{ 1 ~ 2 }}",
    "{{ 1 + 2 ~ 3 }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    # comparisons and logic
    "{{ 1 == 1.0 }}{{ 'a' != 'b' }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 'abc' <= 'abd' }}{{ [1, 2] == [1, 2] }}",
    "{{ 'a' in 'abc' }}{{ 1 in [1, 2] }}{{ 'k' in {'k': 1} }}{{ 3 not in [1] }}{{ 'x' in u }}{{ u in [1] }}",
    "{{ 1 and 'x' }}{{ 0 and 'x' }}{{ 0 or [] }}{{ 'a' or 'b' }}{{ not 0 }}{{ not 1 == 2 }}{{ not not 'x' }}",
    "{{ 'y' if 1 else 'n' }}{{ 'y' if 0 else 'n' }}{{ 'y' if 0 }}|{{ 'a' if u is none else 'b' }}",
    "{{ u == u2 }}{{ u != 1 }}{{ 1 < u }}",
    # access
    "{{ m.role }}{{ m['role'] }}{{ m.missing }}|{{ m['missing'] }}|{{ m.content[0] }}{{ m.content[-1] }}",
    "{{ m.content[5] }}|{{ m.content[1:] }}{{ m.content[::-1] }}{{ m.content[:1] }}{{ 'hello'[1:3] }}{{ l.0 }}",
    "{{ m.missing.deeper }}",
    "{{ u.x }}",
    "{{ m.get('role') }}{{ m.get('nope', 'dflt') }}{{ m.get('nope') }}{{ m.keys() | list }}{{ m.items() | list }}",
    "{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}{% for k in m %}{{ k }},{% endfor %}",
    "{{ 'abc'.foo }}|{{ [1].foo }}|{{ none.foo }}|{{ 'abc'['x'] }}|{{ [1][7] }}|",
    # string methods
    "{{ ' a b '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a b  c'.split() }}{{ 'a,b,c'.split(',', 1) }}",
    "{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}",
    "{{ '\\nx\\n'.lstrip('\\n') }}|{{ 'x\\n\\n'.rstrip() }}|{{ 'a-b'.replace('-', '+') }}{{ ', '.join(['a', 'b']) }}",
    "{{ 'hello world'.title() }}{{ 'abc'.find('c') }}{{ 'a\\nb'.splitlines() }}{{ '12'.isdigit() }}",
    # filters
    "{{ '  x  ' | trim }}|{{ 'xyx' | trim('x') }}|{{ [1, 2] | length }}{{ 'abc' | length }}{{ u | length }}",
    "{{ 'Ab' | upper }}{{ 'Ab' | lower }}{{ 'hello WORLD' | capitalize }}{{ 'hello-world foo(bar' | title }}",
    "{{ {'a': 'é<>&', 'b': [1, none, true, 1.5]} | tojson }}",
    "{{ {'b': 1, 'a': {'c': [1, 2]}} | tojson(indent=2) }}{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}",
    "{{ ['x'] | tojson(separators=(',', ':')) }}{{ 'é' | tojson(ensure_ascii=true) }}",
    "{{ u | default('d') }}{{ none | default('d') }}{{ none | default('d', true) }}{{ '' | d('e', true) }}",
    "{{ [1, 2] | join(',') }}{{ ['a', none] | join }}{{ u | join }}{{ [{'n': 'x'}, {'n': 'y'}] | join('-', 'n') }}",
    "{{ [3, 4] | first }}{{ [3, 4] | last }}{{ 'abc' | first }}{{ [] | first }}|{{ {'k': 1} | first }}",
    "{{ 1 | string }}{{ none | string }}{{ u | string }}|{{ '3' | int }}{{ '3.7' | int }}{{ 'x' | int }}{{ 3.9 | int }}",
    "{{ 'x' | int(5) }}{{ '1.5' | float }}{{ 'x' | float }}{{ 'abc' | list }}{{ {'a': 1} | items | list }}",
    "{{ 'abc' | reverse }}{{ 'a-b-c' | replace('-', '+') }}{{ 'aaa' | replace('a', 'b', 2) }}{{ -3 | abs }}",
    "{{ ms | map(attribute='role') | join(',') }}{{ ms | map(attribute='content') | map('upper') | list }}",
    "{{ ms | selectattr('role', 'equalto', 'user') | list }}{{ ms | rejectattr('role', 'eq', 'user') | list }}",
    "{{ ms | selectattr('flag') | list | length }}",
    "{{ 3 | length }}",
    "{{ u | tojson }}",
    # tests
    "{{ u is defined }}{{ u is undefined }}{{ m is defined }}{{ none is none }}{{ u is none }}{{ 0 is none }}",
    "{{ 'a' is string }}{{ 1 is string }}{{ m is mapping }}{{ [1] is mapping }}{{ 'a' is iterable }}{{ 1 is iterable }}",
    "{{ u is iterable }}{{ [1] is sequence }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}",
    "{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 2 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}",
    "{{ 9 is divisibleby(2) }}{{ 1 is eq 1 }}{{ 1 is ne 1 }}{{ 1 is lt 2 }}{{ 'a' is in 'abc' }}{{ 'AB' is upper }}",
    "{{ x is not none }}{{ not x is none }}{{ m.role is string and m.content is string }}{{ m.role is defined }}",
    "{{ none is sameas none }}{{ 1 is ge 1 }}{{ 1 is gt 1 }}{{ 'ab' is lower }}",
    # globals
    "{{ range(3) | list }}{{ range(1, 10, 4) | list }}{% for i in range(3) %}{{ i }}{% endfor %}",
    "{% set ns = namespace(a=1, b='x') %}{% set ns.a = ns.a + 1 %}{{ ns.a }}{{ ns.b }}{{ ns.c }}|{{ ns }}",
    "{{ dict(a=1) }}{{ dict({'a': 1}, b=2) }}{{ raise_exception is defined }}",
    "{{ raise_exception('bad input: ' ~ m.role) }}",
    "{% set x = 1 %}{% set x.a = 2 %}",
    # statements and scoping
    "{% if 0 %}a{% elif u %}b{% elif 1 %}c{% else %}d{% endif %}{% if [] %}e{% else %}f{% endif %}",
    "{% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
    "{% for i in [1, 2] %}{% if i == 2 %}{{ y }}{% endif %}{% set y = i %}{% endfor %}|{{ y }}",
    "{% for i in [1, 2] %}{% for j in [3] %}{% set x = j %}{% endfor %}{{ x }}{% endfor %}",
    "{% if true %}{% set z = 3 %}{% endif %}{{ z }}{% set x = 5 %}{{ x }}",
    "{% for i in [] %}a{% else %}{% set z = 1 %}b{% endfor %}{{ z }}{% for i in u %}c{% else %}d{% endfor %}",
    "{% for i in [1, 2, 3] if i != 2 %}{{ loop.index }}{{ i }}{{ loop.length }}{% endfor %}",
    "{% for i in 'ab' %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
    "{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.cycle('x', 'y') }}"
    "{% endfor %}",
    "{% for i in [1, 2] %}{% for j in [3, 4] %}{{ loop.index }}{% endfor %}{{ loop.index }}{% endfor %}{{ loop }}",
    "{% for a, b in [(1, 2), [3, 4]] %}{{ a }}{{ b }}{% endfor %}{% set p, q = 'xy' %}{{ q }}{{ p }}",
    "{% for i in [1, 2, 3, 4] %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}"
    "{{ i }}{% endfor %}",
    "{% set block %}a{{ 1 }}b{% endset %}{{ block }}|{{ block | length }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, %}{{ t }}",
    "{% generation %}gen {{ m.role }}{% set g = 1 %}{{ g }}{% endgeneration %}{{ g }}",
    "{% set x = 1 %}{% set y %}{{ x }}{% set x = 2 %}{{ x }}{% endset %}{{ y }}{{ x }}",
    "{% raw %}{{ not evaluated }}{% if %}{% endraw %}",
    "{# a comment {{ x }} #}after{#- trimmed -#}   x",
    "{{ messages | length }}{{ add_generation_prompt }}{{ tools }}{{ documents }}{{ tools is defined }}",
]

VALUES = {"m": {"role": "user", "content": "hello"}, "l": [7, 8], "x": 0,
          "ms": [{"role": "user", "content": "a", "flag": True}, {"role": "assistant", "content": "b"}]}


@pytest.mark.parametrize("template", EXPRESSIONS)
def test_expressions_and_statements(template):
    assert_same(template, [{"role": "user", "content": "hi"}], True, **VALUES)


def test_whitespace_control_matrix():
    befores = ["", "a", "a  ", "a\n", "a\n \t", "  ", "\n\n  "]
    afters = ["", "b", " b", "\nb", "\n\n", "  \n  b"]
    checked = 0
    for before, after, (op, cl) in itertools.product(befores, afters, itertools.product(
            ["{%", "{%-", "{%+"], ["%}", "-%}", "+%}"])):
        for template in (f"{before}{op} if true {cl}{after}X{before}{op} endif {cl}{after}",
                         f"{before}{op} for i in [1, 2] {cl}{after}{{{{ i }}}}{before}{op} endfor {cl}{after}",
                         f"{before}{op.replace('%', '#')} c {cl.replace('%', '#')}{after}",
                         f"{before}{op.replace('%', '{')} 'v' {cl.replace('%', '}').replace('+}', '}')}{after}",
                         f"{before}{op} raw {cl}{after}{{{{x}}}}{before}{op} endraw {cl}{after}"):
            assert_same(template, [])
            checked += 1
    assert checked == len(befores) * len(afters) * 9 * 5


def test_line_endings_and_trailing_newline():
    for template in ("a\r\nb{% if true %}\r\nc{% endif %}\r\n", "x\n", "x\n\n", "\n", "{{ 'a' }}\r", "a\rb"):
        assert_same(template, [])


def test_inputs_are_plain_data_like_transformers():
    class Image:  # noqa: D401 - a stand-in for a PIL image in a content part
        pass

    messages = [{"role": "user", "content": [{"type": "image", "image": Image()}, {"type": "text", "text": "x"}]},
                {"role": "assistant", "content": "y", "reasoning": "because"}]
    template = ("{% for m in messages %}{{ m.content }}|{{ m.reasoning_content }}|{{ m.thinking }}|"
                "{{ m.reasoning }}{% endfor %}{{ n }}")
    out = assert_same(template, messages, n=np.int64(3))
    assert "'image': '<Image>'" in out and "because|because|because" in out and out.endswith("3")


# --- refusals and bounds -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("template, message", [
    ("{% frobnicate %}", "unknown tag 'frobnicate'"),
    ("{% macro f() %}x{% endmacro %}", "unsupported tag 'macro'"),
    ("{% include 'other.j2' %}", "unsupported tag 'include'"),
    ("{% if x %}abc", "unterminated 'if' block"),
    ("{% for m in messages %}{{ m }}", "unterminated 'for' block"),
    ("{% if x %}a{% endfor %}", "unexpected tag 'endfor'"),
    ("{{ x ", "unterminated tag"),
    ("{# no end", "missing end of comment tag"),
    ("{{ ) }}", "unexpected ')'"),
    ("{{ x | frobnicate }}", "unsupported filter 'frobnicate'"),
    ("{{ x is frobnicate }}", "unsupported test 'frobnicate'"),
    ("{{ messages.__class__ }}", "refused: access to attribute '__class__'"),
    ("{{ ''.__class__.__mro__ }}", "refused: access to attribute '__class__'"),
    ("{{ messages['__class__'] }}", "refused: access to attribute '__class__'"),
    ("{{ m['__init__'] }}", "refused"),
    ("{{ raise_exception.__globals__ }}", "refused"),
    ("{% set ns = namespace() %}{% set ns.__dict__ = 1 %}", "refused: namespace attribute '__dict__'"),
    ("{{ namespace(_x=1) }}", "refused"),
    ("{{ '{0.__class__}'.format(1) }}", "unsupported: the str method 'format'"),
    ("{{ '%s' % 3 }}", "unsupported: string formatting with '%'"),
    ("{{ messages.append(1) }}", "unsupported: the attribute 'append'"),
    ("{{ m.pop('role') }}", "unsupported: the dict method 'pop'"),
    ("{% for x in [1] recursive %}{% endfor %}", "unsupported: recursive for loops"),
    ("{% break %}", "'break' outside of a loop"),
    ("{% for i in [1] %}{% generation %}{% continue %}{% endgeneration %}{% endfor %}", "'continue' outside"),
    ("{{ f(*args) }}", "unsupported: *args"),
    ("{{ range(1000000) | length }}", "range too big"),
    ("{{ 10 ** 10 ** 10 }}", "integer result exceeds"),
    ("{{ 'a' * 100000000 }}", "a string exceeds"),
    ("{{ " + "(" * 100 + "1" + ")" * 100 + " }}", "nested more than"),
    ("{% if true %}" * 100 + "{% endif %}" * 100, "nested more than"),
    ("{{ " + "not " * 2000 + "1 }}", "nested too deeply"),
    ("{{ " + "+".join(["1"] * 5000) + " }}", "too deeply"),
])
def test_refused(template, message):
    with pytest.raises(TemplateError, match=re.escape(message)) as info:
        render_chat_template(template, [], m={"role": "user"})
    assert not isinstance(info.value, TemplateRaisedError)


def test_error_positions():
    with pytest.raises(TemplateError) as info:
        render_chat_template("line one\n  {{ m.role }} {% frobnicate %}", [])
    assert (info.value.line, info.value.column) == (2, 19)
    assert str(info.value) == "unknown tag 'frobnicate' (line 2, column 19)"
    with pytest.raises(TemplateError) as info:
        render_chat_template("{% for m in messages %}\n{{ m.content.__class__ }}{% endfor %}",
                             [{"role": "user", "content": "x"}])
    assert (info.value.line, info.value.column) == (2, 14)


@pytest.mark.parametrize("template, message", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "loops ran more than"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "the rendered text exceeds"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "a string exceeds"),
    ("{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
     "too large"),
    ("{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}"
     "{{ ns.x | tojson }}", "too large"),
    ("{% set ns = namespace(s=['a' * 100000]) %}{% for i in range(30) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
     "{{ ns.s | join(',') }}", "more than"),
    ("{% for i in range(100000) %}{{ 1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1 }}{% endfor %}",
     "evaluation steps"),
])
def test_hostile_templates_are_bounded(template, message):
    start = time.perf_counter()
    with pytest.raises(TemplateError, match=message):
        render_chat_template(template, [])
    assert time.perf_counter() - start < 20


def test_limits_are_module_constants():
    assert ct.MAX_RANGE == 100_000 and ct.MAX_LOOP_ITERATIONS >= 10_000 and ct.MAX_OUTPUT_CHARS >= 1 << 20


def test_bad_arguments():
    with pytest.raises(TemplateError, match="must be a string"):
        render_chat_template(None, [])  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match="messages must be a list"):
        render_chat_template("x", "hello")  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match="must be dicts"):
        render_chat_template("x", ["hello"])  # type: ignore[list-item]


def test_chat_template_object_renders_repeatedly():
    template = ct.ChatTemplate(CHATML)
    for conversation in ("user", "system-multi-turn"):
        assert template.render(CONVERSATIONS[conversation]) == reference(CHATML, CONVERSATIONS[conversation])
