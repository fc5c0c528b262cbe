# tilepass build, test, demo and bench.
#   make          build build/libtilepass.so (portable -O3; per-ISA kernels dispatched at run time)
#   make test     set up .venv, build both libraries, run the C tests and the kernel suites under the sanitizers,
#                 then every pytest suite
#   make demo     set up (the run-time dependencies only: no torch), build, run the main job on the bundled example
#   make wheel    build/wheel/tilepass-*.whl: the Python package with libtilepass.so and tilepass.h inside
#   make bench    set up, build, print benchmark tables and write build/bench.json

CC      ?= cc
PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
BUILD   := build

CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L
WARN    := -Wall -Wextra -Wshadow -Wno-unused-function
# native/ is split by layer: core/ (context, tensors, graph, planner, thread pool), ops/ (one op family per
# file), kernels/ (per-ISA files), gguf/ (reader, weight loader, the table of names), image/ (preprocessing),
# tokenizer/, generate/, text/ (chat templates), models/ (the registry, the generic vision/text APIs, shared
# blocks and one folder per model family, with its prompt conventions), session/ (the session API: a request's
# images and prompt, the decode loop, grounding spans).
NATIVE_DIRS := $(shell find native -type d -not -name __pycache__)
# Generated at build time into build/gen/ (never committed): the Unicode tables of the tokenizer, from
# Python's unicodedata (native/tokenizer/gen_unicode.py; the header records the Unicode version).
GEN_DIR := $(BUILD)/gen
GEN_HDRS := $(GEN_DIR)/tp_unicode_data.h
CFLAGS_COMMON := $(CSTD) $(WARN) -fPIC -pthread -Iinclude $(addprefix -I,$(NATIVE_DIRS)) -I$(GEN_DIR)
CFLAGS_REL    := $(CFLAGS_COMMON) -O3
CFLAGS_SAN    := $(CFLAGS_COMMON) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDLIBS  := -lm -pthread

# Files named *_avx2.c / *_avx512.c / *_amx.c hold per-ISA kernels: only they get the ISA flags, and the
# library calls them only when CPUID says the CPU has them.
ISA_AVX2   := -mavx2 -mfma -mf16c
ISA_AVX512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c -mavx2
ISA_AMX    := $(ISA_AVX512) -mamx-tile -mamx-bf16 -mamx-int8

SRCS    := $(shell find native -name '*.c' | sort)
HDRS    := $(shell find native -name '*.h') include/tilepass.h $(GEN_HDRS)
OBJS    := $(patsubst native/%.c,$(BUILD)/obj/%.o,$(SRCS))
SOBJS   := $(patsubst native/%.c,$(BUILD)/san/%.o,$(SRCS))
LIB     := $(BUILD)/libtilepass.so
SANLIB  := $(BUILD)/san/libtilepass.so

CTESTS_SRC := $(wildcard tests/c/test_*.c)
CTESTS     := $(patsubst tests/c/%.c,$(BUILD)/ctest/%,$(CTESTS_SRC))

isa_flags = $(if $(findstring _amx,$(1)),$(ISA_AMX),$(if $(findstring _avx512,$(1)),$(ISA_AVX512),$(if $(findstring _avx2,$(1)),$(ISA_AVX2),)))

.PHONY: all lib sanlib test ctest example pytest santest demo bench venv venv-test wheel clean
all: lib
lib: $(LIB)
sanlib: $(SANLIB)

$(GEN_DIR)/tp_unicode_data.h: native/tokenizer/gen_unicode.py
	@mkdir -p $(dir $@)
	$(PYTHON) native/tokenizer/gen_unicode.py $@

$(BUILD)/obj/%.o: native/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_REL) $(call isa_flags,$<) -c $< -o $@

$(BUILD)/san/%.o: native/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_SAN) $(call isa_flags,$<) -c $< -o $@

