/*
 * tilepass.h - the public C API of libtilepass.
 *
 * A ggml-style compute library for document-OCR vision-language models:
 *   - tensors are a type plus ne[4] sizes (innermost first) and nb[4] byte strides;
 *   - model code builds a graph by calling small pure op constructors;
 *   - a graph is planned (topological order, buffers of dead intermediates reused)
 *     and computed by a thread pool in one call.
 *
 * Error handling (one path, whisper.cpp style):
 *   - functions that create a handle return a tp_status and fill an optional tp_error;
 *   - op constructors return NULL on failure and record the first failure in their
 *     context ("sticky" error): a whole graph can be built and checked once, with
 *     tp_context_status()/tp_context_error(). A NULL input makes a constructor
 *     return NULL without overwriting the first error;
 *   - no function calls exit() or abort() on bad input.
 * There is no global mutable state: separate contexts may be used from separate threads.
 *
 * The region between TP_CDEF_BEGIN and TP_CDEF_END is fed verbatim (minus preprocessor
 * lines) to cffi by the Python binding: keep it plain C declarations.
 */

/*
 * Threads, memory-mapped files, untrusted input (the contract; README "Guarantees" says the same)
 *
 * Threads. The library has no global mutable state and starts no thread but the workers of the pools it
 * is asked for (tp_threadpool_create, and one pool per loaded model).
 *   - tp_context (with its tensors and graphs): one thread at a time. A child context (a model's graph)
 *     only reads its parent's leaves, so a weights context may serve graphs on several threads at once as
 *     long as nothing writes it.
 *   - tp_threadpool: one computation at a time (two threads computing with one pool at once is undefined).
 *   - tp_gguf: immutable once open: any number of threads may read it.
 *   - tp_vision_model: may be shared. tp_vision_encode, tp_vision_encode_rgb, tp_vision_plan_bytes,
 *     tp_vision_get_stage and tp_vision_trim take turns on the model's lock (each encode uses the model's whole pool); the getters
 *     (tp_vision_get_info, tp_vision_mode_name, tp_vision_preprocess_params, tp_vision_page_n_tokens,
 *     tp_vision_last_compute_bytes) may be called from any thread at any time.
 *   - tp_text_model: holds a built-in sequence (tp_text_eval, tp_text_reset, tp_text_n_past) and may have
 *     more (tp_text_seq_create), each with its own KV cache. A sequence takes one call at a time: an eval
 *     (tp_text_eval, tp_text_eval_pos, tp_text_eval_batch) that needs a sequence another call is using fails
 *     at once with TP_ERR_INVALID_ARGUMENT, "in use by another thread" ("model in use by another thread" for
 *     the built-in one), and changes nothing. Evals of different sequences of one model may be called from
 *     different threads: their computations take turns on the model's lock (one pool). tp_text_reset /
 *     tp_text_seq_reset wait for a call in progress on that sequence, then empty it; tp_text_n_past,
 *     tp_text_seq_n_past, tp_text_seq_n_ctx, tp_text_get_info, tp_text_token_bytes, tp_text_get_tokenizer
 *     and tp_text_tokenize may be called from any thread at any time. tp_text_seq_create may be called from any thread; tp_text_trim takes its turn on the model's lock.
 *   - tp_tokenizer: immutable once loaded: any number of threads may tokenize with it at once. A
 *     tp_detokenizer is one stream: one thread at a time.
 *   - tp_page: immutable once made: any number of threads may read its views.
 *   - tp_session: one call at a time (submit, generate, reset, free, the getters), but tp_session_cancel, which any
 *     thread may call at any time while the session lives. Sessions over the same loaded models each evaluate their
 *     own sequence: they may run on different threads (their computations take turns on each model's lock).
 *     tp_session_generate_batch is one call on each of its sessions (its on_done callback may submit to the
 *     session that stopped; its callbacks run on the calling thread).
 *   - tp_*_free of an object must not overlap any other call on it.
 *   - Abort callbacks run on the thread that called the computation (tp_graph_compute, tp_vision_encode,
 *     tp_text_eval, tp_text_eval_batch), between graph nodes.
 *
 * Memory-mapped files. A GGUF file is mapped read-only (PROT_READ, MAP_PRIVATE) from tp_gguf_open /
 * tp_*_load until tp_gguf_close / tp_*_free; matrices are read from the mapping at every computation.
 *   - Truncating the file (or rewriting it shorter) while it is mapped makes the next read of a page past
 *     its new end raise SIGBUS in whichever thread touches it (during an encode or an eval, or the text
 *     model's first eval, which makes the weights resident). The library installs no signal handler (no
 *     global state): a process that must survive it installs its own, as tilepass-cli does (exit 135).
 *   - Rewriting it in place at the same size: later reads see the new bytes as weight values (wrong
 *     results, no memory error: every offset, size and shape was checked at open and load, and after load
 *     the mapped bytes are only read as numbers). Copies made at load (norms, biases and tables made F32,
 *     TP_PRECISION_INT8's Q8_0 matrices, the vocabulary) keep the old values.
 *   - Replacing the file by rename (a new download moved into place) is harmless: the old file stays
 *     mapped until freed.
 *
 * Untrusted input.
 *   - GGUF: tp_gguf_open checks the magic and version (2, 3), bounds every count, length, offset and size
 *     by the bytes left in the file (overflow-safe, before allocating anything), the value and tensor
 *     types, dims (1..4, each >= 1, element counts that cannot overflow, rows whole blocks), names
 *     (length, duplicates), the alignment, and that every tensor's data lies inside the file without
 *     overlapping another: any inconsistency is TP_ERR_FORMAT naming the file and the problem. The loaders
 *     (tp_vision_load, tp_text_load) then check every tensor the model uses against the shapes the
 *     hyperparameters imply, and the hyperparameters themselves (ranges, divisibility), and fail with
 *     TP_ERR_FORMAT / TP_ERR_UNSUPPORTED; a weight of a type an op cannot take fails the first encode or
 *     eval with a message (every time; the model stays valid). tests/fuzz/ holds the fuzz targets.
 *   - Images: tp_page_from_rgb / tp_vision_encode_rgb / tp_rgb_resize refuse NULL pointers, sizes <= 0,
 *     more than TP_IMAGE_MAX_PIXELS pixels, strides below width · 3 and parameters out of range
 *     (TP_IMAGE_MAX_SIDE, TP_IMAGE_MAX_TILES) with TP_ERR_INVALID_ARGUMENT; a page whose views the model
 *     cannot encode is refused by tp_vision_encode.
 *   - Resource limits: an image is at most TP_IMAGE_MAX_PIXELS pixels, a view or tile side at most
 *     TP_IMAGE_MAX_SIDE, a page at most TP_IMAGE_MAX_TILES tiles plus its whole-image view; a model's
 *     memory is what its file's shapes say (the mapping plus the F32 copies), an encode's what its views
 *     need (tp_vision_last_compute_bytes). tp_text_params.n_ctx = 0 sizes the KV cache by the FILE's
 *     context length: with an untrusted file, give n_ctx yourself.
 */
#ifndef TILEPASS_H
#define TILEPASS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TP_CDEF_BEGIN */

/* The version, written only here: tp_version() returns TILEPASS_VERSION, and the Python build and runtime
 * (the wheel's metadata, tilepass.__version__, the CLIs' --version, the GGUF key tilepass.writer_version)
 * read these three numbers from this file. */
#define TILEPASS_VERSION_MAJOR 0
#define TILEPASS_VERSION_MINOR 1
#define TILEPASS_VERSION_PATCH 0
#define TILEPASS_STRINGIFY_(x) #x
#define TILEPASS_XSTRINGIFY_(x) TILEPASS_STRINGIFY_(x)
/* "MAJOR.MINOR.PATCH" as a string literal. (One line: the cffi binding drops preprocessor lines.) */
#define TILEPASS_VERSION TILEPASS_XSTRINGIFY_(TILEPASS_VERSION_MAJOR) "." TILEPASS_XSTRINGIFY_(TILEPASS_VERSION_MINOR) "." TILEPASS_XSTRINGIFY_(TILEPASS_VERSION_PATCH)
/* Maximum number of tensor dimensions. */
#define TP_MAX_DIMS 4

/* ---------------------------------------------------------------------------------------------
 * Status codes and errors
 * ------------------------------------------------------------------------------------------- */

typedef enum tp_status {
    TP_OK = 0,
    TP_ERR_INVALID_ARGUMENT = 1, /* a NULL handle, a value out of range */
    TP_ERR_SHAPE = 2,            /* tensor shapes that do not fit the operation */
    TP_ERR_TYPE = 3,             /* a tensor type the operation does not support */
    TP_ERR_OUT_OF_MEMORY = 4,    /* an allocation failed or a size overflowed */
    TP_ERR_IO = 5,               /* a file could not be opened, read or mapped */
    TP_ERR_FORMAT = 6,           /* a file is corrupt, truncated or of another kind */
    TP_ERR_UNSUPPORTED = 7,      /* valid input this build cannot handle */
    TP_ERR_INTERNAL = 8,         /* a bug in libtilepass */
    TP_ERR_ABORTED = 9           /* an abort callback stopped the computation (message "aborted ...") */
} tp_status;

/* A message for a failure that happened before a handle existed. */
typedef struct tp_error {
    tp_status status;
    char message[512];
} tp_error;

/* The library's version, "MAJOR.MINOR.PATCH": the TILEPASS_VERSION of the header it was built with. A
 * program checks that the library it loaded is the one its header describes with
 * strcmp(tp_version(), TILEPASS_VERSION) == 0; the Python binding refuses a library that differs. */
const char *tp_version(void);

/* A short constant English name of a status code ("ok", "invalid argument", ...). */
const char *tp_status_string(tp_status status);

/* ---------------------------------------------------------------------------------------------
 * Types. The numeric values equal ggml's GGML_TYPE_* so that a GGUF tensor type maps directly.
 * ------------------------------------------------------------------------------------------- */

typedef enum tp_type {
    TP_TYPE_F32 = 0,
    TP_TYPE_F16 = 1,
    TP_TYPE_Q4_0 = 2,
    TP_TYPE_Q4_1 = 3,
    TP_TYPE_Q5_0 = 6, /* Q4_1, Q5_0, Q5_1: what llama.cpp's K-quant files hold where a row is not */
    TP_TYPE_Q5_1 = 7, /* a multiple of 256 (DeepSeek-OCR's 896-wide expert rows)                  */
    TP_TYPE_Q8_0 = 8,
    TP_TYPE_Q4_K = 12,
    TP_TYPE_Q5_K = 13,
    TP_TYPE_Q6_K = 14,
    TP_TYPE_I32 = 26,
    TP_TYPE_BF16 = 30
} tp_type;

/* Whether this build knows the type (false for any value not listed above). */
bool tp_type_is_valid(int type);
/* A short name ("f32", "q4_K", ...); "unknown" for invalid values. */
const char *tp_type_name(int type);
/* Elements per block (1 for F32/F16/BF16/I32, 32 for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, 256 for K-quants); 0 if invalid. */
int64_t tp_type_block_elements(int type);
/* Bytes per block; 0 if invalid. */
size_t tp_type_block_bytes(int type);
/* Bytes of a row of n elements, or 0 when the type is invalid or n is not a multiple of its block. */
size_t tp_type_row_bytes(int type, int64_t n);

