/* safetensors.h: the header's JSON parsed with cJSON (Debian's libcjson), every tensor checked
 * against the others and the file before any is handed out. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "file_map.h"

/* Headers past this are refused (Hugging Face's own reader takes 100 MB). */
#define MAX_HEADER_BYTES (100u << 20)

/* A JSON number that is a whole number in [0, 2^53]: exact in the double cJSON keeps. */
static int whole_number(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double value = item->valuedouble;
    if (!(value >= 0.0 && value <= 9007199254740992.0) || floor(value) != value) return 0;
    *out = (uint64_t)value;
    return 1;
}

static int dtype_of(const char *text, model_tensor *t, uint64_t *item) {
    static const struct {
        const char *name;
        model_dtype dtype;
        uint64_t item;
    } known[] = {{"F32", MODEL_F32, 4}, {"F16", MODEL_F16, 2}, {"BF16", MODEL_BF16, 2}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; ++i)
        if (!strcmp(text, known[i].name)) {
            t->dtype = known[i].dtype;
            t->type_name = known[i].name;
            *item = known[i].item;
            return 1;
        }
    return 0;
}

/* One tensor's entry: its dtype, shape and byte range, each checked. */
static int read_entry(const cJSON *entry, const unsigned char *data, uint64_t data_size,
                      model_tensor *t, uint64_t *begin, char *error, size_t error_size) {
    const char *name = entry->string;
    if (!cJSON_IsObject(entry)) return fail(error, error_size, "tensor '%s': not an object", name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype)) return fail(error, error_size, "tensor '%s': no dtype", name);
    uint64_t item = 0;
    if (!dtype_of(dtype->valuestring, t, &item))
        return fail(error, error_size, "tensor '%s': dtype %s (F32, F16 or BF16 are read)", name,
                    dtype->valuestring);
    if (!cJSON_IsArray(shape)) return fail(error, error_size, "tensor '%s': no shape", name);
    int dims = cJSON_GetArraySize(shape);
    if (dims > MODEL_MAX_DIMS)
        return fail(error, error_size, "tensor '%s': %d dimensions (at most %d)", name, dims,
                    MODEL_MAX_DIMS);
    t->ndim = (uint32_t)dims;
    t->count = 1;
    for (int i = 0; i < dims; ++i) {
        uint64_t extent;
        if (!whole_number(cJSON_GetArrayItem(shape, i), &extent))
            return fail(error, error_size, "tensor '%s': shape[%d] is not a whole number", name, i);
        if (extent && t->count > UINT64_MAX / 8 / extent)
            return fail(error, error_size, "tensor '%s': its shape overflows", name);
        t->shape[i] = extent;
        t->count *= extent;
    }
    uint64_t end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !whole_number(cJSON_GetArrayItem(offsets, 0), begin) ||
        !whole_number(cJSON_GetArrayItem(offsets, 1), &end))
        return fail(error, error_size, "tensor '%s': data_offsets is not [begin, end]", name);
    if (*begin > end || end > data_size)
        return fail(error, error_size,
                    "tensor '%s': data_offsets [%llu, %llu] lie outside the %llu bytes of data",
                    name, (unsigned long long)*begin, (unsigned long long)end,
                    (unsigned long long)data_size);
    t->bytes = end - *begin;
    if (t->bytes != t->count * item)
        return fail(error, error_size,
                    "tensor '%s': %llu bytes of data for a shape of %llu elements of %s", name,
                    (unsigned long long)t->bytes, (unsigned long long)t->count, dtype->valuestring);
    t->data = data + *begin;
    t->name = strdup(name);
    if (!t->name) return fail(error, error_size, "out of memory");
    return 1;
}

typedef struct span {
    uint64_t begin, end;
    size_t tensor;
} span;

static int by_begin(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin   ? -1
           : x->begin > y->begin ? 1
                                 : (x->end > y->end) - (x->end < y->end);
}

/* The tensors tile the data exactly, as Hugging Face's reader demands (no byte shared, no hole,
 * nothing after the last: no room for a second file's bytes), and no name comes twice. */