# Linked to a temporary name and renamed, so a process that has the library mapped never sees a
# half-written file.
$(LIB): $(OBJS)
	$(CC) -shared -Wl,--no-undefined -o $@.tmp $^ $(LDLIBS) && mv $@.tmp $@

$(SANLIB): $(SOBJS)
	$(CC) -shared -fsanitize=address,undefined -o $@.tmp $^ $(LDLIBS) && mv $@.tmp $@

# C tests link the sanitizer build of the library and only use the public header.
$(BUILD)/ctest/%: tests/c/%.c tests/c/tp_check.h $(SANLIB) include/tilepass.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -Iinclude $< -o $@ \
	    -L$(BUILD)/san -ltilepass -Wl,-rpath,$(abspath $(BUILD)/san) $(LDLIBS)

# The virtualenv of the main job (`make demo`): the pinned run-time dependencies only (no torch, no
# transformers), then the project in editable mode (`tilepass` = encoder/ + convert/; the runtime loads
# build/libtilepass.so), and a .pth that puts the checkout on sys.path, so that its `encoder` and `convert`
# folders import from anywhere in this venv, as the tests, benchmarks and examples use them.
RUNTIME_DEPS := "numpy>=1.26" "cffi>=1.16" "gguf==0.19.0" "safetensors>=0.4" "tokenizers>=0.20" "Pillow>=13" "pypdfium2>=5.0"
# What `make test` (and bench) adds: torch (the wheel this machine keeps on disk), transformers, pytest,
# sentencepiece (the reference tokenizer of tests/test_tokenizer_spm.py), the server's FastAPI + uvicorn (the `server`
# extra) and the openai client + httpx that tests/test_server*.py talk to it with, and Ray Data (the `ray` extra:
# tilepass-batch --ray, tests/test_ray_batch.py; ray 2.60 brings pyarrow, pandas, protobuf, msgpack, jsonschema:
# about 150 MB of wheels, 500 MB installed).
TEST_DEPS    := "torch==2.13.0" "transformers==5.23.0" "pytest>=8" "sentencepiece>=0.2" \
                "fastapi>=0.110" "uvicorn>=0.29" "openai>=1.40" "httpx>=0.27" "ray[data]>=2.40"
$(VENV)/.stamp: pyproject.toml native/build_hook.py
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(RUNTIME_DEPS)
	$(VPY) -m pip install -q --no-deps -e .
	$(VPY) -c "import site, sys; open(site.getsitepackages()[0] + '/tilepass-checkout.pth', 'w').write(sys.argv[1] + '\n')" "$(CURDIR)"
	touch $@
venv: $(VENV)/.stamp

# (the Makefile too: a change of TEST_DEPS installs the new ones into an existing venv)
$(VENV)/.stamp-test: $(VENV)/.stamp Makefile
	$(VPY) -m pip install -q $(TEST_DEPS)
	touch $@
venv-test: $(VENV)/.stamp-test

# pip builds the library with `make lib` (native/build_hook.py) and puts it in the wheel with the header.
wheel:
	$(PYTHON) -m pip wheel -q --no-deps -w $(BUILD)/wheel .
	@ls -1 $(BUILD)/wheel/tilepass-*.whl

# The C example (examples/ocr.c: a page image in, markdown out, through the session API): only the public header
# and the library (sanitizer build), run on the GGUF files llama.cpp's converter wrote (../shared/fixtures:
# DeepSeek-OCR v1, DeepSeek-OCR-2 and PaddleOCR-VL, random weights) and on the bundled trained model (examples/model converted to
# GGUF, examples/page.png); the PNG pages become binary PPM with Pillow (the library decodes no PNG).
FIXTURES ?= ../shared/fixtures
EXDIR    := $(BUILD)/examples
EXAMPLE  := $(EXDIR)/ocr
TO_PPM   := $(VPY) -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').save(sys.argv[2])"
$(EXAMPLE): examples/ocr.c $(SANLIB) include/tilepass.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -Iinclude $< -o $@ \
	    -L$(BUILD)/san -ltilepass -Wl,-rpath,$(abspath $(BUILD)/san) $(LDLIBS)
