/* gguf.h: a cursor over the mapping that refuses to step past its end; counts checked against
 * the bytes left before anything is allocated for them. */
#include "gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "file_map.h"

#define GGUF_MAGIC "GGUF"
#define MAX_DIMS 4           /* GGML_MAX_DIMS */
#define MAX_NAME_BYTES 65535 /* keys and tensor names */
#define DEFAULT_ALIGNMENT 32

/* ggml's types by number: block of `block` elements stored in `bytes` (gguf-py's
 * GGML_QUANT_SIZES). Numbers missing here (4 and 5, long removed; later ones) are refused. */
static const struct ggml_type_info {
    uint32_t type;
    const char *name;
    uint32_t block, bytes;
    model_dtype dtype;
} GGML_TYPES[] = {
    {0, "F32", 1, 4, MODEL_F32},           {1, "F16", 1, 2, MODEL_F16},
    {2, "Q4_0", 32, 18, MODEL_Q4_0},       {3, "Q4_1", 32, 20, MODEL_OTHER},
    {6, "Q5_0", 32, 22, MODEL_Q5_0},       {7, "Q5_1", 32, 24, MODEL_OTHER},
    {8, "Q8_0", 32, 34, MODEL_Q8_0},       {9, "Q8_1", 32, 36, MODEL_OTHER},
    {10, "Q2_K", 256, 84, MODEL_OTHER},    {11, "Q3_K", 256, 110, MODEL_OTHER},
    {12, "Q4_K", 256, 144, MODEL_Q4_K},    {13, "Q5_K", 256, 176, MODEL_Q5_K},
    {14, "Q6_K", 256, 210, MODEL_Q6_K},    {15, "Q8_K", 256, 292, MODEL_OTHER},
    {16, "IQ2_XXS", 256, 66, MODEL_OTHER}, {17, "IQ2_XS", 256, 74, MODEL_OTHER},
    {18, "IQ3_XXS", 256, 98, MODEL_OTHER}, {19, "IQ1_S", 256, 50, MODEL_OTHER},
    {20, "IQ4_NL", 32, 18, MODEL_OTHER},   {21, "IQ3_S", 256, 110, MODEL_OTHER},
    {22, "IQ2_S", 256, 82, MODEL_OTHER},   {23, "IQ4_XS", 256, 136, MODEL_OTHER},
    {24, "I8", 1, 1, MODEL_OTHER},         {25, "I16", 1, 2, MODEL_OTHER},
    {26, "I32", 1, 4, MODEL_OTHER},        {27, "I64", 1, 8, MODEL_OTHER},
    {28, "F64", 1, 8, MODEL_OTHER},        {29, "IQ1_M", 256, 56, MODEL_OTHER},
    {30, "BF16", 1, 2, MODEL_BF16},        {34, "TQ1_0", 256, 54, MODEL_OTHER},
    {35, "TQ2_0", 256, 66, MODEL_OTHER},   {39, "MXFP4", 32, 17, MODEL_OTHER},
};

static const struct ggml_type_info *type_info(uint32_t type) {
    for (size_t i = 0; i < sizeof GGML_TYPES / sizeof GGML_TYPES[0]; ++i)
        if (GGML_TYPES[i].type == type) return &GGML_TYPES[i];
    return NULL;
}

const char *gguf_ggml_type_name(uint32_t type) {
    const struct ggml_type_info *info = type_info(type);
    return info ? info->name : NULL;
}

int gguf_is_gguf(const void *bytes, size_t size) {
    return size >= 4 && !memcmp(bytes, GGUF_MAGIC, 4);
}

/* ---- The cursor ---- */
typedef struct cursor {
    const unsigned char *at, *begin;
    size_t left;
    char *error;
    size_t error_size;
} cursor;

static size_t position(const cursor *c) { return (size_t)(c->at - c->begin); }

static int take(cursor *c, void *out, size_t bytes, const char *what) {
    if (bytes > c->left)
        return fail(c->error, c->error_size, "truncated at byte %zu: %s needs %zu bytes, %zu left",
                    position(c), what, bytes, c->left);
    if (out) memcpy(out, c->at, bytes); /* little-endian, as the hosts moevk runs on */
    c->at += bytes;
    c->left -= bytes;
    return 1;
}

