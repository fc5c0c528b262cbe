"""Render a GGUF's ``tokenizer.chat_template`` without jinja2.

Chat templates are Jinja templates as Hugging Face checkpoints ship them. This module is a small, safe
interpreter of the Jinja subset they use, reproducing what transformers' ``apply_chat_template`` renders: its
environment is jinja2's ``ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[AssistantTracker, loopcontrols])`` with its own ``tojson`` filter (``json.dumps``, not HTML-safe) and
the globals ``raise_exception``, ``strftime_now``, ``dict`` and ``namespace``
(``transformers/utils/chat_template_utils.py: _compile_jinja_template``); ``render_jinja_template`` passes
``messages``, ``tools`` (None), ``documents`` (None), ``add_generation_prompt`` and the caller's variables, after
rebuilding every input out of plain JSON types (anything else becomes a ``"<TypeName>"`` placeholder) and
copying a message's reasoning into ``reasoning_content`` and ``thinking``. Both are done here too.

    render_chat_template(template, messages, add_generation_prompt=True, bos_token="<s>")

Supported:

- text, ``{{ expr }}``, ``{% ... %}``, ``{# ... #}``, ``{% raw %}``; whitespace control ``{%-``/``-%}``/``{{-``/
  ``-}}``/``{#-``/``-#}`` and ``+``; trim_blocks and lstrip_blocks exactly as jinja2's lexer applies them; one
  trailing newline of the template dropped (keep_trailing_newline=False).
- statements: ``if``/``elif``/``else``/``endif``; ``for`` (tuple targets, ``if`` filter, ``else``, ``loop.index0``,
  ``index``, ``revindex``, ``revindex0``, ``first``, ``last``, ``length``, ``previtem``, ``nextitem``,
  ``depth``, ``cycle()``) with Jinja's scoping (a ``set`` inside a loop lasts one iteration); ``set`` (names, tuple
  targets, ``namespace`` attributes, block ``set``/``endset``); ``break``/``continue``; ``generation``/
  ``endgeneration`` (rendered as its body, in a scope of its own, as transformers renders it).
- expressions: string/int/float/bool/none literals, list/tuple/dict literals, names, ``a.b``, ``a["b"]``,
  ``a[0]``, slices, calls, ``+ - * / // % **``, ``~``, comparisons (chained), ``in``/``not in``, ``and``/``or``/
  ``not``, ``x if c else y``, filters and tests.
- filters: trim, length, count, upper, lower, capitalize, title, tojson (transformers'), default/d, join, first,
  last, string, int, float, list, items, reverse, replace, safe, abs, map (attribute= or a filter name),
  selectattr, rejectattr.
- tests: defined, undefined, none, string, mapping, iterable, sequence, number, integer, float, boolean, true,
  false, even, odd, divisibleby, eq/equalto/==, ne/!=, lt/<, le/<=, gt/>, ge/>=, in, sameas, lower, upper.
- globals: raise_exception(msg) (raises ``TemplateRaisedError``), namespace(...), range(...) (at most 100000
  items, as jinja2's sandbox), dict(...), strftime_now(fmt).
- methods: str.startswith/endswith/strip/lstrip/rstrip/split/rsplit/splitlines/upper/lower/title/capitalize/
  replace/find/rfind/count/join/isdigit/isalpha/isalnum/isspace; dict.get/items/keys/values.
- undefined names and missing keys are Jinja's default ``Undefined``: falsy, render as "", iterate as empty,
  ``is defined`` false; attribute access, arithmetic or ordering on them is an error.

Not supported (``TemplateError`` naming the construct and its line and column): macros, ``call``, ``include``,
``import``, ``extends``, ``block``, ``with``, ``filter`` blocks, recursive loops, ``*args``/``**kwargs`` in
calls, string formatting with ``%``, and every filter, test, method or attribute not listed above. Attributes
starting with ``_`` are refused.
The interpreter only ever touches plain data (str, numbers, bool, None, list, tuple, dict) and its own objects;
it never calls anything outside the lists above. Work is bounded: loop iterations, evaluation steps, output
size, ``range`` size, integer size and nesting depth have limits (``MAX_*`` below); past one, ``TemplateError``.
Differences from jinja2 that remain: where jinja2 prints a Python object's repr with a memory address (a method,
a generator from ``map``/``items``), this prints a list or a placeholder; where its sandbox renders an unsafe
attribute (``x.__class__``) as empty, this refuses it; its Python errors (TypeError, ...) are ``TemplateError``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Sequence

__all__ = ["TemplateError", "TemplateRaisedError", "ChatTemplate", "render_chat_template"]

MAX_TEMPLATE_CHARS = 1 << 20
MAX_OUTPUT_CHARS = 16 << 20          # the rendered prompt, and any one string built on the way
MAX_LOOP_ITERATIONS = 100_000        # over the whole render
MAX_STEPS = 1_000_000                # evaluation work over the whole render (nodes evaluated, items walked)
MAX_RANGE = 100_000                  # jinja2's sandbox MAX_RANGE
MAX_NESTING = 64                     # brackets/blocks nested in the template
MAX_INT_BITS = 256
MAX_VALUE_NODES = 250_000            # items in a list the template builds, or a value it prints/compares/serialises

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class TemplateError(ValueError):
    """A chat template that can't be parsed or rendered; ``line``/``column`` locate it (1-based) when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.line = line
        self.column = column
        super().__init__(message if line is None else f"{message} (line {line}, column {column})")


class TemplateRaisedError(TemplateError):
    """The template itself failed the render: ``raise_exception(message)``."""


class _Failure(Exception):
    """An error inside the evaluator; given its position where the node that met it is known."""

    def __init__(self, message: str, pos: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


class _Raised(_Failure):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Lexer: jinja2's rules (jinja2/lexer.py) for the default delimiters, trim_blocks=True, lstrip_blocks=True.

_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
_ROOT_RE = re.compile(r"(?P<raw>\{%(?P<raw_sign>[-+]?)\s*raw\s*(?:-%\}\s*|%\}))|\{(?P<kind>[{%#])(?P<sign>[-+]?)")
_COMMENT_END_RE = re.compile(r"\+#\}|-#\}\s*|#\}\n?")
_RAW_END_RE = re.compile(r"\{%(?P<sign>[-+]?)\s*endraw\s*(?:\+%\}|-%\}\s*|%\}\n?)")
_BLOCK_END_RE = re.compile(r"\+%\}|-%\}\s*|%\}\n?")
_VAR_END_RE = re.compile(r"-\}\}\s*|\}\}")
_WS_RE = re.compile(r"\s+")
_FLOAT_RE = re.compile(r"(?<!\.)(\d+_)*\d+((\.(\d+_)*\d+)?e[+\-]?(\d+_)*\d+|\.(\d+_)*\d+)", re.I)
_INT_RE = re.compile(r"0b(_?[0-1])+|0o(_?[0-7])+|0x(_?[\da-f])+|[1-9](_?\d)*|0(_?0)*", re.I)
_NAME_RE = re.compile(r"[^\W\d]\w*")
_STRING_RE = re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)'|\"([^\"\\]*(?:\\.[^\"\\]*)*)\"", re.S)
_OP_RE = re.compile(r"//|\*\*|==|!=|>=|<=|[+\-/*%~\[\](){}=.:|,;<>]")
_OPEN = {"(": ")", "[": "]", "{": "}"}


@dataclasses.dataclass(frozen=True)
class _Tok:
    type: str      # "name", "string", "integer", "float", an operator ("+", "(", ...), or "end"
    value: Any
    pos: int


@dataclasses.dataclass(frozen=True)
class _Item:
    kind: str      # "data", "var" or "block"
    value: Any     # the text (data) or the tag's tokens, ending with an "end" token
    pos: int


def _normalise_source(source: str) -> str:
    lines = _NEWLINE_RE.split(source)
    if lines[-1] == "":        # keep_trailing_newline=False: one trailing newline goes
        del lines[-1]
    return "\n".join(lines)


def _strip_before_tag(text: str, sign: str, lstrip: bool, line_starting: bool) -> str:
    if sign == "-":
        return text.rstrip()
    if sign != "+" and lstrip:
        l_pos = text.rfind("\n") + 1
        if (l_pos > 0 or line_starting) and _WS_RE.fullmatch(text, l_pos):
            return text[:l_pos]
    return text


def _lex(source: str) -> list[_Item]:
    items: list[_Item] = []
    pos, n, line_starting = 0, len(source), True
    while pos < n:
        m = _ROOT_RE.search(source, pos)
        if m is None:
            items.append(_Item("data", source[pos:], pos))
            break
        kind = "raw" if m.group("raw") else m.group("kind")
        sign = m.group("raw_sign") if kind == "raw" else m.group("sign")
        text = _strip_before_tag(source[pos:m.start()], sign, kind != "{", line_starting)
        if text:
            items.append(_Item("data", text, pos))
        if kind == "#":
            end = _COMMENT_END_RE.search(source, m.end())
            if end is None:
                raise _error(source, m.start(), "missing end of comment tag '#}'")
            pos = end.end()
        elif kind == "raw":
            end = _RAW_END_RE.search(source, m.end())
            if end is None:
                raise _error(source, m.start(), "missing end of raw block '{% endraw %}'")
            body = _strip_before_tag(source[m.end():end.start()], end.group("sign"), True,
                                     m.group().endswith("\n"))
            if body:
                items.append(_Item("data", body, m.end()))
            pos = end.end()
        else:
            toks, pos = _lex_tag(source, m.end(), kind, m.start())
            items.append(_Item("var" if kind == "{" else "block", toks, m.start()))
        line_starting = source[pos - 1:pos] == "\n"
    return items