/* ---------------------------------------------------------------------------------------------
 * Quantisation (exact GGUF/ggml block layouts)
 * ------------------------------------------------------------------------------------------- */

/*
 * Quantise n_rows rows of n_per_row floats into `type` (any type above but I32).
 * n_per_row must be a multiple of the type's block size; dst_size must hold
 * n_rows * tp_type_row_bytes(type, n_per_row) bytes. *written (optional) receives the bytes written.
 */
tp_status tp_quantize(int type, const float *src, int64_t n_rows, int64_t n_per_row,
                      void *dst, size_t dst_size, size_t *written, tp_error *err);

/* The inverse: n_rows rows of `type` data (src_size bytes) to floats. */
tp_status tp_dequantize(int type, const void *src, size_t src_size, int64_t n_rows,
                        int64_t n_per_row, float *dst, tp_error *err);

/* ---------------------------------------------------------------------------------------------
 * CPU features and kernel dispatch
 * ------------------------------------------------------------------------------------------- */

typedef enum tp_cpu_path {
    TP_CPU_SCALAR = 0,
    TP_CPU_AVX2 = 1,   /* AVX2 + FMA + F16C */
    TP_CPU_AVX512 = 2  /* AVX-512 F/BW/VL (+VNNI, +BF16 where present) */
} tp_cpu_path;

/* The best path this CPU supports. */
tp_cpu_path tp_cpu_best_path(void);
/* A name for a path ("scalar", "avx2", "avx512"). */
const char *tp_cpu_path_name(tp_cpu_path path);

/* ---------------------------------------------------------------------------------------------
 * Thread pool
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_threadpool tp_threadpool;

typedef struct tp_threadpool_params {
    int n_threads; /* 1..64; the calling thread is one of them */
} tp_threadpool_params;

tp_threadpool_params tp_threadpool_default_params(void);
/* Start n_threads-1 workers; they sleep while no graph is computing. */
tp_status tp_threadpool_create(const tp_threadpool_params *params, tp_threadpool **out, tp_error *err);
/* Stop and join the workers. NULL is ignored. */
void tp_threadpool_free(tp_threadpool *pool);
int tp_threadpool_n_threads(const tp_threadpool *pool);

/* ---------------------------------------------------------------------------------------------
 * Contexts and tensors
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_context tp_context;
typedef struct tp_tensor tp_tensor;

/* Arithmetic precision of tp_mul_mat and tp_attention in a context. */
typedef enum tp_precision {
    TP_PRECISION_F32 = 0, /* F32 activations (the default) */
    TP_PRECISION_BF16 = 1, /* products of >= 32 tokens may round their inputs to BF16 and accumulate in
                            * F32: tp_mul_mat's F32/F16/BF16 weights and activations (AMX tiles, else
                            * AVX512-BF16), tp_attention's q·scale, k, probabilities and v (AMX tiles,
                            * else AVX512-BF16; head sizes multiples of 32/16); otherwise, and on CPUs
                            * without them, F32 */
    TP_PRECISION_INT8 = 2  /* tp_vision_params only: the vision file's F32/F16/BF16 weight matrices are
                            * quantised to Q8_0 once at load (ggml's quantiser: what a Q8_0 file holds) and
                            * multiply 8-bit activation blocks (VNNI int8 products), the rest as
                            * TP_PRECISION_BF16; a Q8_0 file's speed from an F16 file */
} tp_precision;

typedef struct tp_context_params {
    /* Kernel path for graphs computed in this context: -1 = the best the CPU has (the
     * environment variable TILEPASS_CPU=scalar|avx2|avx512 may lower it), else a tp_cpu_path
     * (clamped to what the CPU supports). */
    int cpu_path;
    int precision; /* a tp_precision */
    /* Cancellation, in the style of ggml/whisper.cpp (NULL: none; tp_context_default_params sets NULL).
     * tp_graph_compute calls abort_callback(abort_callback_data) on its calling thread after each computing
     * node (while the pool's other threads wait at the node's barrier); the first time it returns true the
     * computation stops after that node and returns TP_ERR_ABORTED ("aborted ..."), recorded in the context
     * like any other error (clear it with tp_context_clear_error to compute again). The outputs are then
     * undefined. The callback must be cheap (it runs once per node: thousands of times per encode) and must
     * not call into this context, nor into the model computing (tp_text_reset from it would wait for itself);
     * it may read a flag another thread or a signal handler sets (an atomic or a volatile sig_atomic_t). */
    bool (*abort_callback)(void *data);
    void *abort_callback_data;
} tp_context_params;

/* A ready-made abort callback: true once the file descriptor *(const int *)data is readable (or closed at
 * the other end), checked with a zero-timeout poll() that consumes nothing. Point it at the read end of a pipe
 * that a signal handler (Python's signal.set_wakeup_fd, a self-pipe) or another thread writes to, and a
 * computation stops within a node of the write. */
bool tp_abort_when_readable(void *data);

tp_context_params tp_context_default_params(void);
tp_status tp_context_create(const tp_context_params *params, tp_context **out, tp_error *err);
/* Frees every tensor, graph and buffer the context owns. NULL is ignored. */
void tp_context_free(tp_context *ctx);
/* The first error recorded since creation or the last clear (TP_OK if none). */
tp_status tp_context_status(const tp_context *ctx);
/* Its message ("" if none). Valid until the next call on this context. */
const char *tp_context_error(const tp_context *ctx);
void tp_context_clear_error(tp_context *ctx);
/* The kernel path this context computes with. */
tp_cpu_path tp_context_cpu_path(const tp_context *ctx);

/* A leaf tensor with zeroed data allocated and owned by the context.
 * n_dims in 1..4; ne[i] >= 1; dims past n_dims are 1. */
tp_tensor *tp_new_tensor(tp_context *ctx, int type, int n_dims, const int64_t *ne);
/* A leaf tensor over caller-owned memory (e.g. a memory-mapped GGUF). data must hold
 * nbytes >= the tensor's size and outlive the context's use of it. */
tp_tensor *tp_new_tensor_external(tp_context *ctx, int type, int n_dims, const int64_t *ne,
                                  void *data, size_t nbytes);

int tp_tensor_type(const tp_tensor *t);
int tp_tensor_n_dims(const tp_tensor *t);
int64_t tp_tensor_ne(const tp_tensor *t, int dim);  /* 1 for dims >= n_dims, 0 for bad args */
size_t tp_tensor_nb(const tp_tensor *t, int dim);
int64_t tp_tensor_nelements(const tp_tensor *t);
/* Bytes spanned by the tensor's data (from its first to one past its last byte). */
size_t tp_tensor_nbytes(const tp_tensor *t);
bool tp_tensor_is_contiguous(const tp_tensor *t);
/* The data pointer: set for leaves; for op results only after the graph computed (NULL before). */
void *tp_tensor_data(const tp_tensor *t);
void tp_tensor_set_name(tp_tensor *t, const char *name);
const char *tp_tensor_name(const tp_tensor *t);

/* Copy n = nelements floats into a contiguous F32/F16/BF16 tensor (converting), or n int32 into I32. */
tp_status tp_tensor_set_f32(tp_tensor *t, const float *src, int64_t n);
tp_status tp_tensor_set_i32(tp_tensor *t, const int32_t *src, int64_t n);
/* Read a tensor's logical contents (any strides; F32/F16/BF16/quantised) as n = nelements floats,
 * innermost dimension first. */
tp_status tp_tensor_get_f32(const tp_tensor *t, float *dst, int64_t n);

/* ---------------------------------------------------------------------------------------------
 * Op constructors. Each returns a new tensor (NULL on failure, see the top of this file).
 * Results are F32 unless said. Layout notes:
 *   - a matrix of n tokens of width d is ne = [d, n];
 *   - images/feature maps are channels-innermost: ne = [C, W, H, B].
 * ------------------------------------------------------------------------------------------- */

/* a: [K, M, a2, a3] weights (F32/F16/BF16/quantised), b: [K, N, b2, b3] F32, b2 % a2 == 0 and
 * b3 % a3 == 0 (a is broadcast). Result [M, N, b2, b3] = b · aᵀ per (b2, b3). */
tp_tensor *tp_mul_mat(tp_context *ctx, tp_tensor *a, tp_tensor *b);

/* Activation applied by tp_linear after the bias. */
typedef enum tp_act { TP_ACT_NONE = 0, TP_ACT_GELU = 1, TP_ACT_QUICK_GELU = 2, TP_ACT_GELU_TANH = 3 } tp_act;

/* act(tp_mul_mat(a, b) + bias): bias F32 [M] (NULL: none) added to every output row, then act element-wise
 * (TP_ACT_GELU = tp_gelu, TP_ACT_QUICK_GELU = tp_quick_gelu, TP_ACT_GELU_TANH = tp_gelu_tanh). The same numbers as those ops; one op so
 * that the int8 GEMM applies bias and activation to each output tile while it is in cache, instead of two
 * more passes over the whole result. */
tp_tensor *tp_linear(tp_context *ctx, tp_tensor *a, tp_tensor *b, tp_tensor *bias, tp_act act);

/* Mixture-of-experts matmul. experts: [K, M, E] weights (any tp_mul_mat weight type); x: [K, n_x, T]
 * F32 with n_x = 1 (one activation per token, broadcast over the slots) or n_x = n_used; ids: I32
 * [n_used, T] expert indices in 0..E-1. Result [M, n_used, T]: result[:, s, t] = experts[:, :, ids[s, t]] ·
 * x[:, s % n_x, t]. Each selected expert's rows are read once per computation for all the tokens routed
 * to it. An out-of-range id zero-fills its column and makes tp_graph_compute fail. */
tp_tensor *tp_mul_mat_id(tp_context *ctx, tp_tensor *experts, tp_tensor *x, tp_tensor *ids);

/* Copy src (F32, any strides) into dst (F32 or F16, any strides, same shape; typically a view of a
 * persistent leaf such as a KV cache). The result aliases dst's data: it is an op whose "value" is dst
 * after the copy, so readers that must see the written data depend on the result (or list it as a
 * source). Returns NULL if dst's storage is not a leaf (only leaves' data outlives a graph). */
tp_tensor *tp_cpy(tp_context *ctx, tp_tensor *src, tp_tensor *dst);

/* Element-wise with broadcasting of b over a (each b dim equals a's or is 1). Result shaped as a. */
tp_tensor *tp_add(tp_context *ctx, tp_tensor *a, tp_tensor *b);
tp_tensor *tp_mul(tp_context *ctx, tp_tensor *a, tp_tensor *b);
tp_tensor *tp_div(tp_context *ctx, tp_tensor *a, tp_tensor *b); /* a / b (MoE weight renormalisation) */
tp_tensor *tp_scale(tp_context *ctx, tp_tensor *a, float s);

