/* Reading GGUF model files (llama.cpp's format, versions 2 and 3): the magic "GGUF", the
 * version, the tensor and metadata counts, the metadata's key/value pairs (integers, floats,
 * booleans, strings, arrays of them), each tensor's name, dimensions, ggml type and offset,
 * then the data section at the file's alignment (general.alignment, default 32). The file is
 * memory-mapped and everything checked before use: every count, length and dimension against
 * the bytes that are left (no allocation is sized by an unchecked field), each tensor's bytes
 * inside the data section, aligned, and apart from every other's, no key or name twice. A bad
 * file gets a one-line error naming the key or the tensor and the problem.
 *
 * Tensors come out as model_tensor: their shape in row-major order, that is ggml's ne
 * reversed (ne[0], the contiguous extent, last), so that ffn_up_exps' ne [d, f, E] reads as
 * [E, f, d], the layout of E Hugging Face matrices [f, d] one after another. */
#ifndef MOEVK_GGUF_H
#define MOEVK_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "model_tensor.h"

typedef enum gguf_type {
    GGUF_UINT8 = 0,
    GGUF_INT8 = 1,
    GGUF_UINT16 = 2,
    GGUF_INT16 = 3,
    GGUF_UINT32 = 4,
    GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_UINT64 = 10,
    GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
} gguf_type;

/* One metadata pair; the value's bytes stay in the mapping. */
typedef struct gguf_kv {
    char *key;
    gguf_type type;
    const unsigned char *value; /* a scalar's bytes; a string's text; an array's first element */
    uint64_t length;            /* a string's bytes; an array's elements */
    gguf_type element;          /* an array's element type */
} gguf_kv;

typedef struct gguf_file {
    void *mapping; /* the whole file, read-only (open only) */
    size_t size;
    uint32_t version, alignment;
    gguf_kv *kvs; /* in the file's order */
    size_t kv_count;
    model_tensor *tensors; /* in the file's order */
    uint32_t *ggml_types;  /* each tensor's ggml type number */
    size_t tensor_count;
    size_t *by_name; /* tensor numbers sorted by name, for lookups */
} gguf_file;

/* The name of a ggml type number ("Q4_K"), or NULL for one this reader does not know. */
const char *gguf_ggml_type_name(uint32_t type);

/* Parses a file held in memory (not copied: tensors and values point into it). On failure
 * returns 0, leaves nothing allocated, and writes a message to error (not naming the file). */
int gguf_parse(const void *bytes, size_t size, gguf_file *out, char *error, size_t error_size);
/* Maps path and parses it; on failure returns 0 and writes "path: problem" to error. */
int gguf_open(const char *path, gguf_file *out, char *error, size_t error_size);
void gguf_close(gguf_file *file);
/* 1 when the bytes start with GGUF's magic. */
int gguf_is_gguf(const void *bytes, size_t size);

const model_tensor *gguf_find_tensor(const gguf_file *file, const char *name);
const gguf_kv *gguf_find_key(const gguf_file *file, const char *key);
/* Typed reads of a pair: 0 when it holds another type (or a negative number, for uint). */
int gguf_kv_uint(const gguf_kv *kv, uint64_t *out);             /* any integer type */
int gguf_kv_float(const gguf_kv *kv, double *out);              /* float32, float64 or an integer */
int gguf_kv_bool(const gguf_kv *kv, int *out);                  /* bool */
int gguf_kv_string(const gguf_kv *kv, char *text, size_t size); /* fits in size with its NUL */

#endif