def _lex_tag(source: str, pos: int, kind: str, start: int) -> tuple[list[_Tok], int]:
    end_re = _VAR_END_RE if kind == "{" else _BLOCK_END_RE
    what = "'}}'" if kind == "{" else "'%}'"
    toks: list[_Tok] = []
    balance: list[str] = []
    n = len(source)
    while True:
        if pos >= n:
            raise _error(source, start, f"unterminated tag: missing {what}")
        if not balance:
            m = end_re.match(source, pos)
            if m is not None:
                toks.append(_Tok("end", None, pos))
                return toks, m.end()
        m = _WS_RE.match(source, pos)
        if m is not None:
            pos = m.end()
            continue
        if (m := _FLOAT_RE.match(source, pos)) is not None:
            toks.append(_Tok("float", float(m.group().replace("_", "")), pos))
        elif (m := _INT_RE.match(source, pos)) is not None:
            toks.append(_Tok("integer", int(m.group().replace("_", ""), 0), pos))
        elif (m := _NAME_RE.match(source, pos)) is not None:
            toks.append(_Tok("name", m.group(), pos))
        elif (m := _STRING_RE.match(source, pos)) is not None:
            try:
                value = m.group()[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")
            except UnicodeDecodeError as e:
                raise _error(source, pos, f"bad escape in string literal: {e.reason}") from None
            toks.append(_Tok("string", value, pos))
        elif (m := _OP_RE.match(source, pos)) is not None:
            op = m.group()
            if op in _OPEN:
                if len(balance) >= MAX_NESTING:
                    raise _error(source, pos, f"brackets nested more than {MAX_NESTING} deep")
                balance.append(_OPEN[op])
            elif op in (")", "]", "}"):
                if not balance:
                    raise _error(source, pos, f"unexpected '{op}'")
                want = balance.pop()
                if want != op:
                    raise _error(source, pos, f"unexpected '{op}', expected '{want}'")
            toks.append(_Tok(op, op, pos))
        else:
            raise _error(source, pos, f"unexpected character {source[pos]!r}")
        pos = m.end()


def _line_col(source: str, pos: int) -> tuple[int, int]:
    return source.count("\n", 0, pos) + 1, pos - source.rfind("\n", 0, pos)


def _error(source: str, pos: int, message: str) -> TemplateError:
    return TemplateError(message, *_line_col(source, pos))


# ---------------------------------------------------------------------------------------------------------------
# AST

class _Node:
    __slots__ = ("pos",)


class _Const(_Node):
    __slots__ = ("value",)

    def __init__(self, value: Any, pos: int) -> None:
        self.value, self.pos = value, pos


class _Name(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str, pos: int) -> None:
        self.name, self.pos = name, pos


class _NSRef(_Node):
    __slots__ = ("name", "attr")

    def __init__(self, name: str, attr: str, pos: int) -> None:
        self.name, self.attr, self.pos = name, attr, pos


class _Seq(_Node):
    """A list or tuple literal (also an assignment target tuple)."""
    __slots__ = ("items", "is_tuple")

    def __init__(self, items: list[_Node], is_tuple: bool, pos: int) -> None:
        self.items, self.is_tuple, self.pos = items, is_tuple, pos


class _DictLit(_Node):
    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[_Node, _Node]], pos: int) -> None:
        self.pairs, self.pos = pairs, pos


class _Getattr(_Node):
    __slots__ = ("obj", "attr")

    def __init__(self, obj: _Node, attr: str, pos: int) -> None:
        self.obj, self.attr, self.pos = obj, attr, pos


class _Getitem(_Node):
    __slots__ = ("obj", "arg")

    def __init__(self, obj: _Node, arg: _Node, pos: int) -> None:
        self.obj, self.arg, self.pos = obj, arg, pos


class _Slice(_Node):
    __slots__ = ("start", "stop", "step")

    def __init__(self, start: _Node | None, stop: _Node | None, step: _Node | None, pos: int) -> None:
        self.start, self.stop, self.step, self.pos = start, stop, step, pos


class _Call(_Node):
    __slots__ = ("func", "args", "kwargs")

    def __init__(self, func: _Node, args: list[_Node], kwargs: list[tuple[str, _Node]], pos: int) -> None:
        self.func, self.args, self.kwargs, self.pos = func, args, kwargs, pos


class _Filter(_Node):
    __slots__ = ("node", "name", "args", "kwargs")

    def __init__(self, node: _Node, name: str, args: list[_Node], kwargs: list[tuple[str, _Node]],
                 pos: int) -> None:
        self.node, self.name, self.args, self.kwargs, self.pos = node, name, args, kwargs, pos


class _Test(_Filter):
    __slots__ = ()


class _Unary(_Node):
    __slots__ = ("op", "node")

    def __init__(self, op: str, node: _Node, pos: int) -> None:
        self.op, self.node, self.pos = op, node, pos


class _BinOp(_Node):
    __slots__ = ("op", "left", "right")

    def __init__(self, op: str, left: _Node, right: _Node, pos: int) -> None:
        self.op, self.left, self.right, self.pos = op, left, right, pos


class _Concat(_Node):
    __slots__ = ("items",)

    def __init__(self, items: list[_Node], pos: int) -> None:
        self.items, self.pos = items, pos


class _Compare(_Node):
    __slots__ = ("first", "ops")

    def __init__(self, first: _Node, ops: list[tuple[str, _Node]], pos: int) -> None:
        self.first, self.ops, self.pos = first, ops, pos


class _CondExpr(_Node):
    __slots__ = ("test", "then", "otherwise")

    def __init__(self, test: _Node, then: _Node, otherwise: _Node | None, pos: int) -> None:
        self.test, self.then, self.otherwise, self.pos = test, then, otherwise, pos


# statements
class _Output(_Node):
    __slots__ = ("text",)

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos = text, pos


class _Print(_Node):
    __slots__ = ("expr",)

    def __init__(self, expr: _Node, pos: int) -> None:
        self.expr, self.pos = expr, pos


class _If(_Node):
    __slots__ = ("branches", "otherwise")

    def __init__(self, branches: list[tuple[_Node, list[_Node]]], otherwise: list[_Node], pos: int) -> None:
        self.branches, self.otherwise, self.pos = branches, otherwise, pos


class _For(_Node):
    __slots__ = ("target", "iter", "cond", "body", "otherwise")

    def __init__(self, target: _Node, iter_: _Node, cond: _Node | None, body: list[_Node],
                 otherwise: list[_Node], pos: int) -> None:
        self.target, self.iter, self.cond, self.body, self.otherwise, self.pos = (
            target, iter_, cond, body, otherwise, pos)


class _Set(_Node):
    __slots__ = ("target", "expr")

    def __init__(self, target: _Node, expr: _Node, pos: int) -> None:
        self.target, self.expr, self.pos = target, expr, pos


class _SetBlock(_Node):
    __slots__ = ("target", "body")

    def __init__(self, target: _Node, body: list[_Node], pos: int) -> None:
        self.target, self.body, self.pos = target, body, pos


class _Block(_Node):
    """``{% generation %}``: renders its body."""
    __slots__ = ("body",)

    def __init__(self, body: list[_Node], pos: int) -> None:
        self.body, self.pos = body, pos


class _LoopControl(_Node):
    __slots__ = ("kind",)

    def __init__(self, kind: str, pos: int) -> None:
        self.kind, self.pos = kind, pos


# ---------------------------------------------------------------------------------------------------------------
# Parser: jinja2's grammar (jinja2/parser.py) for the supported statements and expressions.

_UNSUPPORTED_TAGS = frozenset({"macro", "endmacro", "call", "endcall", "include", "import", "from", "extends",
                               "block", "endblock", "with", "endwith", "filter", "endfilter", "autoescape",
                               "endautoescape", "do", "print", "trans", "endtrans"})
_COMPARE_OPS = frozenset({"==", "!=", "<", ">", "<=", ">="})
_CONSTANTS = {"true": True, "True": True, "false": False, "False": False, "none": None, "None": None}


