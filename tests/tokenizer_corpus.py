"""The multilingual corpus of the native tokenizer tests (tests/test_tokenizer_native.py, test_tokenizer_fuzz.py):
Latin with accents, Greek, Cyrillic, Hebrew, Arabic, Indic scripts with combining marks, Thai, Hangul, CJK, kana,
emoji (modifiers, flags, joiner sequences), digit runs and other numbers, code, markdown and HTML tables,
LaTeX, whitespace runs of every kind, contractions, and the places the pre-tokenizer's alternatives meet."""

from __future__ import annotations

CORPUS = [
    "# Annual Report 2024\n\nThe quick brown fox jumps over the lazy dog. Revenue grew 12.5% to $4,200,000.",
    "Ünïcödé naïve café — Straße, façade, coöperate, Œuvre, ångström, jalapeño, Ærø. «Guillemets» „Zitat“",
    "Ελληνικά κείμενα, русский текст с ёлкой, עברית, ไทย, हिन्दी में पाठ, 한국어 문장입니다.",
    "مرحبا بالعالم! هذا نص عربي للاختبار ١٢٣ و 456. العربية: ٣٫١٤",
    "## 第一章 概述\n\n本文档介绍了系统的设计与实现。数据来源于2023年的调查，共有12345名参与者。",
    "日本語のテキストです。カタカナとひらがなを含みます。東京タワーは333メートルです。鬱 鑑 ヴ ㈱ ｶﾀｶﾅ",
    "Emoji: 😀 👍🏽 🇫🇷 ❤️ 🧑‍🔬 👨‍👩‍👧‍👦 — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ​zero-width\u200djoiner\ufeffbom",
    "1234567890 0000000000000000 3.14159265358979 -42 +7 1e10 0x1F 2024-06-01 12:30:45 ½ ¾ ² ① Ⅻ ٣",
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # comment\n\tif (a && b) { c->d = e[0]; }\n",
    "<table><tr><td>名称</td><td>Value</td></tr><tr><td>alpha</td><td>1.5</td></tr></table>",
    "| Column A | Column B |\n|---|---|\n| **bold** | _italic_ |\n| `code` | [link](http://example.com) |",
    "$$\\frac{a}{b} \\coloneqq x_1 + x_2^{n}$$ and \\begin{align} y &= mx + c \\end{align}",
    "   leading spaces and trailing   ",
    "tabs\t\tand  double  spaces\r\nCRLF lines\n\n\n   \n\u3000ideographic space\u00a0nbsp\u2003em\u2028ls\x0bvt\x0cff\x85nel",
    "a\n \nb \n\n c  \r\n  d\t\n\te  ",
    "It's we're they've I'm you'll he'd 'S 'T x's",
    "(Hello) [World] {Test} \"quoted\" 'single' ¿Qué? ¡Sí! ...!!! ?? -- — ** __ ~~",
    "\u0301\u0308start with marks; e\u0301 a\u0308 \u0915\u093f \u064b\u0627 x\u20dd",
    "\x00\x01\x7f control \x1b[0m chars \ue000 private \U000f0000",
    " ",
    "",
    "\n",
    "\n\n\n",
    "a" * 300 + " " + "数" * 100 + " " + "😀" * 20 + " " + "9" * 40 + " " * 50 + "\n" * 5,
]