/* Activations, element-wise. */
tp_tensor *tp_gelu(tp_context *ctx, tp_tensor *a);       /* exact: x·Φ(x) with erf */
tp_tensor *tp_gelu_tanh(tp_context *ctx, tp_tensor *a);  /* tanh approximation */
tp_tensor *tp_quick_gelu(tp_context *ctx, tp_tensor *a); /* x·σ(1.702x) */
tp_tensor *tp_silu(tp_context *ctx, tp_tensor *a);       /* x·σ(x) */
tp_tensor *tp_sigmoid(tp_context *ctx, tp_tensor *a);    /* σ(x) = 1/(1 + e^−x) (MoE sigmoid gating) */

/* Normalisation over dim 0. w and b are [ne0] or NULL. */
tp_tensor *tp_layer_norm(tp_context *ctx, tp_tensor *a, tp_tensor *w, tp_tensor *b, float eps);
tp_tensor *tp_rms_norm(tp_context *ctx, tp_tensor *a, tp_tensor *w, float eps);

/* softmax(a·scale + mask) over dim 0. mask (NULL or F32) is [ne0, ne1, m2, m3] broadcast over
 * dims 2 and 3 as in tp_add. */
tp_tensor *tp_softmax(tp_context *ctx, tp_tensor *a, tp_tensor *mask, float scale);

/* 2-D convolution, channels-innermost. x: [Cin, W, H, B] F32; kernel: [KW, KH, Cin, Cout]
 * (PyTorch's [Cout, Cin, KH, KW]); bias: [Cout] or NULL. Result [Cout, OW, OH, B] with
 * OW = (W + 2·pad_x − KW)/stride_x + 1 (likewise OH). */
tp_tensor *tp_conv2d(tp_context *ctx, tp_tensor *x, tp_tensor *kernel, tp_tensor *bias,
                     int stride_x, int stride_y, int pad_x, int pad_y);

/* Views share the source's data. ne/nb arrays have n_dims entries (nb[0] = 0 means the element size;
 * nb may be NULL for a contiguous 1-D view); offset in bytes. The view must lie inside its source. */
tp_tensor *tp_view(tp_context *ctx, tp_tensor *a, int n_dims, const int64_t *ne, const size_t *nb,
                   size_t offset);
/* A contiguous tensor seen with another shape of the same element count. */
tp_tensor *tp_reshape(tp_context *ctx, tp_tensor *a, int n_dims, const int64_t *ne);
/* ggml semantics: source dim i becomes result dim axis_i; (axis0..axis3) a permutation of 0..3. */
tp_tensor *tp_permute(tp_context *ctx, tp_tensor *a, int axis0, int axis1, int axis2, int axis3);
/* Swap dims 0 and 1. */
tp_tensor *tp_transpose(tp_context *ctx, tp_tensor *a);
/* A contiguous F32 copy of any (strided, F32/F16/BF16) tensor. */
tp_tensor *tp_cont(tp_context *ctx, tp_tensor *a);
/* Concatenate along dim; the other dims must match. */
tp_tensor *tp_concat(tp_context *ctx, tp_tensor *a, tp_tensor *b, int dim);
/* Zero padding: before[i] elements in front of and after[i] behind dim i (4 entries each, >= 0). */
tp_tensor *tp_pad(tp_context *ctx, tp_tensor *a, const int *before, const int *after);
/* a: [K, R, a2, a3] (any type), idx: I32 [n, a2, a3] with values in 0..R-1.
 * Result F32 [K, n, a2, a3]: rows of a picked by idx. An out-of-range index is an error at compute
 * time for tp_graph_compute (the row is zero-filled and TP_ERR_INVALID_ARGUMENT returned). */
tp_tensor *tp_get_rows(tp_context *ctx, tp_tensor *a, tp_tensor *idx);

typedef enum tp_interp_mode {
    TP_INTERP_LINEAR = 0,     /* 1-D along dim 0 (ne1 must stay) */
    TP_INTERP_BILINEAR = 1,   /* 2-D over dims 0, 1 */
    TP_INTERP_BICUBIC = 2,    /* 2-D, a = -0.75 as PyTorch */
    TP_INTERP_BICUBIC_AA = 3, /* 2-D, antialiased as PyTorch's antialias=True */
    TP_INTERP_BILINEAR_AA = 4
} tp_interp_mode;
/* Resize dims 0 (and 1) of a [W, H, C, N] F32 tensor to ne0 × ne1, align_corners=False,
 * identical to torch.nn.functional.interpolate. */
tp_tensor *tp_interpolate(tp_context *ctx, tp_tensor *a, int64_t ne0, int64_t ne1, int mode);

/* NeoX rotary embedding (rotate_half) of the first n_rot dims of each head.
 * a: [D, H, T, B] F32, pos: I32 [T] positions. theta_i = pos · base^(−2i/n_rot). */
tp_tensor *tp_rope_neox(tp_context *ctx, tp_tensor *a, tp_tensor *pos, int n_rot, float freq_base);

/* NeoX rotary embedding with several position axes (Qwen2-VL-style M-RoPE, 2-D vision RoPE): the rotation
 * pairs i = 0 .. n_rot/2 − 1 are cut into consecutive sections of sections[0], sections[1], ... pairs
 * (their sum is n_rot/2); a pair of section s turns by theta_i = pos[t, s] · base^(−2j/freq_dim), with
 * j = i, or j = i − (the section's first pair) when restart. pos: I32 [T, n_sections], contiguous. */
#define TP_ROPE_MAX_SECTIONS 4
tp_tensor *tp_rope_multi(tp_context *ctx, tp_tensor *a, tp_tensor *pos, int n_rot, float freq_base,
                         const int32_t *sections, int n_sections, int freq_dim, bool restart);

/* The k largest entries of each row (dim 0) of a [n, rows, ...] F32 tensor, largest first,
 * ties to the lower index. Result I32 [k, rows, ...]. */
tp_tensor *tp_top_k(tp_context *ctx, tp_tensor *a, int k);

/* Fused attention, online softmax (never an n×n buffer).
 *   q: [D, Nq, H, B], k: [D, Nk, Hkv, B], v: [Dv, Nk, Hkv, B] (any strides; q F32, k and v F32 or F16 — the F16 KV cache; H % Hkv == 0).
 *   Result: [Dv, H, Nq, B] (so that a reshape gives [Dv·H, Nq, B]).
 *   logits[i, j] = scale · q_i·k_j + bias[j, i, h, b] + rel_h[j / rel_w.ne0, i, h, b] + rel_w[j % rel_w.ne0, i, h, b]
 * Options (NULL members are off):
 *   bias:     F32 [Nk, Nq, H or 1, B or 1] additive;
 *   rel_h/rel_w: F32 [Kh, Nq, H, B] / [Kw, Nq, H, B], Kh·Kw = Nk: a decomposed relative-position
 *             bias (SAM) added without materialising it;
 *   causal:   query i sees keys j <= i + (Nk − Nq);
 *   segments: I32 [n_seg + 1] ascending offsets from 0 to Nq (requires Nq == Nk): a token attends
 *             only inside its own segment, so views of different lengths share one call. */
typedef struct tp_attention_opts {
    float scale;
    bool causal;
    tp_tensor *bias;
    tp_tensor *rel_h;
    tp_tensor *rel_w;
    tp_tensor *segments;
} tp_attention_opts;

/* scale = 0 (meaning 1/sqrt(D) at build time), everything else off. */
tp_attention_opts tp_attention_default_opts(void);
tp_tensor *tp_attention(tp_context *ctx, tp_tensor *q, tp_tensor *k, tp_tensor *v,
                        const tp_attention_opts *opts);

/* ---------------------------------------------------------------------------------------------
 * Graphs
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_graph tp_graph;

/* An empty graph owned by ctx (freed with it, or earlier with tp_graph_free). */
tp_graph *tp_graph_new(tp_context *ctx);
void tp_graph_free(tp_graph *g);
/* Mark a tensor as an output: it and everything it depends on are computed, and its buffer is
 * never reused. */
tp_status tp_graph_add_output(tp_graph *g, tp_tensor *t);
/* Topological order, liveness and buffer assignment; allocates the compute buffer. Called by
 * tp_graph_compute when needed; adding an output afterwards re-plans. */
tp_status tp_graph_plan(tp_graph *g);
/* Compute every node with the pool's threads. Errors are also recorded in the context. */
tp_status tp_graph_compute(tp_graph *g, tp_threadpool *pool);
/* After planning: nodes (ops, views included) and the sum of all intermediates' sizes without reuse;
 * peak = the planned buffer of intermediates (with reuse) plus the per-op scratch sized for the
 * thread count of the last compute. */
int tp_graph_n_nodes(const tp_graph *g);
size_t tp_graph_peak_bytes(const tp_graph *g);
size_t tp_graph_total_intermediate_bytes(const tp_graph *g);

/* ---------------------------------------------------------------------------------------------
 * GGUF files (memory-mapped, every offset and size bounds-checked)
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_gguf tp_gguf;

typedef enum tp_gguf_value_type {
    TP_GGUF_UINT8 = 0, TP_GGUF_INT8 = 1, TP_GGUF_UINT16 = 2, TP_GGUF_INT16 = 3,
    TP_GGUF_UINT32 = 4, TP_GGUF_INT32 = 5, TP_GGUF_FLOAT32 = 6, TP_GGUF_BOOL = 7,
    TP_GGUF_STRING = 8, TP_GGUF_ARRAY = 9, TP_GGUF_UINT64 = 10, TP_GGUF_INT64 = 11,
    TP_GGUF_FLOAT64 = 12
} tp_gguf_value_type;

/* Open and validate a GGUF file (v2/v3). Any inconsistency is TP_ERR_FORMAT naming the problem. */
tp_status tp_gguf_open(const char *path, tp_gguf **out, tp_error *err);
void tp_gguf_close(tp_gguf *g);

int64_t tp_gguf_n_kv(const tp_gguf *g);
/* Index of a key, or -1. */
int64_t tp_gguf_find_key(const tp_gguf *g, const char *key);
const char *tp_gguf_key(const tp_gguf *g, int64_t i);
int tp_gguf_kv_type(const tp_gguf *g, int64_t i);
/* For arrays: the element type and count. */
int tp_gguf_arr_type(const tp_gguf *g, int64_t i);
int64_t tp_gguf_arr_n(const tp_gguf *g, int64_t i);
/* Typed getters by key. TP_ERR_INVALID_ARGUMENT if the key is absent, TP_ERR_TYPE if it has
 * another type (integer getters accept any integer type whose value fits). */
tp_status tp_gguf_get_u32(const tp_gguf *g, const char *key, uint32_t *out);
tp_status tp_gguf_get_i64(const tp_gguf *g, const char *key, int64_t *out);
tp_status tp_gguf_get_f32(const tp_gguf *g, const char *key, float *out);
tp_status tp_gguf_get_bool(const tp_gguf *g, const char *key, bool *out);
/* A string value (not NUL-terminated in the file: *len receives its length). */
tp_status tp_gguf_get_str(const tp_gguf *g, const char *key, const char **data, size_t *len);
/* Element j of an array of integers / floats / strings. */
tp_status tp_gguf_get_arr_i64(const tp_gguf *g, const char *key, int64_t j, int64_t *out);
tp_status tp_gguf_get_arr_f32(const tp_gguf *g, const char *key, int64_t j, float *out);
tp_status tp_gguf_get_arr_str(const tp_gguf *g, const char *key, int64_t j, const char **data,
                              size_t *len);

