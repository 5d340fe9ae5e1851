/* gguf_splits.h: llama.cpp's gguf-split convention (split.no, split.count,
 * split.tensors.count; files named PREFIX-%05d-of-%05d.gguf, the metadata in the first). */
#include "gguf_splits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"

static int split_key(const gguf_file *file, const char *key, uint64_t *value) {
    const gguf_kv *kv = gguf_find_key(file, key);
    return kv && gguf_kv_uint(kv, value);
}

/* PREFIX of a split's path: the path without its -%05d-of-%05d.gguf. */
static int split_prefix(const char *path, uint64_t no, uint64_t count, char *prefix, size_t size) {
    char tail[64];
    snprintf(tail, sizeof tail, "-%05llu-of-%05llu.gguf", (unsigned long long)(no + 1),
             (unsigned long long)count);
    size_t n = strlen(path), m = strlen(tail);
    if (n < m || strcmp(path + n - m, tail) != 0 || n - m >= size) return 0;
    memcpy(prefix, path, n - m);
    prefix[n - m] = 0;
    return 1;
}

void gguf_splits_close(gguf_splits *splits) {
    for (size_t i = 0; i < splits->count; ++i) gguf_close(&splits->files[i]);
    free(splits->files);
    memset(splits, 0, sizeof *splits);
}

/* Opens splits 0 .. count - 1 from their names and checks that they belong together. */
static int open_all(const char *prefix, uint64_t count, gguf_splits *out, char *error,
                    size_t error_size) {
    out->files = calloc((size_t)count, sizeof *out->files);
    if (!out->files) return fail(error, error_size, "out of memory");
    uint64_t tensors = 0;
    for (uint64_t i = 0; i < count; ++i) {
        char path[4200];
        snprintf(path, sizeof path, "%s-%05llu-of-%05llu.gguf", prefix, (unsigned long long)(i + 1),
                 (unsigned long long)count);
        if (!gguf_open(path, &out->files[i], error, error_size)) return 0;
        out->count = (size_t)i + 1;
        uint64_t no = UINT64_MAX, of = 0;
        if (!split_key(&out->files[i], "split.no", &no) ||
            !split_key(&out->files[i], "split.count", &of) || no != i || of != count)
            return fail(error, error_size,
                        "%s: its split.no and split.count are not %llu of %llu (another model's "
                        "split?)",
                        path, (unsigned long long)i, (unsigned long long)count);
        const gguf_file *file = &out->files[i];
        for (size_t t = 0; t < file->tensor_count; ++t)
            for (uint64_t j = 0; j < i; ++j)
                if (gguf_find_tensor(&out->files[j], file->tensors[t].name))
                    return fail(error, error_size, "tensor '%s' is in split %llu and %llu",
                                file->tensors[t].name, (unsigned long long)(j + 1),
                                (unsigned long long)(i + 1));
        tensors += file->tensor_count;
    }
    uint64_t expected;
    if (split_key(&out->files[0], "split.tensors.count", &expected) && expected != tensors)
        return fail(error, error_size,
                    "%s-...: split.tensors.count says %llu tensors, the %llu splits hold %llu",
                    prefix, (unsigned long long)expected, (unsigned long long)count,
                    (unsigned long long)tensors);
    return 1;
}

int gguf_splits_open(const char *path, gguf_splits *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    gguf_file given;
    if (!gguf_open(path, &given, error, error_size)) return 0;
    uint64_t count = 1, no = 0;
    if (!split_key(&given, "split.count", &count) || count <= 1) {
        out->files = malloc(sizeof *out->files);
        if (!out->files) {
            gguf_close(&given);
            return fail(error, error_size, "out of memory");
        }
        out->files[0] = given; /* one file: splits or not */
        out->count = 1;
        return 1;
    }
    split_key(&given, "split.no", &no);
    gguf_close(&given);
    char prefix[4096];
    if (count > 9999 || no >= count || !split_prefix(path, no, count, prefix, sizeof prefix))
        return fail(error, error_size,
                    "%s: split %llu of %llu, but not named PREFIX-%05llu-of-%05llu.gguf as "
                    "llama.cpp names splits",
                    path, (unsigned long long)(no + 1), (unsigned long long)count,
                    (unsigned long long)(no + 1), (unsigned long long)count);
    int ok = open_all(prefix, count, out, error, error_size);
    if (!ok) gguf_splits_close(out);
    return ok;
}

const model_tensor *gguf_splits_find(const gguf_splits *splits, const char *name) {
    for (size_t i = 0; i < splits->count; ++i) {
        const model_tensor *t = gguf_find_tensor(&splits->files[i], name);
        if (t) return t;
    }
    return NULL;
}