static int check_layout(const safetensors_file *file, span *spans, uint64_t data_size, char *error,
                        size_t error_size) {
    qsort(spans, file->count, sizeof *spans, by_begin);
    uint64_t at = 0;
    for (size_t i = 0; i < file->count; ++i) {
        const char *name = file->tensors[spans[i].tensor].name;
        if (spans[i].begin < at)
            return fail(error, error_size, "tensors '%s' and '%s' overlap",
                        file->tensors[spans[i - 1].tensor].name, name);
        if (spans[i].begin > at)
            return fail(error, error_size, "%llu bytes of data before tensor '%s' belong to none",
                        (unsigned long long)(spans[i].begin - at), name);
        at = spans[i].end;
    }
    if (at != data_size)
        return fail(error, error_size, "%llu bytes of data after the last tensor belong to none",
                    (unsigned long long)(data_size - at));
    for (size_t i = 0; i < file->count; ++i)
        for (size_t j = i + 1; j < file->count; ++j)
            if (!strcmp(file->tensors[i].name, file->tensors[j].name))
                return fail(error, error_size, "tensor '%s' is named twice", file->tensors[i].name);
    return 1;
}

static int parse_header(const cJSON *header, const unsigned char *data, uint64_t data_size,
                        safetensors_file *out, char *error, size_t error_size) {
    if (!cJSON_IsObject(header)) return fail(error, error_size, "the header is not a JSON object");
    size_t entries = 0;
    for (const cJSON *e = header->child; e; e = e->next)
        entries += strcmp(e->string, "__metadata__") != 0;
    out->tensors = calloc(entries ? entries : 1, sizeof *out->tensors);
    span *spans = calloc(entries ? entries : 1, sizeof *spans);
    if (!out->tensors || !spans) {
        free(spans);
        return fail(error, error_size, "out of memory");
    }
    int ok = 1;
    for (const cJSON *e = header->child; e && ok; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) ok = fail(error, error_size, "__metadata__ is not an object");
            continue;
        }
        span *s = &spans[out->count];
        ok =
            read_entry(e, data, data_size, &out->tensors[out->count], &s->begin, error, error_size);
        if (!ok) break;
        s->end = s->begin + out->tensors[out->count].bytes;
        s->tensor = out->count++;
    }
    if (ok) ok = check_layout(out, spans, data_size, error, error_size);
    free(spans);
    return ok;
}

int safetensors_parse(const void *bytes, size_t size, safetensors_file *out, char *error,
                      size_t error_size) {
    memset(out, 0, sizeof *out);
    const unsigned char *p = bytes;
    if (size < 8)
        return fail(error, error_size, "%zu bytes: shorter than the header's length", size);
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; --i) header_bytes = header_bytes << 8 | p[i];
    if (header_bytes > MAX_HEADER_BYTES || header_bytes > size - 8)
        return fail(error, error_size, "a header of %llu bytes in a file of %zu",
                    (unsigned long long)header_bytes, size);
    cJSON *header = cJSON_ParseWithLength((const char *)p + 8, (size_t)header_bytes);
    if (!header) return fail(error, error_size, "the header is not valid JSON");
    int ok =
        parse_header(header, p + 8 + header_bytes, size - 8 - header_bytes, out, error, error_size);
    cJSON_Delete(header);
    if (!ok) safetensors_close(out);
    return ok;
}

int safetensors_open(const char *path, safetensors_file *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    void *mapping;
    size_t size;
    if (!file_map(path, &mapping, &size, error, error_size)) return 0;
    char why[400];
    if (!safetensors_parse(mapping, size, out, why, sizeof why)) {
        file_unmap(mapping, size);
        return fail(error, error_size, "%s: %s", path, why);
    }
    out->mapping = mapping;
    out->size = size;
    return 1;
}

const model_tensor *safetensors_find(const safetensors_file *file, const char *name) {
    for (size_t i = 0; i < file->count; ++i)
        if (!strcmp(file->tensors[i].name, name)) return &file->tensors[i];
    return NULL;
}

void safetensors_close(safetensors_file *file) {
    for (size_t i = 0; i < file->count; ++i) free(file->tensors[i].name);
    free(file->tensors);
    file_unmap(file->mapping, file->size);
    memset(file, 0, sizeof *file);
}