int64_t tp_gguf_n_tensors(const tp_gguf *g);
int64_t tp_gguf_find_tensor(const tp_gguf *g, const char *name);
const char *tp_gguf_tensor_name(const tp_gguf *g, int64_t i);
int tp_gguf_tensor_type(const tp_gguf *g, int64_t i);
int tp_gguf_tensor_n_dims(const tp_gguf *g, int64_t i);
int64_t tp_gguf_tensor_ne(const tp_gguf *g, int64_t i, int dim);
size_t tp_gguf_tensor_nbytes(const tp_gguf *g, int64_t i);
const void *tp_gguf_tensor_data(const tp_gguf *g, int64_t i);
/* A leaf tensor in ctx over the mapped data of tensor `name` (no copy). NULL + context error if
 * the tensor is absent. The tp_gguf must outlive the tensor's use. */
tp_tensor *tp_gguf_load_tensor(tp_gguf *g, tp_context *ctx, const char *name);

/* ---------------------------------------------------------------------------------------------
 * Vision encoders (a "vision" GGUF: general.architecture = clip; the projector type names the model
 * family, tp_vision_info.family).
 *
 * A page is a list of views, images the encoder takes as they are (resized, padded, normalised): a
 * family's image modes say how a page's views are made from an image (tp_vision_preprocess_params,
 * tp_page_from_rgb). tp_vision_encode takes several pages and encodes all of their views in ONE graph
 * computation (same-size views on a batch dimension); the graph for a given set of view sizes is built
 * once and reused. A loaded model may be shared between threads: calls on it take turns.
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_vision_model tp_vision_model;

typedef struct tp_vision_params {
    int n_threads;    /* threads of the model's pool (1..64) */
    int cpu_path;     /* as tp_context_params.cpu_path */
    /* as tp_context_params.precision (default TP_PRECISION_F32), TP_PRECISION_INT8, or -1 = auto:
     * TP_PRECISION_F32 when the file's weights are F32 (exact parity with a float reference),
     * TP_PRECISION_BF16 when they are already rounded (F16, BF16, quantised): about 2x faster where the
     * CPU has AVX512-BF16 or AMX, tokens within cosine 0.999 of F32; tp_vision_get_info reports the
     * choice */
    int precision;
    bool keep_stages; /* keep per-view stage outputs for tp_vision_get_stage (tests, debugging) */
    /* Cancellation (NULL: none), as tp_context_params.abort_callback: asked between the nodes of every encode
     * graph on the thread that called tp_vision_encode / tp_vision_encode_rgb; true stops the encode, which
     * returns TP_ERR_ABORTED ("... aborted ...") with no tokens written. The model stays usable: the next
     * encode rebuilds its graph and gives the same tokens as if nothing had happened. One model shared by
     * threads has one callback: it stops whichever encode is running (and every later one while it answers
     * true). */
    bool (*abort_callback)(void *data);
    void *abort_callback_data;
} tp_vision_params;

tp_vision_params tp_vision_default_params(void);

typedef struct tp_vision_info {
    int32_t n_embd;          /* width of the output tokens (the text model's embedding width) */
    int32_t precision;       /* the tp_precision the model computes with (auto resolved) */
    int32_t n_modes;         /* image modes, named by tp_vision_mode_name; mode 0 is the default */
    int32_t no_repeat_ngram; /* the family's official runner's no-repeat rule: n-grams of this size ... */
    int32_t no_repeat_window;/* ... in a window of this many generated tokens are not repeated */
    char family[32];         /* the model family, e.g. "deepseek_ocr" */
    char projector_type[32]; /* the file's clip.projector_type */
} tp_vision_info;

/* One view: [height][width][3] floats (HWC, normalised), owned by the caller. */
typedef struct tp_image_view {
    const float *pixels;
    int32_t width;
    int32_t height;
} tp_image_view;

/* One page: its views in the order its mode made them (tp_page_from_rgb: the tiles in raster order, then
 * the whole-image view) and the grid the tiles form (grid_cols × grid_rows == n_views − 1), or a 0 × 0
 * grid for a page of one view. */
typedef struct tp_page_views {
    const tp_image_view *views;
    int32_t n_views;
    int32_t grid_cols;
    int32_t grid_rows;
} tp_page_views;

tp_status tp_vision_load(const char *path, const tp_vision_params *params, tp_vision_model **out,
                         tp_error *err);
void tp_vision_free(tp_vision_model *m);
tp_status tp_vision_get_info(const tp_vision_model *m, tp_vision_info *out);
/* The name of image mode `mode` (0 .. n_modes − 1), NULL when out of range. */
const char *tp_vision_mode_name(const tp_vision_model *m, int32_t mode);

/* Laid-out tokens of a page (its views' tokens plus the family's layout tokens: newlines, separators);
 * -1 if the page's views are invalid for this model. */
int64_t tp_vision_page_n_tokens(const tp_vision_model *m, const tp_page_views *page);

/* Encode n_pages pages in one pass. out_tokens[i] receives page i's tokens as a row-major
 * [tp_vision_page_n_tokens, n_embd] float array. */
tp_status tp_vision_encode(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages,
                           float *const *out_tokens, tp_error *err);

/* The compute memory that encoding these pages in one pass needs (what tp_vision_last_compute_bytes
 * reports after it: the planned intermediates plus the per-op scratch of the model's threads), without
 * encoding them: the graph is built and kept, so an encode of pages whose views group the same way reuses
 * it. For callers that split a batch of pages into passes under a memory budget. */
tp_status tp_vision_plan_bytes(tp_vision_model *m, const tp_page_views *pages, int32_t n_pages, size_t *out_bytes,
                               tp_error *err);

/* After an encode with keep_stages: the output of one stage for one view (views numbered page by page,
 * in each page's order), row-major tokens × width. Every family has "proj" (the view's projected tokens,
 * before the page layout); the others are the family's (DeepSeek-OCR: "sam", "clip"; DeepSeek-OCR-2:
 * "sam", "encoder"). *n_out receives the element count; dst (capacity n floats) may be NULL to ask for it. */
tp_status tp_vision_get_stage(tp_vision_model *m, const char *stage, int32_t view, float *dst, int64_t n,
                              int64_t *n_out, tp_error *err);

/* Bytes of the compute buffer of the last encode graph (its peak intermediate memory). */
size_t tp_vision_last_compute_bytes(const tp_vision_model *m);

/* Free the cached graph and its buffers and let the OS drop the mapped weights' resident pages
 * (they are read from the file again by the next encode). Call it between encoding and a long
 * decode to lower the process's peak memory. Stage outputs are gone afterwards. */
void tp_vision_trim(tp_vision_model *m);

/* ---------------------------------------------------------------------------------------------
 * Text models (a "text" GGUF; general.architecture names the family). A model holds a built-in sequence
 * and its KV cache (tp_text_eval); more sequences (tp_text_seq) share its weights, and tp_text_eval_batch
 * evaluates several of them in one decoder pass, reading every weight once for all (the way to decode many
 * pages at once). A sequence takes one call at a time: see "Threads" at the top of this file.
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_text_model tp_text_model;

typedef struct tp_text_params {
    int n_threads;  /* 1..64 */
    int cpu_path;   /* as tp_context_params.cpu_path */
    int32_t n_ctx;  /* KV-cache length; 0 = the model's context length */
    int32_t n_batch;/* prompt tokens evaluated per graph (prefill batch); 0 = 512 */
    /* KV-cache element type: TP_TYPE_F16 (half the memory and the bytes attention reads per token;
     * llama.cpp's default; keys/values rounded to half precision, logits typically within ~1e-3
     * relative of the F32 cache's), TP_TYPE_F32, TP_TYPE_Q8_0 (llama.cpp's q8_0 cache: about half
     * of F16's bytes; head sizes must be multiples of 32), or -1 (the default) = auto: F32 when the
     * text weights are F32 (exact parity with a float reference), F16 otherwise. Anything else:
     * TP_ERR_INVALID_ARGUMENT. */
    int32_t kv_type;
    /* Cancellation (NULL: none), as tp_context_params.abort_callback: asked between the nodes of every batch
     * graph of tp_text_eval on the calling thread; true stops the call, which returns TP_ERR_ABORTED
     * ("... aborted ...") with nothing appended (tp_text_n_past as before the call, the model usable). */
    bool (*abort_callback)(void *data);
    void *abort_callback_data;
} tp_text_params;

tp_text_params tp_text_default_params(void);

typedef struct tp_text_info {
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_ctx;          /* the KV cache's length */
    int32_t n_ctx_train;
    int32_t bos_id, eos_id, pad_id; /* -1 when the file names none */
    int32_t image_token_id; /* the image placeholder token ("<image>"), -1 if absent */
    int32_t n_pos_axes;     /* position axes of the model's rope: 1, or 3 for M-RoPE (t, h, w: PaddleOCR-VL) */
} tp_text_info;

tp_status tp_text_load(const char *path, const tp_text_params *params, tp_text_model **out,
                       tp_error *err);
void tp_text_free(tp_text_model *m);
tp_status tp_text_get_info(const tp_text_model *m, tp_text_info *out);

/* Let the OS drop the mapped weights' resident pages (KV caches and sequences are kept): the next eval
 * reads them from the file again (the page cache, as a rule). For a caller that runs the vision encoder
 * between decode steps, as tilepass-cli does, so that the process never holds both models' weights and the
 * encoder's buffers at once. Waits for a computation in progress; NULL is ignored. */
void tp_text_trim(tp_text_model *m);

/* Forget the sequence (empty KV cache). */
void tp_text_reset(tp_text_model *m);
/* Tokens in the KV cache. */
int32_t tp_text_n_past(const tp_text_model *m);

/* Append n tokens to the sequence and run the decoder over them.
 *   ids:       n token ids;
 *   embd:      NULL, or n_embd_rows × n_embd floats (row-major) that replace, in order, the
 *              embeddings of the positions whose id is the image token (n_embd_rows must equal
 *              their count);
 *   logits:    NULL, or room for the logits of the positions asked for: with all_logits false the
 *              last position only ([n_vocab]); with all_logits true every position ([n, n_vocab]).
 * Fails with TP_ERR_INVALID_ARGUMENT (nothing appended) if the cache would overflow or an id is out
 * of range. */
tp_status tp_text_eval(tp_text_model *m, const int32_t *ids, int32_t n, const float *embd,
                       int64_t n_embd_rows, float *logits, bool all_logits, tp_error *err);

/* tp_text_eval with explicit positions: pos holds n_pos_axes (tp_text_info) × n ints, axis-major
 * (pos[a · n + i] is token i's position on axis a), each in 0..INT32_MAX − n. tp_text_eval itself gives the
 * tokens 1 + the largest position used so far (+ i) on every axis: n_past + i for a one-axis model. */