class _Tokens:
    """The tokens of one tag."""

    def __init__(self, toks: list[_Tok], parser: "_Parser") -> None:
        self.toks, self.i, self.parser = toks, 0, parser

    @property
    def current(self) -> _Tok:
        return self.toks[self.i]

    def look(self) -> _Tok:
        return self.toks[min(self.i + 1, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.type != "end":
            self.i += 1
        return tok

    def is_name(self, value: str) -> bool:
        tok = self.toks[self.i]
        return tok.type == "name" and tok.value == value

    def skip_name(self, value: str) -> bool:
        if self.is_name(value):
            self.i += 1
            return True
        return False

    def expect(self, type_: str, what: str | None = None) -> _Tok:
        tok = self.current
        if tok.type != type_:
            raise self.parser.fail(tok.pos, f"expected {what or repr(type_)}, got {_describe(tok)}")
        return self.next()

    def expect_end(self, what: str) -> None:
        tok = self.current
        if tok.type != "end":
            raise self.parser.fail(tok.pos, f"expected end of {what}, got {_describe(tok)}")


def _describe(tok: _Tok) -> str:
    if tok.type == "end":
        return "end of tag"
    if tok.type == "string":
        return f"string {tok.value!r}"
    return repr(str(tok.value))


class _Parser:
    def __init__(self, source: str, items: list[_Item]) -> None:
        self.source, self.items, self.i = source, items, 0
        self.loop_depth = 0
        self.block_depth = 0

    def fail(self, pos: int, message: str) -> TemplateError:
        return _error(self.source, pos, message)

    # statements ------------------------------------------------------------------------------------------------
    def parse(self) -> list[_Node]:
        body, end = self.subparse(())
        assert end is None
        return body

    def subparse(self, end_tags: tuple[str, ...], opened: tuple[str, int] | None = None
                 ) -> tuple[list[_Node], tuple[str, _Tokens, int] | None]:
        body: list[_Node] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if item.kind == "data":
                body.append(_Output(item.value, item.pos))
                continue
            toks = _Tokens(item.value, self)
            if item.kind == "var":
                expr = self.parse_tuple(toks)
                toks.expect_end("print statement '}}'")
                body.append(_Print(expr, item.pos))
                continue
            tag = toks.current
            if tag.type != "name":
                raise self.fail(tag.pos, f"expected a tag name, got {_describe(tag)}")
            if tag.value in end_tags:
                toks.next()
                return body, (tag.value, toks, item.pos)
            body.append(self.parse_statement(toks, item.pos))
        if end_tags:
            name, pos = opened if opened else ("block", len(self.source))
            raise self.fail(pos, f"unterminated '{name}' block: expected "
                                 + " or ".join(f"'{t}'" for t in end_tags) + " before the end of the template")
        return body, None

    def parse_body(self, end_tags: tuple[str, ...], opened: tuple[str, int]
                   ) -> tuple[list[_Node], str, _Tokens]:
        self.block_depth += 1
        if self.block_depth > MAX_NESTING:
            raise self.fail(opened[1], f"blocks nested more than {MAX_NESTING} deep")
        body, end = self.subparse(end_tags, opened)
        self.block_depth -= 1
        assert end is not None
        return body, end[0], end[1]

    def parse_statement(self, toks: _Tokens, pos: int) -> _Node:
        tag = toks.next()
        name = tag.value
        if name == "if":
            return self.parse_if(toks, pos)
        if name == "for":
            return self.parse_for(toks, pos)
        if name == "set":
            return self.parse_set(toks, pos)
        if name == "generation":
            toks.expect_end("'generation' tag")
            loop_depth, self.loop_depth = self.loop_depth, 0    # its body is a macro: no break/continue
            body, _, end = self.parse_body(("endgeneration",), ("generation", pos))
            self.loop_depth = loop_depth
            end.expect_end("'endgeneration' tag")
            return _Block(body, pos)
        if name in ("break", "continue"):
            if self.loop_depth == 0:
                raise self.fail(tag.pos, f"'{name}' outside of a loop")
            toks.expect_end(f"'{name}' tag")
            return _LoopControl(name, pos)
        if name in _UNSUPPORTED_TAGS:
            raise self.fail(tag.pos, f"unsupported tag '{name}'")
        if name.startswith("end") or name in ("elif", "else"):
            raise self.fail(tag.pos, f"unexpected tag '{name}'")
        raise self.fail(tag.pos, f"unknown tag '{name}'")

    def parse_if(self, toks: _Tokens, pos: int) -> _Node:
        branches: list[tuple[_Node, list[_Node]]] = []
        test = self.parse_tuple(toks, with_condexpr=False)
        while True:
            toks.expect_end("'if' condition")
            body, end, toks = self.parse_body(("elif", "else", "endif"), ("if", pos))
            branches.append((test, body))
            if end == "elif":
                test = self.parse_tuple(toks, with_condexpr=False)
                continue
            otherwise: list[_Node] = []
            if end == "else":
                toks.expect_end("'else' tag")
                otherwise, _, toks = self.parse_body(("endif",), ("if", pos))
            toks.expect_end("'endif' tag")
            return _If(branches, otherwise, pos)

    def parse_for(self, toks: _Tokens, pos: int) -> _Node:
        target = self.parse_assign_target(toks, extra_end=("in",))
        if not toks.skip_name("in"):
            raise self.fail(toks.current.pos, f"expected 'in' in the for loop, got {_describe(toks.current)}")
        iter_ = self.parse_tuple(toks, with_condexpr=False, extra_end=("recursive",))
        cond = self.parse_expression(toks) if toks.skip_name("if") else None
        if toks.is_name("recursive"):
            raise self.fail(toks.current.pos, "unsupported: recursive for loops")
        toks.expect_end("for loop header")
        self.loop_depth += 1
        body, end, toks = self.parse_body(("else", "endfor"), ("for", pos))
        self.loop_depth -= 1
        otherwise: list[_Node] = []
        if end == "else":
            toks.expect_end("'else' tag")
            otherwise, _, toks = self.parse_body(("endfor",), ("for", pos))
        toks.expect_end("'endfor' tag")
        return _For(target, iter_, cond, body, otherwise, pos)

    def parse_set(self, toks: _Tokens, pos: int) -> _Node:
        target = self.parse_assign_target(toks, with_namespace=True)
        if toks.current.type == "=":
            toks.next()
            expr = self.parse_tuple(toks)
            toks.expect_end("'set' statement")
            return _Set(target, expr, pos)
        if toks.current.type == "|":
            raise self.fail(toks.current.pos, "unsupported: filters on a block 'set'")
        toks.expect_end("'set' tag (expected '=' or the end of a block set)")
        body, _, end = self.parse_body(("endset",), ("set", pos))
        end.expect_end("'endset' tag")
        return _SetBlock(target, body, pos)

    def parse_assign_target(self, toks: _Tokens, extra_end: tuple[str, ...] = (),
                            with_namespace: bool = False) -> _Node:
        tok = toks.current
        if with_namespace and tok.type == "name" and toks.look().type == ".":
            toks.next()
            toks.next()
            attr = toks.expect("name", "an attribute name")
            return _NSRef(tok.value, attr.value, tok.pos)
        target = self.parse_tuple(toks, simplified=True, extra_end=extra_end)
        self.check_assignable(target)
        return target

    def check_assignable(self, node: _Node) -> None:
        if isinstance(node, _Name):
            return
        if isinstance(node, _Seq) and node.is_tuple:
            for item in node.items:
                self.check_assignable(item)
            return
        raise self.fail(node.pos, "can't assign to this expression")

    # expressions -----------------------------------------------------------------------------------------------
    def parse_tuple(self, toks: _Tokens, simplified: bool = False, with_condexpr: bool = True,
                    extra_end: tuple[str, ...] = (), explicit_parentheses: bool = False) -> _Node:
        pos = toks.current.pos
        args: list[_Node] = []
        is_tuple = False
        while True:
            if args:
                toks.expect(",", "','")
            cur = toks.current
            if cur.type in ("end", ")") or (cur.type == "name" and cur.value in extra_end):
                break
            if simplified:
                args.append(self.parse_primary(toks))
            else:
                args.append(self.parse_expression(toks, with_condexpr))
            if toks.current.type == ",":
                is_tuple = True
            else:
                break
        if not is_tuple:
            if args:
                return args[0]
            if not explicit_parentheses:
                raise self.fail(toks.current.pos, f"expected an expression, got {_describe(toks.current)}")
        return _Seq(args, True, pos)

    def parse_expression(self, toks: _Tokens, with_condexpr: bool = True) -> _Node:
        if with_condexpr:
            return self.parse_condexpr(toks)
        return self.parse_or(toks)

    def parse_condexpr(self, toks: _Tokens) -> _Node:
        expr = self.parse_or(toks)
        while toks.is_name("if"):
            pos = toks.next().pos
            test = self.parse_or(toks)
            otherwise = self.parse_condexpr(toks) if toks.skip_name("else") else None
            expr = _CondExpr(test, expr, otherwise, pos)
        return expr

    def parse_or(self, toks: _Tokens) -> _Node:
        left = self.parse_and(toks)
        while toks.is_name("or"):
            pos = toks.next().pos
            left = _BinOp("or", left, self.parse_and(toks), pos)
        return left

    def parse_and(self, toks: _Tokens) -> _Node:
        left = self.parse_not(toks)
        while toks.is_name("and"):
            pos = toks.next().pos
            left = _BinOp("and", left, self.parse_not(toks), pos)
        return left

    def parse_not(self, toks: _Tokens) -> _Node:
        if toks.is_name("not"):
            pos = toks.next().pos
            return _Unary("not", self.nested(toks, self.parse_not, pos), pos)
        return self.parse_compare(toks)

    def parse_compare(self, toks: _Tokens) -> _Node:
        pos = toks.current.pos
        expr = self.parse_math1(toks)
        ops: list[tuple[str, _Node]] = []
        while True:
            cur = toks.current
            if cur.type in _COMPARE_OPS:
                toks.next()
                ops.append((cur.type, self.parse_math1(toks)))
            elif toks.skip_name("in"):
                ops.append(("in", self.parse_math1(toks)))
            elif toks.is_name("not") and toks.look().type == "name" and toks.look().value == "in":
                toks.next()
                toks.next()
                ops.append(("notin", self.parse_math1(toks)))
            else:
                break
        return _Compare(expr, ops, pos) if ops else expr

    def parse_math1(self, toks: _Tokens) -> _Node:
        left = self.parse_concat(toks)
        while toks.current.type in ("+", "-"):
            tok = toks.next()
            left = _BinOp(tok.type, left, self.parse_concat(toks), tok.pos)
        return left

    def parse_concat(self, toks: _Tokens) -> _Node:
        pos = toks.current.pos
        args = [self.parse_math2(toks)]
        while toks.current.type == "~":
            toks.next()
            args.append(self.parse_math2(toks))
        return args[0] if len(args) == 1 else _Concat(args, pos)

    def parse_math2(self, toks: _Tokens) -> _Node:
        left = self.parse_pow(toks)
        while toks.current.type in ("*", "/", "//", "%"):
            tok = toks.next()
            left = _BinOp(tok.type, left, self.parse_pow(toks), tok.pos)
        return left

    def parse_pow(self, toks: _Tokens) -> _Node:
        left = self.parse_unary(toks)
        while toks.current.type == "**":
            tok = toks.next()
            left = _BinOp("**", left, self.parse_unary(toks), tok.pos)
        return left

    def parse_unary(self, toks: _Tokens, with_filter: bool = True) -> _Node:
        cur = toks.current
        if cur.type in ("-", "+"):
            toks.next()
            node: _Node = _Unary(cur.type, self.nested(toks, lambda t: self.parse_unary(t, False), cur.pos),
                                 cur.pos)
        else:
            node = self.parse_primary(toks)
        node = self.parse_postfix(toks, node)
        if with_filter:
            node = self.parse_filter_expr(toks, node)
        return node

    def nested(self, toks: _Tokens, parse: Callable[[_Tokens], _Node], pos: int) -> _Node:
        self.block_depth += 1
        if self.block_depth > 4 * MAX_NESTING:
            raise self.fail(pos, "expression nested too deeply")
        try:
            return parse(toks)
        finally:
            self.block_depth -= 1

    def parse_primary(self, toks: _Tokens) -> _Node:
        tok = toks.current
        if tok.type == "name":
            toks.next()
            if tok.value in _CONSTANTS:
                return _Const(_CONSTANTS[tok.value], tok.pos)
            return _Name(tok.value, tok.pos)
        if tok.type == "string":
            parts = []
            while toks.current.type == "string":
                parts.append(toks.next().value)
            return _Const("".join(parts), tok.pos)
        if tok.type in ("integer", "float"):
            toks.next()
            return _Const(tok.value, tok.pos)
        if tok.type == "(":
            toks.next()
            node = self.nested(toks, lambda t: self.parse_tuple(t, explicit_parentheses=True), tok.pos)
            toks.expect(")", "')'")
            return node
        if tok.type == "[":
            return self.nested(toks, self.parse_list, tok.pos)
        if tok.type == "{":
            return self.nested(toks, self.parse_dict, tok.pos)
        raise self.fail(tok.pos, f"unexpected {_describe(tok)}")

    def parse_list(self, toks: _Tokens) -> _Node:
        pos = toks.expect("[").pos
        items: list[_Node] = []
        while toks.current.type != "]":
            if items:
                toks.expect(",", "',' or ']'")
                if toks.current.type == "]":
                    break
            items.append(self.parse_expression(toks))
        toks.expect("]", "']'")
        return _Seq(items, False, pos)

    def parse_dict(self, toks: _Tokens) -> _Node:
        pos = toks.expect("{").pos
        pairs: list[tuple[_Node, _Node]] = []
        while toks.current.type != "}":
            if pairs:
                toks.expect(",", "',' or '}'")
                if toks.current.type == "}":
                    break
            key = self.parse_expression(toks)
            toks.expect(":", "':'")
            pairs.append((key, self.parse_expression(toks)))
        toks.expect("}", "'}'")
        return _DictLit(pairs, pos)

    def parse_postfix(self, toks: _Tokens, node: _Node) -> _Node:
        while True:
            cur = toks.current
            if cur.type in (".", "["):
                node = self.parse_subscript(toks, node)
            elif cur.type == "(":
                node = self.parse_call(toks, node)
            else:
                return node

    def parse_filter_expr(self, toks: _Tokens, node: _Node) -> _Node:
        while True:
            cur = toks.current
            if cur.type == "|":
                node = self.parse_filter(toks, node)
            elif cur.type == "name" and cur.value == "is":
                node = self.parse_test(toks, node)
            elif cur.type == "(":
                node = self.parse_call(toks, node)
            else:
                return node

    def parse_subscript(self, toks: _Tokens, node: _Node) -> _Node:
        tok = toks.next()
        if tok.type == ".":
            attr = toks.next()
            if attr.type == "name":
                return _Getattr(node, attr.value, attr.pos)
            if attr.type != "integer":
                raise self.fail(attr.pos, f"expected an attribute name or number, got {_describe(attr)}")
            return _Getitem(node, _Const(attr.value, attr.pos), attr.pos)
        args: list[_Node] = []
        while toks.current.type != "]":
            if args:
                toks.expect(",", "',' or ']'")
            args.append(self.parse_subscribed(toks))
        toks.expect("]", "']'")
        arg = args[0] if len(args) == 1 else _Seq(args, True, tok.pos)
        return _Getitem(node, arg, tok.pos)

    def parse_subscribed(self, toks: _Tokens) -> _Node:
        pos = toks.current.pos
        parts: list[_Node | None]
        if toks.current.type == ":":
            toks.next()
            parts = [None]
        else:
            node = self.parse_expression(toks)
            if toks.current.type != ":":
                return node
            toks.next()
            parts = [node]
        if toks.current.type == ":":
            parts.append(None)
        elif toks.current.type not in ("]", ","):
            parts.append(self.parse_expression(toks))
        else:
            parts.append(None)
        if toks.current.type == ":":
            toks.next()
            parts.append(self.parse_expression(toks) if toks.current.type not in ("]", ",") else None)
        else:
            parts.append(None)
        return _Slice(parts[0], parts[1], parts[2], pos)

    def parse_call_args(self, toks: _Tokens) -> tuple[list[_Node], list[tuple[str, _Node]]]:
        toks.expect("(", "'('")
        args: list[_Node] = []
        kwargs: list[tuple[str, _Node]] = []
        first = True
        while toks.current.type != ")":
            if not first:
                toks.expect(",", "',' or ')'")
                if toks.current.type == ")":
                    break
            first = False
            cur = toks.current
            if cur.type in ("*", "**"):
                raise self.fail(cur.pos, "unsupported: *args / **kwargs in a call")
            if cur.type == "name" and toks.look().type == "=":
                toks.next()
                toks.next()
                kwargs.append((cur.value, self.parse_expression(toks)))
            else:
                if kwargs:
                    raise self.fail(cur.pos, "positional argument after a keyword argument")
                args.append(self.parse_expression(toks))
        toks.expect(")", "')'")
        return args, kwargs

    def parse_call(self, toks: _Tokens, node: _Node) -> _Node:
        pos = toks.current.pos
        args, kwargs = self.nested(toks, self.parse_call_args, pos)
        return _Call(node, args, kwargs, pos)

    def parse_filter(self, toks: _Tokens, node: _Node) -> _Node:
        while toks.current.type == "|":
            toks.next()
            tok = toks.expect("name", "a filter name")
            name = tok.value
            while toks.current.type == ".":
                toks.next()
                name += "." + toks.expect("name", "a name").value
            args: list[_Node] = []
            kwargs: list[tuple[str, _Node]] = []
            if toks.current.type == "(":
                args, kwargs = self.nested(toks, self.parse_call_args, tok.pos)
            node = _Filter(node, name, args, kwargs, tok.pos)
        return node

    def parse_test(self, toks: _Tokens, node: _Node) -> _Node:
        is_tok = toks.next()
        negated = toks.skip_name("not")
        tok = toks.expect("name", "a test name")
        name = tok.value
        while toks.current.type == ".":
            toks.next()
            name += "." + toks.expect("name", "a name").value
        args: list[_Node] = []
        kwargs: list[tuple[str, _Node]] = []
        cur = toks.current
        if cur.type == "(":
            args, kwargs = self.nested(toks, self.parse_call_args, tok.pos)
        elif (cur.type in ("name", "string", "integer", "float", "[", "{")
              and not (cur.type == "name" and cur.value in ("else", "or", "and"))):
            if cur.type == "name" and cur.value == "is":
                raise self.fail(cur.pos, "you cannot chain multiple tests with 'is'")
            args = [self.parse_postfix(toks, self.parse_primary(toks))]
        result: _Node = _Test(node, name, args, kwargs, tok.pos)
        if negated:
            result = _Unary("not", result, is_tok.pos)
        return result


# ---------------------------------------------------------------------------------------------------------------
# Runtime values

class Undefined:
    """Jinja's default Undefined: falsy, prints as "", iterates as empty; anything else fails."""
    __slots__ = ("hint",)

    def __init__(self, hint: str) -> None:
        self.hint = hint

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "Undefined"

    def __len__(self) -> int:
        return 0

    def __iter__(self):  # noqa: ANN204
        return iter(())

    def __eq__(self, other: object) -> bool:
        return type(other) is Undefined

    def __ne__(self, other: object) -> bool:
        return type(other) is not Undefined

    def __hash__(self) -> int:
        return 0


class Namespace:
    """``namespace(...)``: the one mutable object a template can make (``{% set ns.x = ... %}``)."""
    __slots__ = ("attrs",)

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"<Namespace {self.attrs!r}>"


class LoopContext:
    """The ``loop`` variable of a for loop."""
    __slots__ = ("items", "index0")

    def __init__(self, items: list[Any], index0: int) -> None:
        self.items, self.index0 = items, index0

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"<LoopContext {self.index0 + 1}/{len(self.items)}>"

    def attr(self, name: str) -> Any:
        i, n = self.index0, len(self.items)
        values = {"index0": i, "index": i + 1, "revindex0": n - i - 1, "revindex": n - i, "first": i == 0,
                  "last": i == n - 1, "length": n, "depth": 1, "depth0": 0}
        if name in values:
            return values[name]
        if name == "previtem":
            return self.items[i - 1] if i > 0 else Undefined("there is no previous item")
        if name == "nextitem":
            return self.items[i + 1] if i + 1 < n else Undefined("there is no next item")
        if name == "cycle":
            return _Callable("loop.cycle", self.cycle)
        return Undefined(f"'LoopContext' object has no attribute '{name}'")

    def cycle(self, *args: Any) -> Any:
        if not args:
            raise _Failure("no items for cycling given")
        return args[self.index0 % len(args)]


class _Callable:
    """A function the template may call: a global, or a bound method from the allowed list."""
    __slots__ = ("name", "func")

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name, self.func = name, func

    def __repr__(self) -> str:
        return f"<function {self.name}>"


class _LoopBreak(Exception):
    pass


class _LoopContinue(Exception):
    pass


_STR_METHODS = frozenset({"startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines",
                          "upper", "lower", "title", "capitalize", "replace", "find", "rfind", "count", "join",
                          "isdigit", "isalpha", "isalnum", "isspace"})
_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
_DictViews = (type({}.keys()), type({}.values()), type({}.items()))
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _type_name(value: Any) -> str:
    if isinstance(value, Undefined):
        return "Undefined"
    return type(value).__name__


def _undefined_failure(value: Undefined) -> _Failure:
    return _Failure(value.hint)


def _check_undefined(*values: Any) -> None:
    for v in values:
        if isinstance(v, Undefined):
            raise _undefined_failure(v)


def _truthy(value: Any) -> bool:
    if isinstance(value, (Namespace, LoopContext, _Callable)):
        return True
    return bool(value)


# ---------------------------------------------------------------------------------------------------------------
# Renderer

class _Renderer:
    def __init__(self, source: str, context: dict[str, Any]) -> None:
        self.source = source
        self.scopes: list[dict[str, Any]] = [context]
        self.out: list[str] = []
        self.out_len = 0
        self.steps = 0
        self.iterations = 0

    # bookkeeping -----------------------------------------------------------------------------------------------
    def charge(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise _Failure(f"the template needs more than {MAX_STEPS} evaluation steps")

    def write(self, text: str) -> None:
        self.out_len += len(text)
        if self.out_len > MAX_OUTPUT_CHARS:
            raise _Failure(f"the rendered text exceeds {MAX_OUTPUT_CHARS} characters")
        self.out.append(text)

    def checked_str(self, s: str) -> str:
        if len(s) > MAX_OUTPUT_CHARS:
            raise _Failure(f"a string exceeds {MAX_OUTPUT_CHARS} characters")
        self.charge(len(s) >> 8)
        return s

    def weigh(self, value: Any, per_char: int = 4, per_node: int = 4, per_level: int = 0) -> None:
        """Walk a value (shared parts counted each time they appear) before anything traverses it whole, and
        refuse it when it has too many items or the text it prints as could pass the output limit (estimated
        as ``per_char`` per character, ``per_node`` per item and ``per_level`` per item per level of nesting)."""
        nodes = chars = size = 0
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack:
            v, level = stack.pop()
            nodes += 1
            size += per_node + per_level * level
            if isinstance(v, str):
                chars += len(v)
                size += per_char * len(v)
            elif isinstance(v, (list, tuple, _DictViews)):
                stack.extend((x, level + 1) for x in v)
            elif isinstance(v, dict):
                stack.extend((x, level + 1) for x in v.keys())
                stack.extend((x, level + 1) for x in v.values())
            elif isinstance(v, Namespace):
                stack.extend((x, level + 1) for x in v.attrs.values())
            if nodes > MAX_VALUE_NODES or size > MAX_OUTPUT_CHARS:
                raise _Failure("a value is too large to print, compare or serialise")
        self.charge(nodes + (chars >> 8))

    def to_str(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float, type(None), Undefined)):
            return str(value)
        self.weigh(value)
        return self.checked_str(str(value))

    def joined(self, parts: list[str], sep: str = "") -> str:
        """``sep.join(parts)``, refused before it is built when it would pass the output limit."""
        if sum(map(len, parts)) + len(sep) * max(len(parts) - 1, 0) > MAX_OUTPUT_CHARS:
            raise _Failure(f"a string exceeds {MAX_OUTPUT_CHARS} characters")
        return self.checked_str(sep.join(parts))

    def checked_len(self, n: int) -> None:
        if n > MAX_VALUE_NODES:
            raise _Failure(f"a list would have more than {MAX_VALUE_NODES} items")
        self.charge(n)

    # statements ------------------------------------------------------------------------------------------------
    def run(self, body: list[_Node]) -> str:
        self.exec_body(body)
        return "".join(self.out)

    def exec_body(self, body: list[_Node]) -> None:
        for node in body:
            self.charge()
            try:
                self.exec(node)
            except _Failure as e:
                if e.pos is None:
                    e.pos = node.pos
                raise

    def exec(self, node: _Node) -> None:
        if isinstance(node, _Output):
            self.write(node.text)
        elif isinstance(node, _Print):
            self.write(self.to_str(self.eval(node.expr)))
        elif isinstance(node, _If):
            for test, body in node.branches:
                if _truthy(self.eval(test)):
                    self.exec_body(body)
                    return
            self.exec_body(node.otherwise)
        elif isinstance(node, _For):
            self.exec_for(node)
        elif isinstance(node, _Set):
            self.assign(node.target, self.eval(node.expr))
        elif isinstance(node, _SetBlock):
            saved, saved_len = self.out, self.out_len
            self.out = []
            self.scopes.append({})      # as in jinja2, names set inside a block set stay inside it
            try:
                self.exec_body(node.body)
                text = "".join(self.out)
            finally:
                self.scopes.pop()
                self.out, self.out_len = saved, saved_len
            self.assign(node.target, text)
        elif isinstance(node, _Block):
            self.scopes.append({})      # transformers renders it through a call block: a scope of its own
            try:
                self.exec_body(node.body)
            finally:
                self.scopes.pop()
        elif isinstance(node, _LoopControl):
            raise _LoopBreak() if node.kind == "break" else _LoopContinue()
        else:  # pragma: no cover - the parser makes no other statements
            raise _Failure(f"internal error: unknown statement {type(node).__name__}")

    def exec_for(self, node: _For) -> None:
        items = self.iter_items(self.eval(node.iter))
        if node.cond is not None:
            kept = []
            for item in items:
                self.count_iteration()
                self.scopes.append({})
                try:
                    self.assign(node.target, item)
                    if _truthy(self.eval(node.cond)):
                        kept.append(item)
                finally:
                    self.scopes.pop()
            items = kept
        for index0, item in enumerate(items):
            self.count_iteration()
            self.scopes.append({})
            try:
                self.assign(node.target, item)
                self.scopes[-1]["loop"] = LoopContext(items, index0)
                self.exec_body(node.body)
            except _LoopContinue:
                continue
            except _LoopBreak:
                break
            finally:
                self.scopes.pop()
        if not items and node.otherwise:
            self.scopes.append({})       # jinja2 gives the else block a scope of its own, like the body
            try:
                self.exec_body(node.otherwise)
            finally:
                self.scopes.pop()

    def count_iteration(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise _Failure(f"loops ran more than {MAX_LOOP_ITERATIONS} iterations")

    def iter_items(self, value: Any) -> list[Any]:
        if isinstance(value, Undefined):
            return []
        if isinstance(value, (str, list, tuple, dict) + _DictViews):
            self.charge(len(value))
            return list(value)
        if isinstance(value, LoopContext):
            raise _Failure("unsupported: iterating over 'loop' (recursive loops)")
        raise _Failure(f"'{_type_name(value)}' object is not iterable")

    def assign(self, target: _Node, value: Any) -> None:
        if isinstance(target, _Name):
            self.scopes[-1][target.name] = value
        elif isinstance(target, _NSRef):
            ns = self.lookup(target.name)
            if not isinstance(ns, Namespace):
                raise _Failure("cannot assign attribute on non-namespace object", target.pos)
            if target.attr.startswith("_"):
                raise _Failure(f"refused: namespace attribute {target.attr!r} starts with '_'", target.pos)
            ns.attrs[target.attr] = value
        elif isinstance(target, _Seq):
            values = self.iter_items(value) if not isinstance(value, Undefined) else None
            if values is None or len(values) != len(target.items):
                got = "an undefined value" if values is None else f"{len(values)} values"
                raise _Failure(f"cannot unpack {got} into {len(target.items)} names", target.pos)
            for t, v in zip(target.items, values):
                self.assign(t, v)
        else:  # pragma: no cover - the parser checks targets
            raise _Failure("can't assign to this expression", target.pos)

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in _GLOBALS:
            return _GLOBALS[name]
        return Undefined(f"'{name}' is undefined")

    # expressions -----------------------------------------------------------------------------------------------
    def eval(self, node: _Node) -> Any:
        self.charge()
        try:
            return self.eval_node(node)
        except _Failure as e:
            if e.pos is None:
                e.pos = node.pos
            raise

    def eval_node(self, node: _Node) -> Any:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Name):
            return self.lookup(node.name)
        if isinstance(node, _Getattr):
            return self.getattr(self.eval(node.obj), node.attr)
        if isinstance(node, _Getitem):
            obj = self.eval(node.obj)
            if isinstance(node.arg, _Slice):
                return self.getslice(obj, node.arg)
            return self.getitem(obj, self.eval(node.arg))
        if isinstance(node, _Compare):
            return self.eval_compare(node)
        if isinstance(node, _BinOp):
            if node.op == "and":
                left = self.eval(node.left)
                return self.eval(node.right) if _truthy(left) else left
            if node.op == "or":
                left = self.eval(node.left)
                return left if _truthy(left) else self.eval(node.right)
            return self.binop(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, _Unary):
            value = self.eval(node.node)
            if node.op == "not":
                return not _truthy(value)
            _check_undefined(value)
            if not isinstance(value, (int, float)):
                raise _Failure(f"bad operand type for unary {node.op}: '{_type_name(value)}'")
            return -value if node.op == "-" else +value
        if isinstance(node, _Concat):
            return self.joined([self.to_str(self.eval(n)) for n in node.items])
        if isinstance(node, _CondExpr):
            if _truthy(self.eval(node.test)):
                return self.eval(node.then)
            if node.otherwise is None:
                return Undefined("the inline if-expression evaluated to false and no else section was defined")
            return self.eval(node.otherwise)
        if isinstance(node, _Test):
            return self.eval_test(node)
        if isinstance(node, _Filter):
            return self.eval_filter(node)
        if isinstance(node, _Call):
            return self.eval_call(node)
        if isinstance(node, _Seq):
            items = [self.eval(n) for n in node.items]
            return tuple(items) if node.is_tuple else items
        if isinstance(node, _DictLit):
            result = {}
            for k, v in node.pairs:
                key = self.eval(k)
                if not isinstance(key, (str, int, float, bool, type(None), tuple)):
                    raise _Failure(f"unhashable dict key of type '{_type_name(key)}'", k.pos)
                result[key] = self.eval(v)
            return result
        if isinstance(node, _Slice):
            raise _Failure("a slice outside of a subscript")
        raise _Failure(f"internal error: unknown expression {type(node).__name__}")  # pragma: no cover

    def getattr(self, obj: Any, name: str) -> Any:
        if name.startswith("_"):
            raise _Failure(f"refused: access to attribute {name!r} (names starting with '_' are not allowed)")
        if isinstance(obj, Undefined):
            raise _undefined_failure(obj)
        if isinstance(obj, dict):
            if name in _DICT_METHODS:
                return _Callable(f"dict.{name}", getattr(obj, name))
            if hasattr(dict, name):
                raise _Failure(f"unsupported: the dict method '{name}'")
            if name in obj:
                return obj[name]
            return Undefined(f"'dict object' has no attribute '{name}'")
        if isinstance(obj, str):
            if name in _STR_METHODS:
                return _Callable(f"str.{name}", self.bounded_str_method(obj, name))
            if hasattr(str, name):
                raise _Failure(f"unsupported: the str method '{name}'")
            return Undefined(f"'str object' has no attribute '{name}'")
        if isinstance(obj, Namespace):
            if name in obj.attrs:
                return obj.attrs[name]
            return Undefined(f"'Namespace' object has no attribute '{name}'")
        if isinstance(obj, LoopContext):
            return obj.attr(name)
        if isinstance(obj, _Callable):
            raise _Failure(f"unsupported: attribute '{name}' of a function")
        if hasattr(obj, name):
            raise _Failure(f"unsupported: the attribute '{name}' of a {_type_name(obj)}")
        return Undefined(f"'{_type_name(obj)} object' has no attribute '{name}'")

    def getitem(self, obj: Any, key: Any) -> Any:
        if isinstance(obj, Undefined):
            raise _undefined_failure(obj)
        if isinstance(obj, dict):
            try:
                return obj[key]
            except (TypeError, LookupError):
                pass
            if isinstance(key, str):
                if key.startswith("_") or hasattr(dict, key):
                    return self.getattr(obj, key)
            return Undefined(f"'dict object' has no attribute {key!r}")
        if isinstance(obj, (list, tuple, str)):
            if isinstance(key, int):
                try:
                    return obj[key]
                except IndexError:
                    return Undefined(f"'{_type_name(obj)} object' has no element {key!r}")
            if isinstance(key, str):
                return self.getattr(obj, key)
            return Undefined(f"'{_type_name(obj)} object' has no element {key!r}")
        if isinstance(obj, (Namespace, LoopContext)) and isinstance(key, str):
            return self.getattr(obj, key)
        if isinstance(key, str):
            return self.getattr(obj, key)
        return Undefined(f"'{_type_name(obj)} object' has no element {key!r}")

    def getslice(self, obj: Any, node: _Slice) -> Any:
        parts = [None if n is None else self.eval(n) for n in (node.start, node.stop, node.step)]
        for p in parts:
            if p is not None and (not isinstance(p, int) or isinstance(p, bool)):
                raise _Failure(f"slice indices must be integers or none, not '{_type_name(p)}'")
        if parts[2] == 0:
            raise _Failure("slice step cannot be zero")
        if isinstance(obj, Undefined):
            raise _undefined_failure(obj)
        if not isinstance(obj, (list, tuple, str)):
            return Undefined(f"'{_type_name(obj)} object' can't be sliced")
        self.charge(len(obj))
        return obj[slice(*parts)]

    def binop(self, op: str, a: Any, b: Any) -> Any:
        _check_undefined(a, b)
        num = (int, float)
        if op == "+":
            if isinstance(a, num) and isinstance(b, num):
                return self.checked_num(a + b)
            if isinstance(a, str) and isinstance(b, str):
                return self.checked_str(a + b)
            if (isinstance(a, list) and isinstance(b, list)) or (isinstance(a, tuple) and isinstance(b, tuple)):
                self.checked_len(len(a) + len(b))
                return a + b
        elif op in ("-", "/", "//", "%"):
            if isinstance(a, num) and isinstance(b, num):
                if op != "-" and b == 0:
                    raise _Failure("division by zero")
                if op == "-":
                    return self.checked_num(a - b)
                if op == "/":
                    return a / b
                return self.checked_num(a // b if op == "//" else a % b)
        elif op == "*":
            if isinstance(a, num) and isinstance(b, num):
                return self.checked_num(a * b)
            seq, count = (a, b) if isinstance(b, int) else (b, a)
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and not isinstance(seq, bool):
                size = len(seq) * max(count, 0)
                if isinstance(seq, str):
                    if size > MAX_OUTPUT_CHARS:
                        raise _Failure(f"a string exceeds {MAX_OUTPUT_CHARS} characters")
                    self.charge(size >> 8)
                else:
                    self.checked_len(size)
                return seq * count
        elif op == "**":
            if isinstance(a, num) and isinstance(b, num):
                if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 \
                        and abs(a).bit_length() * b > MAX_INT_BITS:
                    raise _Failure(f"integer result exceeds {MAX_INT_BITS} bits")
                try:
                    return self.checked_num(a ** b)
                except (OverflowError, ZeroDivisionError) as e:
                    raise _Failure(str(e)) from None
        if op == "%" and isinstance(a, str):
            raise _Failure("unsupported: string formatting with '%'")
        raise _Failure(f"unsupported operand types for {op}: '{_type_name(a)}' and '{_type_name(b)}'")

    @staticmethod
    def checked_num(value: Any) -> Any:
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise _Failure(f"integer result exceeds {MAX_INT_BITS} bits")
        return value

    def eval_compare(self, node: _Compare) -> Any:
        left = self.eval(node.first)
        for op, right_node in node.ops:
            right = self.eval(right_node)
            if not self.compare(op, left, right):
                return False
            left = right
        return True

    def compare(self, op: str, a: Any, b: Any) -> bool:
        if op in ("in", "notin"):
            result = self.contains(b, a)
            return result if op == "in" else not result
        if op in ("==", "!="):
            if not isinstance(a, _PLAIN_SCALARS):
                self.weigh(a)
            if not isinstance(b, _PLAIN_SCALARS):
                self.weigh(b)
            return (a == b) if op == "==" else (a != b)
        _check_undefined(a, b)
        if not isinstance(a, _PLAIN_SCALARS):
            self.weigh(a)
        if not isinstance(b, _PLAIN_SCALARS):
            self.weigh(b)
        try:
            if op == "<":
                return bool(a < b)
            if op == ">":
                return bool(a > b)
            if op == "<=":
                return bool(a <= b)
            return bool(a >= b)
        except TypeError:
            raise _Failure(f"'{op}' not supported between '{_type_name(a)}' and '{_type_name(b)}'") from None

    def contains(self, container: Any, item: Any) -> bool:
        if isinstance(container, Undefined):
            return False
        if isinstance(container, str):
            if not isinstance(item, str):
                _check_undefined(item)
                raise _Failure(f"'in <string>' requires string as left operand, not {_type_name(item)}")
            self.charge(len(container) >> 8)
            return item in container
        if isinstance(container, (list, tuple, dict) + _DictViews):
            if isinstance(container, dict):
                try:
                    return item in container
                except TypeError:
                    raise _Failure(f"unhashable type: '{_type_name(item)}'") from None
            self.weigh(container)
            if not isinstance(item, _PLAIN_SCALARS):
                self.weigh(item)
            try:
                return item in container
            except TypeError:
                raise _Failure(f"unhashable type: '{_type_name(item)}'") from None
        raise _Failure(f"argument of type '{_type_name(container)}' is not iterable")

    def eval_args(self, node: _Filter | _Call) -> tuple[list[Any], dict[str, Any]]:
        return [self.eval(a) for a in node.args], {k: self.eval(v) for k, v in node.kwargs}

    def eval_call(self, node: _Call) -> Any:
        func = self.eval(node.func)
        args, kwargs = self.eval_args(node)
        return self.call(func, args, kwargs)

    def call(self, func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if isinstance(func, Undefined):
            raise _undefined_failure(func)
        if not isinstance(func, _Callable):
            raise _Failure(f"'{_type_name(func)}' object is not callable")
        if func.name == "range":
            return self.call_range(args, kwargs)
        try:
            result = func.func(*args, **kwargs)
        except _Failure:
            raise
        except (TypeError, ValueError) as e:
            raise _Failure(f"{func.name}(): {e}") from None
        if isinstance(result, str):
            return self.checked_str(result)
        if isinstance(result, list):
            self.charge(len(result))
        return result

    def call_range(self, args: list[Any], kwargs: dict[str, Any]) -> list[int]:
        if kwargs or not 1 <= len(args) <= 3 or not all(isinstance(a, int) for a in args):
            raise _Failure("range() takes 1 to 3 integer arguments")
        try:
            r = range(*args)
        except ValueError as e:
            raise _Failure(f"range(): {e}") from None
        if len(r) > MAX_RANGE:
            raise _Failure(f"range too big: more than {MAX_RANGE} items")
        self.charge(len(r))
        return list(r)

    def bounded_str_method(self, s: str, name: str) -> Callable[..., Any]:
        method = getattr(s, name)
        if name == "replace":
            def replace(old: Any, new: Any, count: Any = -1) -> str:
                if isinstance(old, str) and isinstance(new, str) and isinstance(count, int):
                    n = s.count(old) if count < 0 else min(count, s.count(old))
                    if len(s) + n * (len(new) - len(old)) > MAX_OUTPUT_CHARS:
                        raise _Failure(f"a string exceeds {MAX_OUTPUT_CHARS} characters")
                return method(old, new, count)
            return replace
        if name == "join":
            def join(items: Any) -> str:
                if not isinstance(items, (list, tuple, str) + _DictViews):
                    raise _Failure(f"can only join an iterable, not '{_type_name(items)}'")
                parts = list(items)
                self.charge(len(parts))
                if any(not isinstance(p, str) for p in parts):
                    raise _Failure("str.join() expects strings")
                return self.joined(parts, s)
            return join
        return method

    # filters and tests -----------------------------------------------------------------------------------------
    def eval_filter(self, node: _Filter) -> Any:
        impl = _FILTERS.get(node.name)
        if impl is None:
            raise _Failure(f"unsupported filter '{node.name}'")
        value = self.eval(node.node)
        args, kwargs = self.eval_args(node)
        return impl(self, value, args, kwargs)

    def eval_test(self, node: _Test) -> Any:
        impl = _TESTS.get(node.name)
        if impl is None:
            raise _Failure(f"unsupported test '{node.name}'")
        value = self.eval(node.node)
        args, kwargs = self.eval_args(node)
        return impl(self, value, args, kwargs)


def _bind(name: str, args: list[Any], kwargs: dict[str, Any], params: Sequence[tuple[str, Any]]) -> list[Any]:
    """Bind call arguments to ``params`` ((name, default) pairs; ``_REQUIRED`` for none)."""
    if len(args) > len(params):
        raise _Failure(f"{name}() takes at most {len(params)} arguments, got {len(args)}")
    values = list(args) + [_REQUIRED] * (len(params) - len(args))
    names = [p for p, _ in params]
    for key, value in kwargs.items():
        if key not in names:
            raise _Failure(f"{name}() got an unexpected keyword argument '{key}'")
        i = names.index(key)
        if i < len(args):
            raise _Failure(f"{name}() got multiple values for argument '{key}'")
        values[i] = value
    for i, (pname, default) in enumerate(params):
        if values[i] is _REQUIRED:
            if default is _REQUIRED:
                raise _Failure(f"{name}() missing required argument '{pname}'")
            values[i] = default
    return values


_REQUIRED = object()
_FilterImpl = Callable[[_Renderer, Any, list[Any], dict[str, Any]], Any]


def _simple(name: str, params: Sequence[tuple[str, Any]], fn: Callable[..., Any]) -> _FilterImpl:
    def impl(r: _Renderer, value: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return fn(r, value, *_bind(name, args, kwargs, params))
    return impl


def _f_trim(r: _Renderer, value: Any, chars: Any) -> str:
    if chars is not None and not isinstance(chars, str):
        raise _Failure("trim(): chars must be a string")
    return r.to_str(value).strip(chars)


def _f_length(r: _Renderer, value: Any) -> int:
    if isinstance(value, (str, list, tuple, dict, Undefined, LoopContext) + _DictViews):
        return len(value)
    raise _Failure(f"object of type '{_type_name(value)}' has no len()")


def _f_tojson(r: _Renderer, value: Any, ensure_ascii: Any, indent: Any, separators: Any, sort_keys: Any) -> str:
    if indent is not None and not isinstance(indent, (int, str)):
        raise _Failure("tojson(): indent must be an integer or a string")
    if isinstance(indent, str) and len(indent) > 64 or isinstance(indent, int) and indent > 64:
        raise _Failure("tojson(): indent larger than 64")
    indent_len = 0 if indent is None else len(indent) if isinstance(indent, str) else max(int(indent), 0)
    r.weigh(value, per_char=6 if ensure_ascii else 2, per_node=8, per_level=indent_len + 1 if indent_len else 0)
    if separators is not None and not (isinstance(separators, (list, tuple)) and len(separators) == 2
                                       and all(isinstance(s, str) for s in separators)):
        raise _Failure("tojson(): separators must be a pair of strings")

    def refuse(obj: Any) -> Any:
        raise _Failure(f"Object of type {_type_name(obj)} is not JSON serializable")

    try:
        text = json.dumps(value, ensure_ascii=bool(ensure_ascii), indent=indent, separators=separators,
                          sort_keys=bool(sort_keys), default=refuse)
    except (TypeError, ValueError) as e:
        raise _Failure(f"tojson(): {e}") from None
    return r.checked_str(text)


def _f_default(r: _Renderer, value: Any, default: Any, boolean: Any) -> Any:
    if isinstance(value, Undefined) or (boolean and not _truthy(value)):
        return default
    return value


def _f_join(r: _Renderer, value: Any, sep: Any, attribute: Any) -> str:
    items = r.iter_items(value)
    if attribute is not None:
        items = [_attribute(r, x, attribute) for x in items]
    return r.joined([r.to_str(x) for x in items], r.to_str(sep))


def _f_first(r: _Renderer, value: Any) -> Any:
    items = r.iter_items(value)
    return items[0] if items else Undefined("No first item, sequence was empty.")


def _f_last(r: _Renderer, value: Any) -> Any:
    items = r.iter_items(value)
    return items[-1] if items else Undefined("No last item, sequence was empty.")


def _f_int(r: _Renderer, value: Any, default: Any, base: Any) -> Any:
    if isinstance(value, str):
        if len(value) > 1000:
            return default
        try:
            return r.checked_num(int(value, base))
        except (TypeError, ValueError):
            try:
                return int(float(value))
            except (TypeError, ValueError, OverflowError):
                return default
    if isinstance(value, (int, float)):
        try:
            return int(value)
        except (ValueError, OverflowError):
            return default
    return default


def _f_float(r: _Renderer, value: Any, default: Any) -> Any:
    if isinstance(value, (str, int, float)) and not (isinstance(value, str) and len(value) > 1000):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return default
    return default


def _f_items(r: _Renderer, value: Any) -> Any:
    if isinstance(value, Undefined):
        return []
    if not isinstance(value, dict):
        raise _Failure(f"can only get item pairs from a mapping, not '{_type_name(value)}'")
    r.charge(len(value))
    return list(value.items())


def _f_reverse(r: _Renderer, value: Any) -> Any:
    if isinstance(value, str):
        return value[::-1]
    items = r.iter_items(value)
    return items[::-1]


def _f_replace(r: _Renderer, value: Any, old: Any, new: Any, count: Any) -> str:
    s = r.to_str(value)
    old_s, new_s = r.to_str(old), r.to_str(new)
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
        raise _Failure("replace(): count must be an integer")
    return r.call(_Callable("replace", r.bounded_str_method(s, "replace")),
                  [old_s, new_s, -1 if count is None else count], {})


def _f_title(r: _Renderer, value: Any) -> str:
    parts = re.split(r"([-\s({\[<]+)", r.to_str(value))
    return "".join(p[0].upper() + p[1:].lower() for p in parts if p)


def _f_abs(r: _Renderer, value: Any) -> Any:
    if not isinstance(value, (int, float)):
        _check_undefined(value)
        raise _Failure(f"bad operand type for abs(): '{_type_name(value)}'")
    return abs(value)


def _f_list(r: _Renderer, value: Any) -> list[Any]:
    return r.iter_items(value)


def _attribute(r: _Renderer, obj: Any, attribute: Any) -> Any:
    """jinja2's ``make_attrgetter``: a dotted path, digits index lists."""
    if isinstance(attribute, int) and not isinstance(attribute, bool):
        return r.getitem(obj, attribute)
    if not isinstance(attribute, str):
        raise _Failure("attribute must be a string or an integer")
    for part in attribute.split("."):
        obj = r.getitem(obj, int(part) if part.isdigit() else part)
    return obj


def _f_map(r: _Renderer, value: Any, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    items = r.iter_items(value)
    if "attribute" in kwargs:
        extra = set(kwargs) - {"attribute", "default"}
        if args or extra:
            raise _Failure("map(): with attribute= it takes only attribute= and default=")
        default = kwargs.get("default", _REQUIRED)
        out = []
        for x in items:
            v = _attribute(r, x, kwargs["attribute"])
            out.append(default if isinstance(v, Undefined) and default is not _REQUIRED else v)
        return out
    if not args or not isinstance(args[0], str):
        raise _Failure("map(): give a filter name or attribute=")
    impl = _FILTERS.get(args[0])
    if impl is None or args[0] in ("map", "selectattr", "rejectattr"):
        raise _Failure(f"map(): unsupported filter '{args[0]}'")
    return [impl(r, x, list(args[1:]), kwargs) for x in items]


def _select_attr(select: bool) -> _FilterImpl:
    def impl(r: _Renderer, value: Any, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        name = "selectattr" if select else "rejectattr"
        if kwargs or not args:
            raise _Failure(f"{name}(): give the attribute, then optionally a test name and its arguments")
        items = r.iter_items(value)
        attribute = args[0]
        if len(args) > 1:
            if not isinstance(args[1], str) or args[1] not in _TESTS:
                raise _Failure(f"{name}(): unsupported test {args[1]!r}")
            test, test_args = _TESTS[args[1]], list(args[2:])
        else:
            test, test_args = (lambda rr, v, a, k: _truthy(v)), []
        out = []
        for x in items:
            r.count_iteration()
            if bool(test(r, _attribute(r, x, attribute), test_args, {})) == select:
                out.append(x)
        return out
    return impl


def _str_filter(name: str, fn: Callable[[str], str]) -> _FilterImpl:
    return _simple(name, (), lambda r, v: r.checked_str(fn(r.to_str(v))))


_FILTERS: dict[str, _FilterImpl] = {
    "trim": _simple("trim", (("chars", None),), _f_trim),
    "length": _simple("length", (), _f_length),
    "count": _simple("count", (), _f_length),
    "upper": _str_filter("upper", str.upper),
    "lower": _str_filter("lower", str.lower),
    "capitalize": _str_filter("capitalize", str.capitalize),
    "title": _simple("title", (), _f_title),
    "string": _simple("string", (), lambda r, v: r.to_str(v)),
    "safe": _simple("safe", (), lambda r, v: r.to_str(v)),
    "tojson": _simple("tojson", (("ensure_ascii", False), ("indent", None), ("separators", None),
                                 ("sort_keys", False)), _f_tojson),
    "default": _simple("default", (("default_value", ""), ("boolean", False)), _f_default),
    "d": _simple("d", (("default_value", ""), ("boolean", False)), _f_default),
    "join": _simple("join", (("d", ""), ("attribute", None)), _f_join),
    "first": _simple("first", (), _f_first),
    "last": _simple("last", (), _f_last),
    "int": _simple("int", (("default", 0), ("base", 10)), _f_int),
    "float": _simple("float", (("default", 0.0),), _f_float),
    "list": _simple("list", (), _f_list),
    "items": _simple("items", (), _f_items),
    "reverse": _simple("reverse", (), _f_reverse),
    "replace": _simple("replace", (("old", _REQUIRED), ("new", _REQUIRED), ("count", None)), _f_replace),
    "abs": _simple("abs", (), _f_abs),
    "map": _f_map,
    "selectattr": _select_attr(True),
    "rejectattr": _select_attr(False),
}


def _t_compare(op: str) -> _FilterImpl:
    return _simple(op, (("other", _REQUIRED),), lambda r, v, other: r.compare(op, v, other))


def _t_divisibleby(r: _Renderer, value: Any, num: Any) -> bool:
    return r.binop("%", value, num) == 0


def _t_parity(want: int) -> _FilterImpl:
    def impl(r: _Renderer, value: Any) -> bool:
        _check_undefined(value)
        if not isinstance(value, int):
            raise _Failure(f"even/odd test needs an integer, not '{_type_name(value)}'")
        return value % 2 == want
    return _simple("even" if want == 0 else "odd", (), impl)


def _t_iterable(r: _Renderer, value: Any) -> bool:
    return isinstance(value, (str, list, tuple, dict, Undefined, LoopContext) + _DictViews)


def _t_sequence(r: _Renderer, value: Any) -> bool:
    return isinstance(value, (str, list, tuple, dict, Undefined))


_TESTS: dict[str, _FilterImpl] = {
    "defined": _simple("defined", (), lambda r, v: not isinstance(v, Undefined)),
    "undefined": _simple("undefined", (), lambda r, v: isinstance(v, Undefined)),
    "none": _simple("none", (), lambda r, v: v is None),
    "string": _simple("string", (), lambda r, v: isinstance(v, str)),
    "mapping": _simple("mapping", (), lambda r, v: isinstance(v, dict)),
    "iterable": _simple("iterable", (), _t_iterable),
    "sequence": _simple("sequence", (), _t_sequence),
    "number": _simple("number", (), lambda r, v: isinstance(v, (int, float))),
    "integer": _simple("integer", (), lambda r, v: isinstance(v, int) and not isinstance(v, bool)),
    "float": _simple("float", (), lambda r, v: isinstance(v, float)),
    "boolean": _simple("boolean", (), lambda r, v: v is True or v is False),
    "true": _simple("true", (), lambda r, v: v is True),
    "false": _simple("false", (), lambda r, v: v is False),
    "even": _t_parity(0),
    "odd": _t_parity(1),
    "divisibleby": _simple("divisibleby", (("num", _REQUIRED),), _t_divisibleby),
    "lower": _simple("lower", (), lambda r, v: r.to_str(v).islower()),
    "upper": _simple("upper", (), lambda r, v: r.to_str(v).isupper()),
    "in": _simple("in", (("seq", _REQUIRED),), lambda r, v, seq: r.contains(seq, v)),
    "sameas": _simple("sameas", (("other", _REQUIRED),), lambda r, v, other: v is other),
}
for _names, _op in ((("eq", "equalto", "=="), "=="), (("ne", "!="), "!="), (("lt", "lessthan", "<"), "<"),
                    (("le", "<="), "<="), (("gt", "greaterthan", ">"), ">"), (("ge", ">="), ">=")):
    for _name in _names:
        _TESTS[_name] = _t_compare(_op)


# ---------------------------------------------------------------------------------------------------------------
# Globals

def _g_raise_exception(message: Any = "") -> None:
    raise _Raised(message if isinstance(message, str) else str(message))


def _g_namespace(*args: Any, **kwargs: Any) -> Namespace:
    if len(args) > 1 or (args and not isinstance(args[0], dict)):
        raise _Failure("namespace() takes a dict and/or keyword arguments")
    attrs = dict(args[0]) if args else {}
    attrs.update(kwargs)
    for name in attrs:
        if not isinstance(name, str) or name.startswith("_"):
            raise _Failure(f"refused: namespace attribute {name!r} (names starting with '_' are not allowed)")
    return Namespace(attrs)


def _g_dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    if len(args) > 1 or (args and not isinstance(args[0], (dict, list, tuple))):
        raise _Failure("dict() takes a dict or a list of pairs, and keyword arguments")
    return dict(*args, **kwargs)


def _g_strftime_now(fmt: Any) -> str:
    if not isinstance(fmt, str) or len(fmt) > 1000:
        raise _Failure("strftime_now() takes a format string (at most 1000 characters)")
    return datetime.now().strftime(fmt)


_GLOBALS: dict[str, _Callable] = {
    "raise_exception": _Callable("raise_exception", _g_raise_exception),
    "namespace": _Callable("namespace", _g_namespace),
    "range": _Callable("range", lambda *a: None),     # handled by _Renderer.call_range
    "dict": _Callable("dict", _g_dict),
    "strftime_now": _Callable("strftime_now", _g_strftime_now),
}


# ---------------------------------------------------------------------------------------------------------------
# Inputs, as transformers prepares them (render_jinja_template)

def _plain(value: Any, depth: int = 0) -> Any:
    """transformers' ``_plain_template_data``: plain JSON types; anything else a "<TypeName>" placeholder."""
    if depth > 64:
        raise TemplateError("template input is nested more than 64 deep")
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v, depth + 1) for v in value)
    item = _numpy_scalar(value)
    if item is not _REQUIRED:
        return _plain(item, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models (the caller's objects, not the template's)
        return _plain(value.model_dump(), depth + 1)
    return f"<{type(value).__name__}>"


def _numpy_scalar(value: Any) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a runtime dependency
        return _REQUIRED
    return value.item() if isinstance(value, np.generic) else _REQUIRED


def _alias_reasoning(message: dict[Any, Any]) -> dict[Any, Any]:
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is not None:
        return {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


# ---------------------------------------------------------------------------------------------------------------
# API

class ChatTemplate:
    """A parsed chat template; ``render`` may be called many times."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TemplateError(f"a chat template must be a string, not {type(source).__name__}")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"the chat template is longer than {MAX_TEMPLATE_CHARS} characters")
        self.source = _normalise_source(source)
        try:
            self._body = _Parser(self.source, _lex(self.source)).parse()
        except RecursionError:
            raise TemplateError("the chat template is nested too deeply") from None

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               **variables: Any) -> str:
        """The prompt for ``messages``, rendered like transformers' ``apply_chat_template(tokenize=False)``.

        ``variables`` are the extra template variables transformers passes (``bos_token``, ``eos_token`` and the
        other special tokens, ``tools`` as JSON schemas, ``documents``, ``enable_thinking``, ...)."""
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise TemplateError("messages must be a list of dicts")
        chat = _plain(list(messages))
        for message in chat:
            if not isinstance(message, dict):
                raise TemplateError(f"chat messages must be dicts, got {message!r}")
        context: dict[str, Any] = {"tools": None, "documents": None}
        context.update(_plain(variables))
        context["messages"] = [_alias_reasoning(m) for m in chat]
        context["add_generation_prompt"] = _plain(add_generation_prompt)
        renderer = _Renderer(self.source, context)
        try:
            return renderer.run(self._body)
        except _Raised as e:
            raise TemplateRaisedError(e.message, *self._where(e.pos)) from None
        except _Failure as e:
            raise TemplateError(e.message, *self._where(e.pos)) from None
        except (_LoopBreak, _LoopContinue):  # pragma: no cover - the parser only allows them inside loops
            raise TemplateError("'break' or 'continue' outside of a loop") from None
        except RecursionError:
            raise TemplateError("the chat template recursed too deeply while rendering") from None

    def _where(self, pos: int | None) -> tuple[int | None, int | None]:
        return _line_col(self.source, pos) if pos is not None else (None, None)


@lru_cache(maxsize=16)
def _compiled(template: str) -> ChatTemplate:
    return ChatTemplate(template)


def render_chat_template(template: str, messages: list[dict], *, add_generation_prompt: bool = True,
                         **variables: Any) -> str:
    """Render a chat template (a GGUF's ``tokenizer.chat_template``) for ``messages``, as transformers does.

    Raises ``TemplateError`` for a template that can't be parsed or uses something unsupported, and
    ``TemplateRaisedError`` (a ``TemplateError``) when the template calls ``raise_exception``."""
    if not isinstance(template, str):
        raise TemplateError(f"a chat template must be a string, not {type(template).__name__}")
    return _compiled(template).render(messages, add_generation_prompt=add_generation_prompt, **variables)