static int take_u32(cursor *c, uint32_t *out, const char *what) { return take(c, out, 4, what); }
static int take_u64(cursor *c, uint64_t *out, const char *what) { return take(c, out, 8, what); }

/* A gguf_string (u64 length, bytes): a pointer into the mapping and its length. */
static int take_string(cursor *c, const unsigned char **text, uint64_t *length, const char *what) {
    if (!take_u64(c, length, what)) return 0;
    if (*length > c->left)
        return fail(c->error, c->error_size, "%s: a string of %llu bytes with %zu left", what,
                    (unsigned long long)*length, c->left);
    *text = c->at;
    return take(c, NULL, (size_t)*length, what);
}

/* A key or tensor name as a C string: not empty, no NUL inside, not absurdly long. */
static int take_name(cursor *c, char **out, const char *what) {
    const unsigned char *text;
    uint64_t length;
    if (!take_string(c, &text, &length, what)) return 0;
    if (length == 0 || length > MAX_NAME_BYTES || memchr(text, 0, (size_t)length))
        return fail(c->error, c->error_size,
                    "%s at byte %zu: an empty, NUL-holding or too long name", what,
                    position(c) - (size_t)length);
    *out = malloc((size_t)length + 1);
    if (!*out) return fail(c->error, c->error_size, "out of memory");
    memcpy(*out, text, (size_t)length);
    (*out)[length] = 0;
    return 1;
}