tp_status tp_text_eval_pos(tp_text_model *m, const int32_t *ids, int32_t n, const int32_t *pos, const float *embd,
                           int64_t n_embd_rows, float *logits, bool all_logits, tp_error *err);

/* A sequence: a KV cache of n_ctx tokens (0 = the model's n_ctx, tp_text_info) with its own tokens and
 * positions, evaluated with tp_text_eval_batch. It uses the model's weights: use it only while its model is
 * loaded (tp_text_seq_free and tp_text_free may come in either order). */
typedef struct tp_text_seq tp_text_seq;
tp_status tp_text_seq_create(tp_text_model *m, int32_t n_ctx, tp_text_seq **out, tp_error *err);
/* NULL is ignored. Must not overlap a call that uses the sequence. */
void tp_text_seq_free(tp_text_seq *s);
/* The bytes of the KV cache of a sequence of n_ctx tokens (0: the model's n_ctx) of this model; 0 for NULL. */
size_t tp_text_seq_bytes(const tp_text_model *m, int32_t n_ctx);
/* Forget its tokens (empty KV cache); waits for a call in progress on it. */
void tp_text_seq_reset(tp_text_seq *s);
/* Tokens in its KV cache, and the cache's length. */
int32_t tp_text_seq_n_past(const tp_text_seq *s);
int32_t tp_text_seq_n_ctx(const tp_text_seq *s);

/* One sequence's part of a tp_text_eval_batch call: the arguments of tp_text_eval_pos for that sequence
 * (seq NULL: the model's built-in sequence; pos NULL: the positions that follow the largest so far). */
typedef struct tp_text_batch_entry {
    tp_text_seq *seq;
    const int32_t *ids;
    int32_t n;
    const int32_t *pos;   /* NULL, or n_pos_axes × n, axis-major */
    const float *embd;    /* NULL, or n_embd_rows × n_embd image rows */
    int64_t n_embd_rows;
    float *logits;        /* NULL, or [n_vocab] (last position) / [n, n_vocab] (all_logits) */
    bool all_logits;
} tp_text_batch_entry;

/* Append each entry's tokens to its sequence, all in one decoder pass (per graph of up to n_batch rows): the
 * dense parts, experts and the output head run once over the rows of every entry, attention per sequence over
 * its own cache. Each entry's logits equal those of tp_text_eval_pos on its sequence alone (up to the rounding
 * of a larger matrix product). Each sequence at most once per call. Fails (TP_ERR_INVALID_ARGUMENT: a
 * sequence of another model or twice, a bad entry, an overflow of any one sequence's cache, a sequence in use;
 * TP_ERR_ABORTED: the abort callback) with NOTHING appended to any sequence. */
tp_status tp_text_eval_batch(tp_text_model *m, const tp_text_batch_entry *entries, int32_t n_entries,
                             tp_error *err);

/* The UTF-8 bytes of one token (byte-level BPE decoded to raw bytes; SentencePiece's "▁" as a space and
 * <0xXX> as its byte; special tokens as their text: tp_tokenizer_token_bytes' bytes). *len receives the byte count; the bytes are not NUL-terminated and may be an incomplete
 * UTF-8 sequence (a streaming caller joins pieces before printing). NULL if id is out of range. */
const char *tp_text_token_bytes(const tp_text_model *m, int32_t id, size_t *len);

/* ---------------------------------------------------------------------------------------------
 * Tokenizer: text <-> token ids, from a GGUF's vocabulary (the tokenizer.ggml.* keys as llama.cpp writes them):
 *   - tokenizer.ggml.model "gpt2": byte-level BPE (tokens + merges, lowest merge rank first), pre-tokenizer
 *     tokenizer.ggml.pre "deepseek-v3" (DeepSeek-V3's splits: digit runs of 1-3, CJK and kana runs, then
 *     letters / punctuation / whitespace) or "gpt2" / "default" (GPT-2's);
 *   - "llama": SentencePiece, spaces as "▁", a leading "▁" before each stretch of text when
 *     tokenizer.ggml.add_space_prefix (default true), byte fallback to <0xXX>: BPE when every NORMAL score is
 *     a whole number (-rank; PaddleOCR-VL's ERNIE), else Unigram (the best-scoring segmentation).
 * Other vocabularies (other models or pre-tokenizers) are TP_ERR_UNSUPPORTED naming them. Tokens of type CONTROL and USER_DEFINED (and UNKNOWN in "llama") are matched whole in the text
 * (leftmost, then longest) before pre-tokenisation; "special" ones (CONTROL, UNKNOWN) only when parse_special.
 * The ids equal those of the `tokenizers` library built from the same vocabulary (encoder/tokenizer.py).
 * The Unicode categories come from a table generated at build time (tp_tokenizer_unicode_version()).
 * A tokenizer is immutable once loaded: any number of threads may use one at once. A tp_detokenizer is one
 * stream: one thread at a time.
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_tokenizer tp_tokenizer;

/* A tokenizer from a GGUF file (only its tokenizer keys are read: a vocabulary-only file will do) / from an
 * open one (nothing of g is kept). TP_ERR_FORMAT for a file without a vocabulary or with an inconsistent one,
 * TP_ERR_UNSUPPORTED for a kind this build does not tokenize. */
tp_status tp_tokenizer_load(const char *path, tp_tokenizer **out, tp_error *err);
tp_status tp_tokenizer_from_gguf(const tp_gguf *g, tp_tokenizer **out, tp_error *err);
void tp_tokenizer_free(tp_tokenizer *t);
/* The number of tokens of the vocabulary (0 for NULL). */
int32_t tp_tokenizer_n_vocab(const tp_tokenizer *t);
/* The Unicode version of the category tables the pre-tokenizers use. */
const char *tp_tokenizer_unicode_version(void);

/* Token ids of len bytes of UTF-8 text (no BOS or other token added). Writes up to max_ids ids and sets
 * *n_ids to the number of tokens of the text. ids = NULL with max_ids = 0 is a size query (TP_OK, *n_ids set);
 * otherwise a text of more than max_ids tokens fails with TP_ERR_INVALID_ARGUMENT, *n_ids being the number
 * needed (the first max_ids are written). Text that is not valid UTF-8: TP_ERR_INVALID_ARGUMENT naming the
 * byte. parse_special false: special tokens written in the text are tokenized as text. */
tp_status tp_tokenize(const tp_tokenizer *t, const char *text, size_t len, bool parse_special, int32_t *ids,
                      int32_t max_ids, int32_t *n_ids, tp_error *err);
/* The bytes a token stands for (byte-level symbols as bytes, "▁" as a space, <0xXX> as its byte, special
 * tokens as their text); not NUL-terminated, possibly part of a UTF-8 character. NULL (and *len 0) if id is
 * out of range. Valid while t lives. */
const char *tp_tokenizer_token_bytes(const tp_tokenizer *t, int32_t id, size_t *len);
/* Whether a token is special (CONTROL; in "llama" also UNKNOWN): what skip_special leaves out. */
bool tp_tokenizer_is_special(const tp_tokenizer *t, int32_t id);
/* The id of the token whose string (as the vocabulary writes it) is text[0..len), -1 if none. */
int32_t tp_tokenizer_token_id(const tp_tokenizer *t, const char *text, size_t len);

/* The tokens' bytes joined (raw: not checked as UTF-8), special tokens left out when skip_special. Writes up to
 * max_bytes bytes (no NUL) and sets *n_bytes to the length; out = NULL with max_bytes = 0 is a size query;
 * otherwise a longer result fails with TP_ERR_INVALID_ARGUMENT, *n_bytes being the size needed. An id out of
 * range: TP_ERR_INVALID_ARGUMENT. */
tp_status tp_detokenize(const tp_tokenizer *t, const int32_t *ids, int32_t n, bool skip_special, char *out,
                        size_t max_bytes, size_t *n_bytes, tp_error *err);

/* Streaming detokenisation: push ids as they are sampled; each push gives the bytes of the characters completed
 * so far and never a part of a UTF-8 character (the bytes of a character split over tokens wait for the token
 * that completes it). Invalid bytes come out as U+FFFD, one per maximal invalid subpart (as Python's
 * bytes.decode(errors="replace")). flush gives the remainder (an incomplete character as one U+FFFD) and
 * starts a new stream. The bytes returned (NUL-terminated too, *len not counting it) are owned by the
 * detokenizer and valid until its next call. It refers to t: t must outlive it. */
typedef struct tp_detokenizer tp_detokenizer;
tp_status tp_detokenizer_create(const tp_tokenizer *t, bool skip_special, tp_detokenizer **out, tp_error *err);
tp_status tp_detokenizer_push(tp_detokenizer *d, int32_t id, const char **bytes, size_t *len, tp_error *err);
tp_status tp_detokenizer_flush(tp_detokenizer *d, const char **bytes, size_t *len, tp_error *err);
/* Forget held bytes (a new stream). NULL is ignored. */
void tp_detokenizer_reset(tp_detokenizer *d);
void tp_detokenizer_free(tp_detokenizer *d);

/* A text model's tokenizer, built from its file's vocabulary at the first of these calls (from any thread)
 * and owned by the model (valid until tp_text_free). A model whose vocabulary the tokenizer does not support
 * still loads (the decoder runs from ids): these calls then fail with the reason (TP_ERR_UNSUPPORTED /
 * TP_ERR_FORMAT and its message). */
tp_status tp_text_get_tokenizer(const tp_text_model *m, const tp_tokenizer **out, tp_error *err);
/* tp_tokenize with the model's tokenizer. */
tp_status tp_text_tokenize(const tp_text_model *m, const char *text, size_t len, bool parse_special, int32_t *ids,
                           int32_t max_ids, int32_t *n_ids, tp_error *err);

/* ---------------------------------------------------------------------------------------------
 * Chat templates: the Jinja template a GGUF stores in tokenizer.chat_template, rendered in C
 * (native/text/chat_template.c) as transformers' apply_chat_template renders it (jinja2's sandboxed
 * environment with trim_blocks and lstrip_blocks, one trailing newline of the template dropped). The subset:
 * text, {{ }}, {% %}, {# #}, whitespace control ("-", "+"); set, if / elif / else / endif, for / else / endfor
 * (loop.index0, loop.index, loop.revindex, loop.revindex0, loop.first, loop.last, loop.length); string / integer /
 * true / false / none literals, names, a.b, a["b"], a[0] (negative too), + (concatenation, integer addition),
 * -, unary -, ~, == != < <= > >=, and, or, not, in, not in, parentheses; tests defined, undefined, none, string,
 * number (each also with "not"); filters trim, length. The variables: messages, add_generation_prompt,
 * bos_token / eos_token (when given), tools and documents (none), as transformers passes them. Undefined names
 * and missing keys behave as Jinja's Undefined (falsy, rendered as "", iterated as empty).
 * Anything else (macros, calls, other filters or tests, ...) is TP_ERR_UNSUPPORTED naming the construct and
 * its line:column (column in bytes); a malformed template (an unclosed tag or block, a stray endif, an
 * unterminated string) is TP_ERR_FORMAT with line:column, and so is what jinja2 refuses while rendering (an
 * attribute of an undefined value, '+' on a string and an integer, ...). Templates are untrusted: nesting depth,
 * loop iterations, evaluation steps, memory and the output size (TP_CHAT_TEMPLATE_MAX_OUTPUT bytes) are bounded
 * (past one: TP_ERR_UNSUPPORTED naming the limit).
 * ------------------------------------------------------------------------------------------- */

