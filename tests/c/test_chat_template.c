/* test_chat_template.c - tp_chat_template_render as the C session uses it: the template PaddleOCR-VL's fixture
 * stores (tokenizer.chat_template, read with tp_gguf_get_str: not NUL-terminated) rendered for one image and a
 * prompt (the string tests/test_chat_template_native.py checks against transformers), and every way out of a
 * render (lexing, parsing and rendering errors, the output limit) leaving nothing allocated: built against the
 * ASan+UBSan library by `make ctest`, run with leak detection. A missing fixture is a failure. */
#include "tilepass.h"
#include "tp_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tp_chat_message user_ocr[] = {{"user", 1, "OCR:"}};

static void test_fixture(const char *fixtures) {
    char path[1024];
    snprintf(path, sizeof path, "%s/llamacpp-tiny-paddleocr-vl/text-f16.gguf", fixtures);
    tp_gguf *g = NULL;
    tp_error err;
    CHECK(tp_gguf_open(path, &g, &err) == TP_OK, "the PaddleOCR-VL fixture opens");
    if (!g) return;
    const char *tmpl = NULL;
    size_t len = 0;
    CHECK(tp_gguf_get_str(g, "tokenizer.chat_template", &tmpl, &len) == TP_OK, "the fixture has a chat template");
    if (tmpl) {
        tp_chat_template_vars vars = {NULL, NULL, true};
        char *out = NULL;
        size_t n = 0;
        CHECK(tp_chat_template_render(tmpl, len, user_ocr, 1, &vars, &out, &n, &err) == TP_OK, err.message);
        const char *want = "<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>OCR:\nAssistant: ";
        CHECK(out && n == strlen(want) && strcmp(out, want) == 0, "PaddleOCR-VL's prompt");
        free(out);
        vars.add_generation_prompt = false;
        out = NULL;
        CHECK(tp_chat_template_render(tmpl, len, user_ocr, 1, &vars, &out, NULL, &err) == TP_OK, err.message);
        CHECK(out && strcmp(out, "<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>OCR:\n") == 0,
              "without the generation prompt");
        free(out);
    }
    tp_gguf_close(g);
}

static void expect(const char *tmpl, tp_status want, const char *what) {
    static const tp_chat_message msgs[] = {{"system", 0, "s"}, {"user", 2, "u"}, {"assistant", 0, NULL}};
    char *out = (char *)msgs; /* not NULL: must come back NULL on failure */
    size_t n = 1;
    tp_error err = {TP_OK, ""};
    tp_status st = tp_chat_template_render(tmpl, strlen(tmpl), msgs, 3, NULL, &out, &n, &err);
    CHECK(st == want, tmpl);
    CHECK(st == TP_OK ? out != NULL : out == NULL && n == 0, "out on success only");
    CHECK(st == TP_OK || (err.status == st && strstr(err.message, what) != NULL), err.message);
    free(out);
}

static void test_exits(void) {
    expect("{% for m in messages %}{% set x = m.role ~ '!' %}{{ x }}{% endfor %}", TP_OK, "");
    expect("{% for m in messages %}{% macro f() %}{% endmacro %}{% endfor %}", TP_ERR_UNSUPPORTED, "line 1:27: 'macro'");
    expect("{% for m in messages %}{{ m.role|upper }}{% endfor %}", TP_ERR_UNSUPPORTED, "filter 'upper'");
    expect("{% for m in messages %}{% if true %}{{ 'x' ~ 'y' }}", TP_ERR_FORMAT, "line 1:24: block not closed (no endif)");
    expect("{{ 'a' ~ 'b' }}{{ 'abc }}", TP_ERR_FORMAT, "line 1:19: unterminated string");
    expect("{% for m in messages %}{{ m.role ~ 'x' }}{{ m.content[9].text.x }}{% endfor %}", TP_ERR_FORMAT, "undefined");
    expect("{% for m in messages %}{% for p in messages %}{% for q in messages %}{{ 'x' * 3 }}{% endfor %}{% endfor %}{% endfor %}",
           TP_ERR_UNSUPPORTED, "operator '*'");
    char big[1024];
    snprintf(big, sizeof big, "{%% set s = '%0200d' %%}{%% for a in messages %%}{%% for b in 'abcdefghijklmnopqrstuvwxyz' %%}"
             "{%% for c in 'abcdefghijklmnopqrstuvwxyz' %%}{{ s ~ s ~ s }}{%% endfor %%}{%% endfor %%}{%% endfor %%}", 0);
    expect(big, TP_ERR_UNSUPPORTED, "output longer than");
}

int main(void) {
    const char *fixtures = getenv("TP_FIXTURES") ? getenv("TP_FIXTURES") : "../shared/fixtures";
    test_fixture(fixtures);
    test_exits();
    printf("test_chat_template: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
