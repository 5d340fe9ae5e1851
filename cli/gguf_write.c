/* gguf_write.h: little-endian fields appended to growing buffers. */
#include "gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A buffer that grows; failed once memory ran out (then it holds nothing). */
typedef struct growing {
    unsigned char *bytes;
    size_t used, capacity;
    int failed;
} growing;

static int append(growing *g, const void *bytes, size_t count) {
    if (g->failed) return 0;
    if (g->used + count > g->capacity) {
        size_t grown = g->capacity ? g->capacity : 256;
        while (grown < g->used + count) grown *= 2;
        unsigned char *larger = realloc(g->bytes, grown);
        if (!larger) {
            free(g->bytes);
            *g = (growing){.failed = 1};
            return 0;
        }
        g->bytes = larger;
        g->capacity = grown;
    }
    if (count) memcpy(g->bytes + g->used, bytes, count);
    g->used += count;
    return 1;
}

static void kv_bytes(gguf_builder *b, const void *bytes, size_t count) {
    growing g = {b->kvs, b->kv_bytes, b->kv_capacity, b->kv_failed};
    append(&g, bytes, count);
    b->kvs = g.bytes, b->kv_bytes = g.used, b->kv_capacity = g.capacity, b->kv_failed = g.failed;
}

static void kv_u32(gguf_builder *b, uint32_t v) { kv_bytes(b, &v, 4); }
static void kv_u64(gguf_builder *b, uint64_t v) { kv_bytes(b, &v, 8); }

static void kv_string(gguf_builder *b, const char *text) {
    kv_u64(b, strlen(text));
    kv_bytes(b, text, strlen(text));
}

void gguf_build_begin(gguf_builder *b) {
    memset(b, 0, sizeof *b);
    b->version = 3;
    b->alignment = 32;
}

void gguf_build_raw(gguf_builder *b, const char *key, uint32_t type, const void *value,
                    size_t bytes) {
    kv_string(b, key);
    kv_u32(b, type);
    kv_bytes(b, value, bytes);
    ++b->kv_count;
}

void gguf_build_u32(gguf_builder *b, const char *key, uint32_t value) {
    gguf_build_raw(b, key, 4, &value, 4);
}
void gguf_build_i32(gguf_builder *b, const char *key, int32_t value) {
    gguf_build_raw(b, key, 5, &value, 4);
}
void gguf_build_f32(gguf_builder *b, const char *key, float value) {
    gguf_build_raw(b, key, 6, &value, 4);
}
void gguf_build_bool(gguf_builder *b, const char *key, int value) {
    unsigned char v = value ? 1 : 0;
    gguf_build_raw(b, key, 7, &v, 1);
}

void gguf_build_string(gguf_builder *b, const char *key, const char *value) {
    kv_string(b, key);
    kv_u32(b, 8);
    kv_string(b, value);
    ++b->kv_count;
}

void gguf_build_u32_array(gguf_builder *b, const char *key, const uint32_t *values,
                          uint64_t count) {
    kv_string(b, key);
    kv_u32(b, 9);
    kv_u32(b, 4);
    kv_u64(b, count);
    kv_bytes(b, values, count * 4);
    ++b->kv_count;
}

void gguf_build_string_array(gguf_builder *b, const char *key, const char *const *values,
                             uint64_t count) {
    kv_string(b, key);
    kv_u32(b, 9);
    kv_u32(b, 8);
    kv_u64(b, count);
    for (uint64_t i = 0; i < count; ++i) kv_string(b, values[i]);
    ++b->kv_count;
}

void gguf_build_tensor(gguf_builder *b, const char *name, uint32_t type, uint32_t ndim,
                       const uint64_t *ne, const void *data, uint64_t bytes) {
    if (b->tensor_count >= GGUF_WRITE_MAX_TENSORS) return;
    int i = b->tensor_count++;
    snprintf(b->tensors[i].name, sizeof b->tensors[i].name, "%s", name);
    b->tensors[i].ndim = ndim;
    b->tensors[i].type = type;
    for (uint32_t d = 0; d < ndim && d < 4; ++d) b->tensors[i].ne[d] = ne[d];
    b->tensors[i].data = data;
    b->tensors[i].bytes = bytes;
}

static size_t aligned(size_t at, size_t alignment) {
    return (at + alignment - 1) / alignment * alignment;
}

/* Zeros up to the next multiple of alignment. */
static void pad(growing *g, size_t alignment) {
    static const unsigned char zero = 0;
    while (g->used % alignment)
        if (!append(g, &zero, 1)) return;
}

unsigned char *gguf_build_finish(gguf_builder *b, size_t *size, size_t *data_start) {
    *size = *data_start = 0;
    growing file = {0};
    uint32_t version = b->version;
    uint64_t tensors = (uint64_t)b->tensor_count;
    file.failed = b->kv_failed;
    append(&file, "GGUF", 4);
    append(&file, &version, 4);
    append(&file, &tensors, 8);
    append(&file, &b->kv_count, 8);
    if (b->kv_bytes) append(&file, b->kvs, b->kv_bytes);
    uint64_t offset = 0;
    for (int i = 0; i < b->tensor_count; ++i) {
        uint64_t length = strlen(b->tensors[i].name);
        append(&file, &length, 8);
        append(&file, b->tensors[i].name, length);
        append(&file, &b->tensors[i].ndim, 4);
        append(&file, b->tensors[i].ne, 8 * b->tensors[i].ndim);
        append(&file, &b->tensors[i].type, 4);
        append(&file, &offset, 8);
        offset = aligned(offset + b->tensors[i].bytes, b->alignment);
    }
    pad(&file, b->alignment);
    *data_start = file.used;
    for (int i = 0; i < b->tensor_count; ++i) {
        if (b->tensors[i].bytes) append(&file, b->tensors[i].data, b->tensors[i].bytes);
        pad(&file, b->alignment);
    }
    free(b->kvs);
    b->kvs = NULL;
    b->kv_bytes = b->kv_capacity = 0;
    *size = file.used;
    return file.bytes;
}

int gguf_build_write(gguf_builder *b, const char *path) {
    size_t size, data_start;
    unsigned char *file = gguf_build_finish(b, &size, &data_start);
    if (!file) return 0;
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(file, 1, size, f) == size;
    if (f) ok &= fclose(f) == 0;
    free(file);
    return ok;
}