/* One message of the conversation. Its "content" is a list of parts, as transformers' processors build it:
 * n_images parts {"type": "image"}, then (text != NULL) one part {"type": "text", "text": text}. */
typedef struct tp_chat_message {
    const char *role;   /* "system", "user" or "assistant" (NUL-terminated, not NULL) */
    int n_images;       /* image parts before the text part (>= 0) */
    const char *text;   /* the text part (NUL-terminated UTF-8); NULL = no text part */
} tp_chat_message;

/* The template's other variables (besides messages). */
typedef struct tp_chat_template_vars {
    const char *bos_token;       /* NULL: undefined in the template */
    const char *eos_token;       /* NULL: undefined in the template */
    bool add_generation_prompt;
} tp_chat_template_vars;

/* The largest output tp_chat_template_render writes (bytes, NUL not counted). */
#define TP_CHAT_TEMPLATE_MAX_OUTPUT 1048576

/* Render tmpl (tmpl_len bytes, need not be NUL-terminated) for n_messages messages (messages may be NULL when
 * n_messages is 0) with vars (NULL: no tokens, add_generation_prompt false). On success *out is a new
 * NUL-terminated string the caller releases with free() and *out_len (may be NULL) its length; on failure *out
 * is NULL and err says why (TP_ERR_INVALID_ARGUMENT for NULL pointers or a negative count). */
tp_status tp_chat_template_render(const char *tmpl, size_t tmpl_len, const tp_chat_message *messages,
                                  int n_messages, const tp_chat_template_vars *vars, char **out,
                                  size_t *out_len, tp_error *err);

/* ---------------------------------------------------------------------------------------------
 * Generation policy: what happens between a logits row and the next token, in C (native/generate/):
 *   - the no-repeat n-gram rule: with history h (the ids accepted so far), n-gram size n and window W, token t
 *     is banned as the next one when some n-gram h[i..i+n) lying inside the last W ids of h (W = 0: anywhere)
 *     has h[i..i+n-1) equal to the last n-1 ids of h and h[i+n-1] = t; whitelisted ids are never banned. This is
 *     transformers' NoRepeatNGramLogitsProcessor (W = 0, the prompt accepted too: TP_NO_REPEAT_ALL),
 *     UnlimitedOcrSlidingWindowNoRepeatNgramLogitsProcessor (W > 0) and DeepSeek-OCR's vLLM runner (n 30, W 90,
 *     whitelist <td> </td>, generated ids only: TP_NO_REPEAT_GENERATED). Each step costs O(min(W, history))
 *     (rolling hashes of the (n-1)-grams, every hash hit checked id by id);
 *   - sampling, in transformers' order: the ban (logits set to -INFINITY), temperature, top-k (every token
 *     whose scaled logit is >= the k-th largest is kept, ties included), top-p (tokens in ascending order of
 *     logit, ties by ascending id; those whose cumulative probability is <= 1 - top_p are dropped, the most
 *     likely always kept), then a draw from the softmax of what is left. temperature 0 is greedy: the first
 *     maximum (as torch.argmax). The draws come from xoshiro256** seeded by splitmix64(seed): the same seed
 *     gives the same stream on every platform (the tokens too, but for last-bit differences of the C
 *     library's exp at a probability boundary);
 *   - stop rules (tp_stop): EOS ids, a count of new tokens, stop strings matched over the detokenised stream.
 * A sampler or a stop object is one sequence: one thread at a time; no global state.
 * ------------------------------------------------------------------------------------------- */

typedef enum tp_no_repeat_scope {
    TP_NO_REPEAT_GENERATED = 0, /* only the generated ids count (tp_sampler_accept_prompt ignores the prompt) */
    TP_NO_REPEAT_ALL = 1        /* the prompt ids count too (transformers) */
} tp_no_repeat_scope;

typedef struct tp_sampler_params {
    int32_t n_vocab;             /* the length of a logits row, > 0 (0 in the defaults: must be set) */
    float temperature;           /* 0: greedy; else finite > 0 (0) */
    int32_t top_k;               /* 0: off (0) */
    float top_p;                 /* in (0, 1]; 1: off (1) */
    uint64_t seed;               /* of the draws (0) */
    int32_t no_repeat_ngram;     /* n of the no-repeat rule; 0: off (30) */
    int32_t no_repeat_window;    /* W; 0: the whole history (90) */
    int no_repeat_scope;         /* a tp_no_repeat_scope (TP_NO_REPEAT_GENERATED) */
    const int32_t *no_repeat_whitelist; /* ids never banned, copied at create; ids >= n_vocab ignored (NULL) */
    int32_t n_no_repeat_whitelist;      /* (0) */
} tp_sampler_params;

typedef struct tp_sampler tp_sampler;

/* The values in parentheses above (DeepSeek-OCR's runner, less its <td> </td> whitelist, which is the
 * vocabulary's: give it). */
tp_sampler_params tp_sampler_default_params(void);
/* A sampler with an empty history. Parameters out of range: TP_ERR_INVALID_ARGUMENT naming the field. */
tp_status tp_sampler_create(const tp_sampler_params *params, tp_sampler **out, tp_error *err);
/* NULL is ignored. */
void tp_sampler_free(tp_sampler *s);
/* Empty the history and restart the draws from the seed (a new sequence). NULL is ignored. */
void tp_sampler_reset(tp_sampler *s);
/* Append an id (a token chosen, 0 <= id < n_vocab) to the history the no-repeat rule looks at. */
tp_status tp_sampler_accept(tp_sampler *s, int32_t id, tp_error *err);
/* Append the prompt's ids when the scope is TP_NO_REPEAT_ALL (ids outside 0..n_vocab-1 are skipped: image
 * placeholders); nothing with TP_NO_REPEAT_GENERATED. */
tp_status tp_sampler_accept_prompt(tp_sampler *s, const int32_t *ids, int32_t n, tp_error *err);
/* The number of ids in the history. */
int64_t tp_sampler_n_history(const tp_sampler *s);
/* The ids the no-repeat rule bans as the next token, ascending: up to cap written to out, *n the count (out
 * NULL with cap 0: a size query). */
tp_status tp_sampler_banned(tp_sampler *s, int32_t *out, int32_t cap, int32_t *n, tp_error *err);
/* The next token from a row of n_vocab logits (n_vocab must equal the params'). logits is modified in place:
 * the banned tokens' entries become -INFINITY, nothing else changes. *id is the token, or -1 when no token is
 * left (every logit -INFINITY or NaN: NaN entries are never chosen). When sampling, +INFINITY logits (or logits
 * that overflow when divided by the temperature) leave only those tokens, equally likely. The id is NOT
 * accepted: call tp_sampler_accept with the token kept. */
tp_status tp_sampler_sample(tp_sampler *s, float *logits, int32_t n_vocab, int32_t *id, tp_error *err);
/* What sampling sees, for inspection: logits in place become the ban applied, divided by the temperature (when
 * > 0), with the tokens top-k / top-p drop set to -INFINITY (transformers' warpers' scores). Greedy params:
 * only the ban. */
tp_status tp_sampler_filter(tp_sampler *s, float *logits, int32_t n_vocab, tp_error *err);

typedef enum tp_stop_reason {
    TP_STOP_NONE = 0,   /* go on */
    TP_STOP_EOS = 1,    /* the id is an EOS id (not counted, not detokenised) */
    TP_STOP_LENGTH = 2, /* the id is the max_new_tokens-th */
    TP_STOP_STRING = 3  /* a stop string completed: the text stops before it */
} tp_stop_reason;

typedef struct tp_stop_params {
    const int32_t *eos_ids;            /* copied at create (NULL) */
    int32_t n_eos;                     /* (0) */
    int32_t max_new_tokens;            /* 0: no limit (0) */
    const char *const *stop_strings;   /* NUL-terminated, non-empty, copied; need a tokenizer (NULL) */
    int32_t n_stop_strings;            /* (0) */
    bool skip_special;                 /* the detokenizer leaves special tokens out of the text (false) */
} tp_stop_params;

typedef struct tp_stop tp_stop;

tp_stop_params tp_stop_default_params(void);
/* t (which must outlive the object) detokenises the stream; NULL: no text (no stop strings allowed). */
tp_status tp_stop_create(const tp_tokenizer *t, const tp_stop_params *params, tp_stop **out, tp_error *err);
void tp_stop_free(tp_stop *s);
/* A new sequence (count, text, stop state cleared). NULL is ignored. */
void tp_stop_reset(tp_stop *s);
/* Feed one generated id. *reason says whether to stop; *text / *len the text that is final now: whole UTF-8
 * characters, less a tail that could begin a stop string (held back until it cannot, or given by
 * tp_stop_flush); on TP_STOP_STRING the text before the stop string (the rest is dropped). Stop strings are matched
 * as bytes over the text of whole characters. The bytes are owned
 * by the object, NUL-terminated, valid until its next call. A push after a stop: TP_ERR_INVALID_ARGUMENT. */
tp_status tp_stop_push(tp_stop *s, int32_t id, int *reason, const char **text, size_t *len, tp_error *err);
/* The end of the sequence (a stop other than TP_STOP_STRING, or the caller's own): the held-back text and the
 * detokenizer's remainder (an incomplete character as U+FFFD). Empty after TP_STOP_STRING. */
tp_status tp_stop_flush(tp_stop *s, const char **text, size_t *len, tp_error *err);
/* The ids counted so far (EOS not included). */
int32_t tp_stop_n_tokens(const tp_stop *s);

/* ---------------------------------------------------------------------------------------------
 * Images as RGB bytes (no Python needed): an image becomes a page's views exactly as the models'
 * reference pipelines make them with Pillow, pixel for pixel:
 *   - the whole-image view, by `fit`: TP_FIT_STRETCH resizes to view_size × view_size (aspect ratio not
 *     kept); TP_FIT_PAD is ImageOps.pad (aspect-preserving resize as ImageOps.contain, centred on the
 *     pad colour, offsets rounded as Python's round()); TP_FIT_PAD_FLOOR scales the longer side to
 *     view_size (the other rounded as Python's round()) and centres it with offsets floored
 *     (transformers' pad_to_square); TP_FIT_NATIVE resizes to transformers' smart_resize of the image
 *     (Qwen2-VL / PaddleOCR-VL: sides to multiples of `factor`, the area within [min_pixels,
 *     max_pixels]): a view of the image's own aspect, width × height, not square;
 *   - tiles, when tile_size > 0, by tile_rule: TP_TILES_ASPECT (DeepSeek-OCR), when the image is wider or
 *     taller than a tile, the whole image resized (no padding) to a cols × rows canvas of tiles
 *     (tp_image_tile_grid), a 1 × 1 grid (min_tiles == 1) meaning no tiles; TP_TILES_BEST_FIT (DeepSeek-VL2),
 *     always, the image fitted into the best canvas of up to max_tiles tiles and padded; cut in raster order;
 *   - every resize is Pillow's Image.resize(..., BICUBIC) (antialiased, fixed-point, a = -0.5);
 *   - normalisation in float32: (x / 255 - mean) / std, HWC (channels innermost).
 * A model's modes give these parameters (tp_vision_preprocess_params).
 * ------------------------------------------------------------------------------------------- */