/* Bytes of one scalar of a type; 0 for strings and arrays, -1 for no type. */
static int scalar_bytes(uint32_t type) {
    static const int BYTES[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < sizeof BYTES / sizeof BYTES[0] ? BYTES[type] : -1;
}

/* One value of a pair (kv->type read already), checked and stepped over. */
static int take_value(cursor *c, gguf_kv *kv) {
    int bytes = scalar_bytes(kv->type);
    if (bytes < 0)
        return fail(c->error, c->error_size, "key '%s': value type %u is not a GGUF type", kv->key,
                    (unsigned)kv->type);
    if (kv->type == GGUF_STRING) return take_string(c, &kv->value, &kv->length, kv->key);
    if (kv->type != GGUF_ARRAY) {
        kv->value = c->at;
        if (!take(c, NULL, (size_t)bytes, kv->key)) return 0;
        if (kv->type == GGUF_BOOL && kv->value[0] > 1)
            return fail(c->error, c->error_size, "key '%s': a bool of %u", kv->key, kv->value[0]);
        return 1;
    }
    uint32_t element;
    if (!take_u32(c, &element, kv->key) || !take_u64(c, &kv->length, kv->key)) return 0;
    int element_bytes = scalar_bytes(element);
    if (element_bytes < 0 || element == GGUF_ARRAY)
        return fail(c->error, c->error_size, "key '%s': arrays of type %u are not read", kv->key,
                    (unsigned)element);
    kv->element = (gguf_type)element;
    kv->value = c->at;
    if (element != GGUF_STRING) {
        if (kv->length > c->left / (uint64_t)element_bytes)
            return fail(c->error, c->error_size, "key '%s': %llu elements with %zu bytes left",
                        kv->key, (unsigned long long)kv->length, c->left);
        return take(c, NULL, (size_t)kv->length * (size_t)element_bytes, kv->key);
    }
    if (kv->length > c->left / 8) /* each string holds at least its length */
        return fail(c->error, c->error_size, "key '%s': %llu strings with %zu bytes left", kv->key,
                    (unsigned long long)kv->length, c->left);
    for (uint64_t i = 0; i < kv->length; ++i) {
        const unsigned char *text;
        uint64_t length;
        if (!take_string(c, &text, &length, kv->key)) return 0;
    }
    return 1;
}

/* ---- The file ---- */
static int by_key(const void *a, const void *b) {
    return strcmp(((const gguf_kv *)a)->key, ((const gguf_kv *)b)->key);
}

static int read_kvs(cursor *c, gguf_file *out, uint64_t count) {
    /* Each pair takes at least its key's length, one byte of key, its type and one byte. */
    if (count > c->left / 14)
        return fail(c->error, c->error_size, "%llu metadata pairs in %zu bytes",
                    (unsigned long long)count, c->left);
    out->kvs = calloc((size_t)count + 1, sizeof *out->kvs);
    if (!out->kvs) return fail(c->error, c->error_size, "out of memory");
    for (uint64_t i = 0; i < count; ++i) {
        gguf_kv *kv = &out->kvs[i];
        uint32_t type;
        if (!take_name(c, &kv->key, "a metadata key")) return 0;
        ++out->kv_count;
        if (!take_u32(c, &type, kv->key)) return 0;
        kv->type = (gguf_type)type;
        if (!take_value(c, kv)) return 0;
    }
    /* A key twice: sorted copies sit side by side. */
    gguf_kv *sorted = malloc(((size_t)count + 1) * sizeof *sorted);
    if (!sorted) return fail(c->error, c->error_size, "out of memory");
    memcpy(sorted, out->kvs, (size_t)count * sizeof *sorted);
    qsort(sorted, (size_t)count, sizeof *sorted, by_key);
    const char *twice = NULL;
    for (size_t i = 1; i < count && !twice; ++i)
        if (!strcmp(sorted[i - 1].key, sorted[i].key)) twice = sorted[i].key;
    int ok = !twice || fail(c->error, c->error_size, "key '%s' is given twice", twice);
    free(sorted);
    return ok;
}

/* general.alignment: a power of two when given. */
static int read_alignment(gguf_file *out, char *error, size_t error_size) {
    out->alignment = DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find_key(out, "general.alignment");
    if (!kv) return 1;
    uint64_t value;
    if (kv->type != GGUF_UINT32 || !gguf_kv_uint(kv, &value) || value == 0 ||
        (value & (value - 1)) || value > (1u << 30))
        return fail(error, error_size, "general.alignment must be a uint32 power of two");
    out->alignment = (uint32_t)value;
    return 1;
}

/* One tensor's info: name, dimensions, type, offset (checked once the data's start is known). */
static int read_tensor_info(cursor *c, gguf_file *out, size_t i, uint64_t *offset) {
    model_tensor *t = &out->tensors[i];
    uint32_t ndim, type;
    uint64_t ne[MAX_DIMS];
    if (!take_name(c, &t->name, "a tensor name")) return 0;
    ++out->tensor_count;
    if (!take_u32(c, &ndim, t->name)) return 0;
    if (ndim == 0 || ndim > MAX_DIMS)
        return fail(c->error, c->error_size, "tensor '%s': %u dimensions (1 to %d)", t->name, ndim,
                    MAX_DIMS);
    t->ndim = ndim;
    t->count = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
        if (!take_u64(c, &ne[d], t->name)) return 0;
        if (ne[d] > ((uint64_t)1 << 62) || (ne[d] && t->count > ((uint64_t)1 << 62) / ne[d]))
            return fail(c->error, c->error_size, "tensor '%s': dimension %u of %llu overflows",
                        t->name, d, (unsigned long long)ne[d]);
        t->count *= ne[d];
        t->shape[ndim - 1 - d] = ne[d]; /* ne[0] is the contiguous extent: last */
    }
    if (!take_u32(c, &type, t->name) || !take_u64(c, offset, t->name)) return 0;
    const struct ggml_type_info *info = type_info(type);
    if (!info)
        return fail(c->error, c->error_size, "tensor '%s': ggml type %u is not one moevk knows",
                    t->name, type);
    if (ne[0] % info->block)
        return fail(c->error, c->error_size,
                    "tensor '%s': its rows of %llu are not whole %s blocks of %u", t->name,
                    (unsigned long long)ne[0], info->name, info->block);
    out->ggml_types[i] = type;
    t->dtype = info->dtype;
    t->type_name = info->name;
    t->bytes = t->count / info->block * info->bytes; /* below 2^62 / 32 * 292: no overflow */
    return 1;
}

typedef struct span {
    uint64_t begin, end;
    size_t tensor;
} span;