$(EXDIR)/model/text-f32.gguf: examples/model/config.json $(VENV)/.stamp
	@mkdir -p $(dir $@)
	$(VPY) -c "import sys; from pathlib import Path; sys.path.insert(0, 'examples/ocrtrain'); import engine_check; \
	    engine_check.convert_files(Path('examples/model'), Path('$(EXDIR)/model'), ['f32'])"
example: $(EXAMPLE) $(EXDIR)/model/text-f32.gguf
	@set -e; for T in $(FIXTURES)/llamacpp-tiny-v1 $(FIXTURES)/llamacpp-tiny-ocr2 $(FIXTURES)/llamacpp-tiny-paddleocr-vl; do \
	    test -f $$T/text-f16.gguf || { echo "make example: fixture $$T missing"; exit 1; }; \
	    P=$(EXDIR)/$$(basename $$T).ppm; $(TO_PPM) $$T/page.png $$P; \
	    echo "== $(EXAMPLE) $$T"; ASAN_OPTIONS=detect_leaks=1 $(EXAMPLE) $$T/text-f16.gguf $$T/mmproj-f32.gguf $$P 8; \
	done; $(TO_PPM) examples/page.png $(EXDIR)/page.ppm; echo "== $(EXAMPLE) examples/model (trained)"; \
	ASAN_OPTIONS=detect_leaks=1 $(EXAMPLE) $(EXDIR)/model/text-f32.gguf $(EXDIR)/model/mmproj-f32.gguf $(EXDIR)/page.ppm 2048

ctest: $(CTESTS)
	@set -e; for t in $(CTESTS); do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 $$t; done

pytest: venv venv-test lib
	$(VPY) -m pytest -q tests

# The kernel and op suites (every ISA path, odd sizes and tails), the decoder and the llama.cpp-file vision
# tests again against the sanitizer build of the library, in the same Python (ASan/UBSan preloaded).
SAN_PYTESTS := tests/test_quants.py tests/test_qgemm.py tests/test_gemv_decode.py tests/test_mul_mat.py \
	tests/test_mul_mat_bf16.py tests/test_ops_attention.py tests/test_attention_decode.py tests/test_kv_cache_f16.py \
	tests/test_kv_cache_q8.py tests/test_ops_conv.py tests/test_ops_copy.py tests/test_ops_interpolate.py \
	tests/test_ops_norm.py tests/test_ops_rope_topk.py tests/test_activations.py tests/test_core_smoke.py \
	tests/test_text_decoder.py tests/test_vision_llamacpp.py tests/test_linear.py tests/test_hardening_native.py \
	tests/test_tokenizer_fuzz.py tests/test_ops_sigmoid_div.py tests/test_sampler_native.py tests/test_chat_template_native.py \
	tests/test_grounding_native.py
santest: venv venv-test sanlib
	@echo "== pytest kernels and ops under ASan+UBSan ($(SANLIB))"
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	    ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 TILEPASS_LIB=$(SANLIB) \
	    $(VPY) -m pytest -q -p no:cacheprovider $(SAN_PYTESTS)

test: venv venv-test lib ctest example santest fuzz-smoke
	$(VPY) -m pytest -q tests