/* The largest image accepted, in pixels (width · height). */
#define TP_IMAGE_MAX_PIXELS 40000000
/* The largest max_tiles accepted. */
#define TP_IMAGE_MAX_TILES 64
/* The largest view or tile side accepted (the encoder's limit too). */
#define TP_IMAGE_MAX_SIDE 4096

typedef enum tp_view_fit {
    TP_FIT_STRETCH = 0,   /* resize to a square, aspect ratio not kept */
    TP_FIT_PAD = 1,       /* ImageOps.pad: centred, offsets rounded half to even */
    TP_FIT_PAD_FLOOR = 2, /* longer side to the view, centred with offsets floored */
    TP_FIT_NATIVE = 3     /* the image's own aspect: smart_resize to multiples of `factor` within
                           * [min_pixels, max_pixels], no padding, no tiles (Qwen2-VL / PaddleOCR-VL) */
} tp_view_fit;

/* An 8-bit RGB image in caller memory: `height` rows of `width` pixels of 3 bytes (R, G, B), row r
 * starting at rgb + r · stride. stride 0 means width · 3 (packed rows); otherwise stride >= width · 3.
 * The library only reads it during the call and keeps no pointer to it. */
typedef enum tp_tile_rule {
    TP_TILES_ASPECT = 0,  /* DeepSeek-OCR's dynamic_preprocess: tiles only for an image wider or taller than a
                           * tile; the grid of min..max tiles closest in aspect ratio; the whole image resized
                           * (no padding) to the grid's canvas */
    TP_TILES_BEST_FIT = 1 /* DeepSeek-VL2's select_best_resolution: always tiles (1 × 1 included); of the
                           * canvases of up to max_tiles tiles, the one keeping the most pixels, then wasting the
                           * least; the image fitted inside it and padded (ImageOps.pad) */
} tp_tile_rule;

typedef struct tp_rgb_image {
    const uint8_t *rgb;
    int32_t width;
    int32_t height;
    size_t stride;
} tp_rgb_image;

typedef struct tp_preprocess_params {
    int fit;                 /* a tp_view_fit for the whole-image view (TP_FIT_PAD) */
    int32_t view_size;       /* its side, 1..TP_IMAGE_MAX_SIDE (1024) */
    int32_t tile_size;       /* 0: no tiles; else the side of a tile, 1..TP_IMAGE_MAX_SIDE (640) */
    int tile_rule;           /* a tp_tile_rule (TP_TILES_ASPECT) */
    int32_t min_tiles;       /* tile grid: 1 <= min_tiles <= max_tiles <= TP_IMAGE_MAX_TILES (2) */
    int32_t max_tiles;       /* (9) */
    int32_t pad_color;       /* grey level of the padding, 0..255 (127) */
    float image_mean[3];     /* (0.5, 0.5, 0.5) */
    float image_std[3];      /* (0.5, 0.5, 0.5); finite and non-zero */
    /* TP_FIT_NATIVE only: sides become multiples of factor (patch · merge), the area is kept within
     * [min_pixels, max_pixels]; an image whose aspect ratio exceeds 200 is refused (the reference's rule) */
    int32_t factor;          /* (28) */
    int64_t min_pixels;      /* (147384) */
    int64_t max_pixels;      /* (2822400) */
} tp_preprocess_params;

/* The values in parentheses above (DeepSeek-OCR v1's gundam mode). */
tp_preprocess_params tp_preprocess_default_params(void);
/* The parameters of a model's image mode by name (NULL: its default mode, mode 0), with the values its
 * file gives (view and tile sizes, tile limits, pad colour, mean, std). TP_ERR_INVALID_ARGUMENT for a
 * mode the model does not have. */
tp_status tp_vision_preprocess_params(const tp_vision_model *m, const char *mode, tp_preprocess_params *out);

/* The (cols, rows) tile grid of a width × height image: of every grid with
 * min_tiles <= cols·rows <= max_tiles (ordered by tile count, then cols), the one whose cols/rows is
 * closest to width/height; on an exact tie the later one when width·height > 0.5·tile_size²·cols·rows.
 * The caller decides whether to tile at all (an image wider or taller than a tile). */
tp_status tp_image_tile_grid(int32_t width, int32_t height, int32_t min_tiles, int32_t max_tiles,
                             int32_t tile_size, int32_t *cols, int32_t *rows, tp_error *err);

/* Resize an RGB image to out_width × out_height exactly as Pillow's
 * Image.resize((out_width, out_height), Image.BICUBIC) does for an RGB image. dst receives out_height
 * packed rows of out_width · 3 bytes; dst_size must be at least that. Both images are limited to
 * TP_IMAGE_MAX_PIXELS. */
tp_status tp_rgb_resize(const tp_rgb_image *src, int32_t out_width, int32_t out_height, uint8_t *dst,
                        size_t dst_size, tp_error *err);

/* A preprocessed page: it owns the float pixels of its views. */
typedef struct tp_page tp_page;

/* Preprocess one RGB image (params NULL = tp_preprocess_default_params()). Refused with
 * TP_ERR_INVALID_ARGUMENT and a message: a NULL image or pixel pointer, a zero or negative size,
 * more than TP_IMAGE_MAX_PIXELS pixels, a stride below width · 3, parameters out of range.
 * On success *out is a new page the caller owns and releases with tp_page_free; on failure NULL. */
tp_status tp_page_from_rgb(const tp_rgb_image *image, const tp_preprocess_params *params, tp_page **out,
                           tp_error *err);
/* NULL is ignored. Invalidates the pointers tp_page_get_views returned. */
void tp_page_free(tp_page *page);
/* The page's views, ready for tp_vision_encode / tp_vision_page_n_tokens: the tiles (raster order) then
 * the whole-image view. The struct and the pixels belong to the page and stay valid until tp_page_free.
 * NULL for a NULL page. */
const tp_page_views *tp_page_get_views(const tp_page *page);

/* Preprocess n_images RGB images with params (NULL = the model's default mode) and encode them all in
 * one pass (tp_vision_encode). out_tokens and out_n_tokens have n_images entries.
 * On success out_tokens[i] is a new row-major [out_n_tokens[i], n_embd] float array that the
 * caller owns and releases with tp_vision_tokens_free. On failure every out_tokens[i] is NULL,
 * every out_n_tokens[i] is 0 and nothing stays allocated; the message names the failing image. */
tp_status tp_vision_encode_rgb(tp_vision_model *m, const tp_rgb_image *images, int32_t n_images,
                               const tp_preprocess_params *params, float **out_tokens,
                               int64_t *out_n_tokens, tp_error *err);
/* Release an array tp_vision_encode_rgb returned. NULL is ignored. */
void tp_vision_tokens_free(float *tokens);

/* ---------------------------------------------------------------------------------------------
 * Sessions: image in, text out, everything in C (native/session/). A session ties a text and a vision model
 * together with the family's prompt conventions (the vision family's: DeepSeek-OCR / OCR-2 "[bos] +
 * tok(before <image>) + image rows + tok(after)" with "<image>\n" put in front of a prompt that has none;
 * DeepSeek-VL2's "<|User|>: ...\n\n<|Assistant|>:"; PaddleOCR-VL's chat template from the text file rendered,
 * with M-RoPE positions), the tokenizer, the sampler and no-repeat rule (tp_sampler), stop strings (tp_stop),
 * UTF-8-safe streaming, grounding spans and cancellation.
 *
 *     tp_session *s = NULL;
 *     tp_error err;
 *     tp_session_params sp = tp_session_default_params();
 *     if (tp_session_create("text.gguf", "mmproj.gguf", &sp, &s, &err) != TP_OK) { puts(err.message); ... }
 *     tp_session_image img = {.rgb = {rgb, width, height, 0}};
 *     tp_session_submit(s, NULL, &img, 1, &err);          // NULL: the family's default prompt
 *     tp_session_gen_params gp = tp_session_default_gen_params();
 *     gp.on_text = print_piece;                            // optional streaming
 *     tp_session_result r;
 *     tp_session_generate(s, &gp, &r, &err);               // r.text: the whole text, owned by s
 *     tp_session_free(s);
 *
 * Threads: a session is one conversation: one call at a time on it (submit, generate, reset, free), except
 * tp_session_cancel, which any thread may call at any time while the session lives. Sessions made from the same
 * loaded models (tp_session_create_from_models) may run on different threads: each has its own KV cache
 * (a tp_text_seq), their computations take turns on each model's lock.
 * ------------------------------------------------------------------------------------------- */

typedef struct tp_session tp_session;

typedef struct tp_session_params {
    int n_threads;          /* threads of the models tp_session_create loads, 1..64 (4) */
    int32_t n_ctx;          /* the session's KV cache in tokens; 0: the text model's n_ctx (0) */
    int32_t kv_type;        /* tp_text_params.kv_type of a model tp_session_create loads (-1: auto) */
    int vision_precision;   /* tp_vision_params.precision of a model tp_session_create loads (-1: auto) */
    const char *image_mode; /* the vision model's image mode by name (tp_vision_mode_name); NULL: its default;
                             * copied at create */
    bool builtin_sequence;  /* tp_session_create_from_models: decode in the text model's built-in sequence (the one
                             * tp_text_eval uses; no KV cache of its own) instead of a sequence of its own (false) */
} tp_session_params;

tp_session_params tp_session_default_params(void);

/* A session over two model files it loads and owns (freed with it). Cancellation (tp_session_cancel) then also
 * stops an image encode or a prefill in progress, between graph nodes. Models that do not belong together (a
 * vision model's output width other than the text model's embedding width, or a text architecture the vision
 * family does not decode with) are refused (TP_ERR_INVALID_ARGUMENT saying which), here and in
 * tp_session_create_from_models. */
tp_status tp_session_create(const char *text_path, const char *vision_path, const tp_session_params *params,
                            tp_session **out, tp_error *err);
/* A session over loaded models it borrows (they must outlive it; other sessions may share them). The session
 * evaluates its own sequence (tp_text_seq_create; the model's built-in one with params->builtin_sequence).
 * vision may be NULL: the session then has no family (no prompt conventions, no image mode, the no-repeat rule off
 * unless the gen params set one) and takes prompts as ids only (tp_session_submit_ids; tp_session_submit refuses). tp_session_cancel is checked
 * between tokens; an encode or a prefill in progress stops only through the models' own abort callbacks. */
tp_status tp_session_create_from_models(tp_text_model *text, tp_vision_model *vision, const tp_session_params *params,
                                        tp_session **out, tp_error *err);
