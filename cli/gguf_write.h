/* GGUF files built in memory (the demo's toy model, the tests' files): metadata pairs of every
 * type, tensors of any ggml type with their data, laid out as llama.cpp writes them (version 3
 * unless told, the data section and each tensor at the alignment). */
#ifndef MOEVK_GGUF_WRITE_H
#define MOEVK_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_WRITE_MAX_TENSORS 256

typedef struct gguf_builder {
    unsigned char *kvs; /* the pairs, serialised */
    size_t kv_bytes, kv_capacity;
    int kv_failed; /* memory ran out */
    uint64_t kv_count;
    struct {
        char name[128];
        uint32_t ndim, type;
        uint64_t ne[4];
        const void *data;
        uint64_t bytes;
    } tensors[GGUF_WRITE_MAX_TENSORS];
    int tensor_count;
    uint32_t version, alignment;
} gguf_builder;

void gguf_build_begin(gguf_builder *b); /* version 3, alignment 32 */
void gguf_build_u32(gguf_builder *b, const char *key, uint32_t value);
void gguf_build_i32(gguf_builder *b, const char *key, int32_t value);
void gguf_build_f32(gguf_builder *b, const char *key, float value);
void gguf_build_bool(gguf_builder *b, const char *key, int value);
void gguf_build_string(gguf_builder *b, const char *key, const char *value);
/* An array of count uint32 values, or of count strings. */
void gguf_build_u32_array(gguf_builder *b, const char *key, const uint32_t *values, uint64_t count);
void gguf_build_string_array(gguf_builder *b, const char *key, const char *const *values,
                             uint64_t count);
/* A raw pair: key, type, then `bytes` of value as given (for broken files). */
void gguf_build_raw(gguf_builder *b, const char *key, uint32_t type, const void *value,
                    size_t bytes);
/* A tensor of ggml type `type` with ne[0..ndim) (ne[0] contiguous); data of `bytes` bytes. */
void gguf_build_tensor(gguf_builder *b, const char *name, uint32_t type, uint32_t ndim,
                       const uint64_t *ne, const void *data, uint64_t bytes);
/* The file (malloc'd, *size bytes; NULL when memory ran out); *data_start: where its data
 * section begins. Frees the builder's pairs. */
unsigned char *gguf_build_finish(gguf_builder *b, size_t *size, size_t *data_start);
int gguf_build_write(gguf_builder *b, const char *path); /* finish, write, free: 1 on success */

#endif