# Fuzzing (tests/fuzz/): fuzz_load (the input as a GGUF file: tp_gguf_open and its accessors, tp_vision_load /
# tp_text_load and, when they load, a small encode / eval) and fuzz_image (tp_page_from_rgb, tp_rgb_resize,
# tp_image_tile_grid with sizes and parameters from the input). Seeds are written by tests/fuzz/make_seeds.py
# (tiny synthetic models, the fixtures cut down) into $(FUZZ_DIR)/seeds/<target>.
#   make fuzz        clang's libFuzzer (the library's sources compiled in, with coverage, ASan and UBSan); each
#                    target runs FUZZ_SECONDS (default 60); new inputs go to $(FUZZ_DIR)/corpus/<target>, crashes
#                    to $(FUZZ_DIR)/crash-<target>-*. Needs clang (apt-get install -y clang; FUZZ_CC=clang-NN).
#   make fuzz-smoke  (part of `make test`) the same targets without libFuzzer: gcc, the ASan/UBSan library and
#                    tests/fuzz/fuzz_smoke_main.c feeding each seed and FUZZ_SMOKE_MUTATIONS fixed mutations of it.
FUZZ_CC             ?= clang
FUZZ_SECONDS        ?= 60
FUZZ_SMOKE_MUTATIONS ?= 150
FUZZ_DIR            := $(BUILD)/fuzz
FUZZ_TARGETS        := load image
FUZZ_SEEDS          := $(FUZZ_DIR)/seeds/.stamp
FUZZ_OBJS           := $(patsubst native/%.c,$(FUZZ_DIR)/obj/%.o,$(SRCS))
FUZZ_CFLAGS         := $(CSTD) -Wall -Wextra -fPIC -pthread -Iinclude $(addprefix -I,$(NATIVE_DIRS)) -I$(GEN_DIR) -O1 -g \
	-fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

$(FUZZ_SEEDS): tests/fuzz/make_seeds.py $(VENV)/.stamp
	$(VPY) tests/fuzz/make_seeds.py $(FUZZ_DIR)/seeds --fixtures $(FIXTURES)
	touch $@

$(FUZZ_DIR)/smoke_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_smoke_main.c $(SANLIB) include/tilepass.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -Iinclude $< \
	    tests/fuzz/fuzz_smoke_main.c -o $@ -L$(BUILD)/san -ltilepass -Wl,-rpath,$(abspath $(BUILD)/san) $(LDLIBS)

fuzz-smoke: $(FUZZ_SEEDS) $(addprefix $(FUZZ_DIR)/smoke_,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do echo "== fuzz-smoke $$t"; \
	    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    FUZZ_SMOKE_LAST=$(FUZZ_DIR)/smoke-last-$$t.bin \
	    $(FUZZ_DIR)/smoke_$$t -n $(FUZZ_SMOKE_MUTATIONS) $(FUZZ_DIR)/seeds/$$t; done

$(FUZZ_DIR)/obj/%.o: native/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(call isa_flags,$<) -c $< -o $@

# CPU detection asks __builtin_cpu_supports("f16c"), which clang 14 does not know: gcc compiles it (no
# sanitizer or coverage needed there: it only reads CPUID).
$(FUZZ_DIR)/obj/core/cpu.o: native/core/cpu.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 -g -c $< -o $@

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJS) include/tilepass.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJS) -o $@ $(LDLIBS)
# (only pattern rules name them: kept, or make would delete them as intermediates and rebuild them every time)
.SECONDARY: $(FUZZ_OBJS)

.PHONY: fuzz fuzz-smoke
fuzz:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "make fuzz: '$(FUZZ_CC)' not found: the fuzz targets need clang's libFuzzer (Debian/Ubuntu: apt-get install -y clang, or FUZZ_CC=clang-NN). make fuzz-smoke runs them without it."; exit 1; }
	@$(MAKE) --no-print-directory $(FUZZ_SEEDS) $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))
	@failed=""; for t in $(FUZZ_TARGETS); do mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	    echo "== fuzz $$t for $(FUZZ_SECONDS) s (corpus $(FUZZ_DIR)/corpus/$$t)"; \
	    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_DIR)/crash-$$t- $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/seeds/$$t || failed="$$failed $$t"; \
	done; if [ -n "$$failed" ]; then echo "make fuzz: findings in:$$failed (inputs: $(FUZZ_DIR)/crash-*)"; exit 1; fi

demo: venv lib
	$(VPY) examples/demo.py

bench: venv venv-test lib
	$(VPY) tests/bench/run.py --json $(BUILD)/bench.json

clean:
	rm -rf $(BUILD)