/* NULL is ignored. Must not overlap another call on the session (tp_session_cancel included). */
void tp_session_free(tp_session *s);

/* One image of a prompt: RGB bytes (preprocessed by the session's image mode and encoded by the vision model),
 * or (rgb.rgb NULL) tokens already encoded: n_tokens × n_embd floats, row-major, copied at submit, and for an
 * M-RoPE text model (PaddleOCR-VL) the grid_cols × grid_rows grid of merged patches they form (their product
 * n_tokens). */
typedef struct tp_session_image {
    tp_rgb_image rgb;
    const float *embd;
    int64_t n_tokens;
    int32_t grid_cols, grid_rows;
} tp_session_image;

/* The next request: prompt (NUL-terminated UTF-8; NULL: the family's default prompt, tp_session_default_prompt)
 * with its images: one for DeepSeek-OCR / OCR-2 and PaddleOCR-VL (a page); up to 16 for DeepSeek-VL2, one <image>
 * tag per image in the prompt (a prompt without a tag and one image gets "<image>\n" in front; for three images or
 * more the image mode is "global", no tiles, as the official processor does, unless params.image_mode names one).
 * The images are
 * encoded now (all in one pass; the time goes to the next result's vision_s) and the prompt's ids (and M-RoPE
 * positions) built by the family's conventions: a prompt that does not fit them (two <image> tags for one image,
 * an <image> tag in a PaddleOCR-VL task) is TP_ERR_INVALID_ARGUMENT saying so, as are a NULL or empty image, a
 * size the image limits refuse, embeddings without a token count, and a prompt that does not fit the KV cache.
 * Replaces an earlier request that was not generated; the session's sequence is emptied (a new conversation). */
tp_status tp_session_submit(tp_session *s, const char *prompt, const tp_session_image *images, int32_t n_images,
                            tp_error *err);

/* The prompt a NULL prompt stands for, e.g. "<|grounding|>Convert the document to markdown."; owned by the
 * library. */
const char *tp_session_default_prompt(const tp_session *s);

/* The ids (and M-RoPE positions, axis-major [n_pos_axes × n]; NULL for one-axis models) of the submitted prompt,
 * owned by the session until the next submit / reset / free. *n_pos_axes may be NULL. TP_ERR_INVALID_ARGUMENT
 * when nothing is submitted. */
tp_status tp_session_prompt_ids(const tp_session *s, const int32_t **ids, int32_t *n, const int32_t **pos,
                                int32_t *n_pos_axes);

/* Text as it is generated: whole UTF-8 characters (a character split over tokens waits for the token that completes
 * it; text that could begin a stop string is held back until it cannot). Return false to stop generating
 * (TP_SESSION_STOP_CALLBACK). Called on the thread that called tp_session_generate. */
typedef bool (*tp_session_text_fn)(const char *text, size_t len, void *data);

typedef struct tp_session_gen_params {
    int32_t max_tokens;          /* the most new tokens, > 0 (8192, the CLI's -n) */
    /* sampling and the no-repeat rule (tp_sampler_params; n_vocab is the model's, whatever is set here). The
     * defaults (tp_session_default_gen_params) are the CLI's: greedy, seed 0, and the vision family's official
     * runner's rule: */
    tp_sampler_params sampler;   /* no_repeat_ngram / no_repeat_window < 0: the family's (tp_vision_info; -1);
                                  * no_repeat_whitelist NULL with n_no_repeat_whitelist < 0: the vocabulary's
                                  * <td> and </td> (-1); scope TP_NO_REPEAT_GENERATED */
    const char *const *stop_strings; /* generation stops before the first of these in the text (NULL) */
    int32_t n_stop_strings;          /* (0) */
    bool ignore_eos;             /* go on past the end-of-text token (false) */
    tp_session_text_fn on_text;  /* NULL: no streaming (the text is in the result either way) */
    void *on_text_data;
    /* each generated id as it is accepted (before its text is streamed); false stops (TP_SESSION_STOP_CALLBACK).
     * NULL: none. Called on the thread that called tp_session_generate. */
    bool (*on_token)(int32_t id, void *data);
    void *on_token_data;
} tp_session_gen_params;

tp_session_gen_params tp_session_default_gen_params(void);

typedef enum tp_session_stop {
    TP_SESSION_STOP_EOS = 0,           /* the end-of-text token */
    TP_SESSION_STOP_LENGTH = 1,        /* max_tokens generated */
    TP_SESSION_STOP_CONTEXT = 2,       /* the KV cache is full */
    TP_SESSION_STOP_STRING = 3,        /* a stop string (not in the text) */
    TP_SESSION_STOP_CALLBACK = 4,      /* on_text returned false */
    TP_SESSION_STOP_NO_CANDIDATES = 5  /* every token banned or not a number */
} tp_session_stop;

/* A grounding box in the model's coordinates, 0..999 of the image's width (x) and height (y); x1 <= x2, y1 <= y2. */
typedef struct tp_grounding_box {
    int32_t x1, y1, x2, y2;
} tp_grounding_box;

/* A grounding region of the text: <|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|> at bytes
 * [begin, end) (from its first tag to the end of its box list), its label at [label_begin, label_end) (label_end
 * == label_begin: none; surrounding whitespace not included; the label's text is those bytes less any <|/det|>,
 * <|grounding|> or end-of-sentence / BOS / pad tag inside them, which the parser drops), its boxes
 * boxes[first_box .. first_box + n_boxes).
 * The rules are encoder/grounding.py's (GroundingParser): complete false for a region cut off or whose box list
 * is not closed; a box list ends at a line break, at text before its first '[', at text after its closing ']]',
 * or past 4096 characters; a label of more than 256 characters is text; numbers rounded half to even and clamped
 * to 0..999. */
typedef struct tp_grounding_span {
    size_t begin, end;
    size_t label_begin, label_end;
    int32_t first_box, n_boxes;
    bool complete;
} tp_grounding_span;

typedef struct tp_session_result {
    const char *text;             /* the generated text (tags kept), NUL-terminated, owned by the session */
    size_t text_len;
    const int32_t *tokens;        /* the generated ids (EOS not included), owned by the session */
    int32_t n_prompt_tokens, n_generated_tokens;
    int stop_reason;              /* a tp_session_stop */
    bool hit_max_tokens;          /* stop_reason == TP_SESSION_STOP_LENGTH */
    double vision_s, prefill_s, decode_s; /* seconds: the submit's image encode, the prompt, the tokens after it */
    const tp_grounding_span *spans; /* owned by the session */
    int32_t n_spans;
    const tp_grounding_box *boxes;
    int32_t n_boxes;
} tp_session_result;

/* The next request as ids already built: n ids (image_token_id where an image row goes; every other id inside the
 * vocabulary), M-RoPE positions pos (NULL: the positions that follow; else n_pos_axes × n axis-major, n_pos_axes the
 * text model's) and n_embd_rows × n_embd image rows (one per image token), all copied. For callers that build
 * prompts themselves (the Python pipeline); tp_session_submit builds them by the family's conventions. Errors as
 * tp_session_submit's (TP_ERR_INVALID_ARGUMENT naming the problem); the session's sequence is emptied. */
tp_status tp_session_submit_ids(tp_session *s, const int32_t *ids, int32_t n, const int32_t *pos, int32_t n_pos_axes,
                                const float *embd, int64_t n_embd_rows, tp_error *err);
/* Prefill the submitted prompt and generate. The result's arrays stay valid until the next submit, generate,
 * reset or free of the session. A request is generated once (a second generate without a submit:
 * TP_ERR_INVALID_ARGUMENT). TP_ERR_ABORTED ("aborted by tp_session_cancel") when cancelled: out then holds what
 * was generated before. */
tp_status tp_session_generate(tp_session *s, const tp_session_gen_params *params, tp_session_result *out,
                              tp_error *err);
/* tp_session_generate of n sessions together (continuous decoding of several pages): each session's prompt is
 * prefilled alone (in order), then every step evaluates the next token of every running session in ONE
 * tp_text_eval_batch call (the dense weights and the output head read once per step for all). Each session keeps its
 * own parameters params[i] (params NULL: the defaults for all): sampler, no-repeat rule, stop rules, max_tokens and
 * on_text callback (called on this thread, in session order within a step); a session that stops leaves the batch
 * and the others go on. out[i] is what tp_session_generate would give session i alone (greedy tokens equal: a
 * batch's logits equal one sequence's up to the rounding of a larger matrix product, tp_text_eval_batch).
 * The sessions must share one text model (tp_session_create_from_models with the same tp_text_model) and be
 * distinct: else TP_ERR_INVALID_ARGUMENT and nothing is done. tp_session_cancel(sessions[i]) ends session i only
 * (between tokens; its status TP_ERR_ABORTED); an eval that fails (the model's own abort callback, a sequence in
 * use) ends every session of that step with its error. errs (NULL, or n entries) receives each session's status and
 * message; the return is TP_OK when all succeeded, else the first failing session's status, err naming it.
 * Continuous batching: on_done (NULL: none) is called as session i stops, with its result and status (status->status
 * TP_OK or the error); it may submit the next request to sessions[i] (tp_session_submit / tp_session_submit_ids,
 * which end the result's arrays) and change *params for it, and returns true to have that request prefilled and
 * join the batch (false: the session stays done). out[i] and errs[i] then hold session i's last request's.
 * Threads: one call at a time on each of the sessions, as tp_session_generate; other threads may use other
 * sessions of the same model meanwhile (their evals take turns on the model's lock), and may call
 * tp_session_cancel on any of these. */
typedef bool (*tp_session_batch_done_fn)(int32_t i, const tp_session_result *result, const tp_error *status,
                                         tp_session_gen_params *params, void *data);
tp_status tp_session_generate_batch(tp_session *const *sessions, int32_t n, const tp_session_gen_params *params,
                                    tp_session_result *out, tp_error *errs, tp_session_batch_done_fn on_done,
                                    void *on_done_data, tp_error *err);

/* Stop the session's submit or generate in progress (between tokens, and inside an encode or a prefill of the
 * models tp_session_create loaded), or the next one when none is; that call then returns TP_ERR_ABORTED and the
 * request clears. Any thread, any time while the session lives; async-signal-safe (an atomic store). */
void tp_session_cancel(tp_session *s);

/* Forget the request, the result, the KV cache and a cancel not yet seen (the models stay loaded). NULL is
 * ignored. */
void tp_session_reset(tp_session *s);

/* The grounding regions of a text (len bytes, not necessarily NUL-terminated), as tp_session_result's spans: up to
 * span_cap spans and box_cap boxes written, *n_spans / *n_boxes the counts (NULL arrays with 0 caps: a size
 * query); too small a cap is TP_ERR_INVALID_ARGUMENT with the counts set. */
tp_status tp_grounding_parse(const char *text, size_t len, tp_grounding_span *spans, int32_t span_cap,
                             int32_t *n_spans, tp_grounding_box *boxes, int32_t box_cap, int32_t *n_boxes,
                             tp_error *err);

/* TP_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* TILEPASS_H */