static int by_begin(const void *a, const void *b) {
    const span *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* The tensors' bytes: aligned, inside the data section, no two sharing a byte. */
static int place_tensors(gguf_file *out, const unsigned char *bytes, size_t data_start,
                         const uint64_t *offsets, char *error, size_t error_size) {
    uint64_t data_size = out->size - data_start;
    span *spans = calloc(out->tensor_count + 1, sizeof *spans);
    if (!spans) return fail(error, error_size, "out of memory");
    int ok = 1;
    for (size_t i = 0; i < out->tensor_count && ok; ++i) {
        model_tensor *t = &out->tensors[i];
        if (offsets[i] % out->alignment)
            ok = fail(error, error_size, "tensor '%s': offset %llu is not a multiple of %u",
                      t->name, (unsigned long long)offsets[i], out->alignment);
        else if (offsets[i] > data_size || t->bytes > data_size - offsets[i])
            ok = fail(error, error_size,
                      "tensor '%s': %llu bytes at offset %llu pass the end of the %llu bytes of "
                      "data (a truncated file?)",
                      t->name, (unsigned long long)t->bytes, (unsigned long long)offsets[i],
                      (unsigned long long)data_size);
        if (!ok) break;
        t->data = bytes + data_start + offsets[i];
        spans[i] = (span){offsets[i], offsets[i] + t->bytes, i};
    }
    if (ok) qsort(spans, out->tensor_count, sizeof *spans, by_begin);
    /* Sorted by their first byte, each non-empty tensor must begin past every earlier end. */
    size_t last = SIZE_MAX; /* the span reaching furthest so far */
    for (size_t i = 0; i < out->tensor_count && ok; ++i) {
        if (spans[i].end == spans[i].begin) continue;
        if (last != SIZE_MAX && spans[i].begin < spans[last].end)
            ok = fail(error, error_size, "tensors '%s' and '%s' overlap",
                      out->tensors[spans[last].tensor].name, out->tensors[spans[i].tensor].name);
        if (last == SIZE_MAX || spans[i].end > spans[last].end) last = i;
    }
    free(spans);
    return ok;
}

typedef struct named {
    const char *name;
    size_t tensor;
} named;

static int by_name(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* The tensors sorted by name: a name twice sits beside itself, and lookups bisect. */
static int index_names(gguf_file *out, char *error, size_t error_size) {
    named *sorted = calloc(out->tensor_count + 1, sizeof *sorted);
    out->by_name = calloc(out->tensor_count + 1, sizeof *out->by_name);
    if (!sorted || !out->by_name) {
        free(sorted);
        return fail(error, error_size, "out of memory");
    }
    for (size_t i = 0; i < out->tensor_count; ++i) sorted[i] = (named){out->tensors[i].name, i};
    qsort(sorted, out->tensor_count, sizeof *sorted, by_name);
    const char *twice = NULL;
    for (size_t i = 0; i < out->tensor_count; ++i) {
        out->by_name[i] = sorted[i].tensor;
        if (i > 0 && !twice && !strcmp(sorted[i - 1].name, sorted[i].name)) twice = sorted[i].name;
    }
    int ok = !twice || fail(error, error_size, "tensor '%s' is named twice", twice);
    free(sorted);
    return ok;
}

static int parse(const unsigned char *bytes, size_t size, gguf_file *out, char *error,
                 size_t error_size) {
    cursor c = {bytes, bytes, size, error, error_size};
    char magic[4];
    uint64_t tensor_count, kv_count;
    if (!take(&c, magic, 4, "the magic")) return 0;
    if (memcmp(magic, GGUF_MAGIC, 4)) return fail(error, error_size, "not a GGUF file (no magic)");
    if (!take_u32(&c, &out->version, "the version")) return 0;
    if (out->version == 1)
        return fail(error, error_size,
                    "GGUF version 1 (32-bit counts) is not read: convert the "
                    "model again with a current llama.cpp");
    if (out->version != 2 && out->version != 3)
        return fail(error, error_size,
                    "GGUF version %u (2 and 3 are read; a big-endian file reads as 50331648)",
                    out->version);
    if (!take_u64(&c, &tensor_count, "the tensor count") ||
        !take_u64(&c, &kv_count, "the metadata count") || !read_kvs(&c, out, kv_count) ||
        !read_alignment(out, error, error_size))
        return 0;
    /* Each tensor's info takes at least 8 + 1 + 4 + 8 + 4 + 8 bytes. */
    if (tensor_count > c.left / 33)
        return fail(error, error_size, "%llu tensors in %zu bytes",
                    (unsigned long long)tensor_count, c.left);
    out->tensors = calloc((size_t)tensor_count + 1, sizeof *out->tensors);
    out->ggml_types = calloc((size_t)tensor_count + 1, sizeof *out->ggml_types);
    uint64_t *offsets = calloc((size_t)tensor_count + 1, sizeof *offsets);
    int ok =
        out->tensors && out->ggml_types && offsets ? 1 : fail(error, error_size, "out of memory");
    for (size_t i = 0; ok && i < tensor_count; ++i) ok = read_tensor_info(&c, out, i, &offsets[i]);
    size_t data_start = (position(&c) + out->alignment - 1) / out->alignment * out->alignment;
    if (ok && tensor_count > 0 && data_start > size)
        ok = fail(error, error_size, "the data section would start past the end of the file");
    out->size = size;
    if (ok && tensor_count > 0)
        ok = place_tensors(out, bytes, data_start, offsets, error, error_size);
    free(offsets);
    return ok && index_names(out, error, error_size);
}

int gguf_parse(const void *bytes, size_t size, gguf_file *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    int ok = parse(bytes, size, out, error, error_size);
    if (!ok) gguf_close(out);
    return ok;
}

int gguf_open(const char *path, gguf_file *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    void *mapping;
    size_t size;
    if (!file_map(path, &mapping, &size, error, error_size)) return 0;
    char why[400];
    if (!gguf_parse(mapping, size, out, why, sizeof why)) {
        file_unmap(mapping, size);
        return fail(error, error_size, "%s: %s", path, why);
    }
    out->mapping = mapping;
    return 1;
}

void gguf_close(gguf_file *file) {
    for (size_t i = 0; i < file->kv_count; ++i) free(file->kvs[i].key);
    for (size_t i = 0; i < file->tensor_count; ++i) free(file->tensors[i].name);
    free(file->kvs);
    free(file->tensors);
    free(file->ggml_types);
    free(file->by_name);
    file_unmap(file->mapping, file->size);
    memset(file, 0, sizeof *file);
}

const model_tensor *gguf_find_tensor(const gguf_file *file, const char *name) {
    size_t low = 0, high = file->tensor_count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        const model_tensor *t = &file->tensors[file->by_name[middle]];
        int order = strcmp(t->name, name);
        if (order == 0) return t;
        if (order < 0)
            low = middle + 1;
        else
            high = middle;
    }
    return NULL;
}

const gguf_kv *gguf_find_key(const gguf_file *file, const char *key) {
    for (size_t i = 0; i < file->kv_count; ++i)
        if (!strcmp(file->kvs[i].key, key)) return &file->kvs[i];
    return NULL;
}

int gguf_kv_uint(const gguf_kv *kv, uint64_t *out) {
    int64_t value;
    switch (kv->type) {
    case GGUF_UINT8: *out = kv->value[0]; return 1;
    case GGUF_UINT16: {
        uint16_t v;
        memcpy(&v, kv->value, 2);
        *out = v;
        return 1;
    }
    case GGUF_UINT32: {
        uint32_t v;
        memcpy(&v, kv->value, 4);
        *out = v;
        return 1;
    }
    case GGUF_UINT64: memcpy(out, kv->value, 8); return 1;
    case GGUF_INT8: value = (int8_t)kv->value[0]; break;
    case GGUF_INT16: {
        int16_t v;
        memcpy(&v, kv->value, 2);
        value = v;
        break;
    }
    case GGUF_INT32: {
        int32_t v;
        memcpy(&v, kv->value, 4);
        value = v;
        break;
    }
    case GGUF_INT64: memcpy(&value, kv->value, 8); break;
    default: return 0;
    }
    if (value < 0) return 0;
    *out = (uint64_t)value;
    return 1;
}

int gguf_kv_float(const gguf_kv *kv, double *out) {
    if (kv->type == GGUF_FLOAT32) {
        float v;
        memcpy(&v, kv->value, 4);
        *out = v;
        return 1;
    }
    if (kv->type == GGUF_FLOAT64) {
        memcpy(out, kv->value, 8);
        return 1;
    }
    uint64_t whole;
    if (!gguf_kv_uint(kv, &whole)) return 0;
    *out = (double)whole;
    return 1;
}

int gguf_kv_bool(const gguf_kv *kv, int *out) {
    if (kv->type != GGUF_BOOL) return 0;
    *out = kv->value[0] != 0;
    return 1;
}

int gguf_kv_string(const gguf_kv *kv, char *text, size_t size) {
    if (kv->type != GGUF_STRING || kv->length >= size) return 0;
    memcpy(text, kv->value, (size_t)kv->length);
    text[kv->length] = 0;
    return 1;
}
