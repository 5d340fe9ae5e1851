#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
/* Bigger than any header NumPy writes; a longer one is refused before anything is allocated. */
#define MAX_HEADER 65536u

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(error, error_size, __VA_ARGS__);                                                  \
        return 0;                                                                                  \
    } while (0)

/* Finds `'key':` in the header dictionary and returns what follows, spaces skipped. */
static const char *find_key(const char *header, const char *key) {
    char quoted[32];
    snprintf(quoted, sizeof quoted, "'%s'", key);
    const char *at = strstr(header, quoted);
    if (!at) return NULL;
    at += strlen(quoted);
    while (*at == ' ') ++at;
    if (*at != ':') return NULL;
    ++at;
    while (*at == ' ') ++at;
    return at;
}

static npy_type type_of(const char *descr, size_t *item_size) {
    static const struct {
        const char *descr;
        npy_type type;
        size_t size;
    } KNOWN[] = {{"<f4", NPY_F32, 4},  {"<f2", NPY_F16, 2},  {"<u2", NPY_BF16, 2},
                 {"|V2", NPY_BF16, 2}, {"<V2", NPY_BF16, 2}, {"<i4", NPY_I32, 4},
                 {"<u4", NPY_U32, 4},  {"<f8", NPY_F64, 8}};
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; ++i)
        if (strcmp(descr, KNOWN[i].descr) == 0) {
            *item_size = KNOWN[i].size;
            return KNOWN[i].type;
        }
    *item_size = 0;
    return NPY_OTHER;
}

static int parse_header(const char *header, npy_array *out, char *error, size_t error_size) {
    const char *descr = find_key(header, "descr");
    if (!descr || *descr != '\'') FAIL("header has no 'descr'");
    const char *end = strchr(descr + 1, '\'');
    if (!end || end - descr - 1 >= (long)sizeof out->descr) FAIL("header's 'descr' is malformed");
    memcpy(out->descr, descr + 1, (size_t)(end - descr - 1));
    out->descr[end - descr - 1] = 0;
    out->type = type_of(out->descr, &out->item_size);
    if (out->type == NPY_OTHER) {
        if (out->descr[0] == '>') FAIL("big-endian data ('%s') is not supported", out->descr);
        FAIL("dtype '%s' is not supported (float32, float16, bfloat16 as uint16, int32, uint32, "
             "float64)",
             out->descr);
    }
    const char *fortran = find_key(header, "fortran_order");
    if (!fortran) FAIL("header has no 'fortran_order'");
    if (strncmp(fortran, "True", 4) == 0)
        FAIL("Fortran-order arrays are not supported; save in C order");
    if (strncmp(fortran, "False", 5) != 0) FAIL("header's 'fortran_order' is malformed");
    const char *shape = find_key(header, "shape");
    if (!shape || *shape != '(') FAIL("header has no 'shape' tuple");
    ++shape;
    out->ndim = 0;
    out->count = 1;
    for (;;) {
        while (*shape == ' ') ++shape;
        if (*shape == ')') break;
        if (!isdigit((unsigned char)*shape)) FAIL("header's 'shape' is malformed");
        if (out->ndim == NPY_MAX_DIMS) FAIL("more than %d dimensions", NPY_MAX_DIMS);
        errno = 0;
        char *after;
        unsigned long long dim = strtoull(shape, &after, 10);
        if (errno || dim > (1ull << 40)) FAIL("a dimension of the shape is too large");
        out->shape[out->ndim++] = dim;
        if (dim && out->count > UINT64_MAX / dim) FAIL("the shape's element count overflows");
        out->count *= dim;
        shape = after;
        while (*shape == ' ') ++shape;
        if (*shape == ',')
            ++shape;
        else if (*shape != ')')
            FAIL("header's 'shape' is malformed");
    }
    return 1;
}

int npy_parse(const unsigned char *bytes, size_t size, npy_array *out, char *error,
              size_t error_size) {
    memset(out, 0, sizeof *out);
    if (size < 10 || memcmp(bytes, MAGIC, 6) != 0) FAIL("not an .npy file (bad magic)");
    unsigned major = bytes[6];
    size_t header_length, offset;
    if (major == 1) {
        header_length = bytes[8] | (size_t)bytes[9] << 8;
        offset = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) FAIL("truncated header");
        header_length =
            bytes[8] | (size_t)bytes[9] << 8 | (size_t)bytes[10] << 16 | (size_t)bytes[11] << 24;
        offset = 12;
    } else {
        FAIL("unsupported .npy format version %u", major);
    }
    if (header_length > MAX_HEADER) FAIL("header of %zu bytes is too long", header_length);
    if (offset + header_length > size) FAIL("truncated header");
    char header[MAX_HEADER + 1];
    memcpy(header, bytes + offset, header_length);
    header[header_length] = 0;
    if (!parse_header(header, out, error, error_size)) return 0;
    size_t data_offset = offset + header_length;
    uint64_t available = size - data_offset;
    if (out->count > available / out->item_size)
        FAIL("truncated data: the shape needs more than the %llu bytes the file holds",
             (unsigned long long)available);
    size_t bytes_needed = (size_t)(out->count * out->item_size);
    out->data = malloc(bytes_needed ? bytes_needed : 1);
    if (!out->data) FAIL("out of memory for %zu bytes", bytes_needed);
    memcpy(out->data, bytes + data_offset, bytes_needed);
    return 1;
}

int npy_read(const char *path, npy_array *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "%s: cannot open (%s)", path, strerror(errno));
        return 0;
    }
    unsigned char *bytes = NULL;
    long size = -1;
    if (fseek(file, 0, SEEK_END) == 0) size = ftell(file);
    if (size >= 0 && fseek(file, 0, SEEK_SET) == 0) bytes = malloc((size_t)size + 1);
    int read_ok = bytes && fread(bytes, 1, (size_t)size, file) == (size_t)size;
    fclose(file);
    if (!read_ok) {
        free(bytes);
        snprintf(error, error_size, "%s: cannot read the file", path);
        return 0;
    }
    char problem[256];
    int ok = npy_parse(bytes, (size_t)size, out, problem, sizeof problem);
    free(bytes);
    if (!ok) snprintf(error, error_size, "%s: %s", path, problem);
    return ok;
}

void npy_free(npy_array *array) {
    free(array->data);
    array->data = NULL;
}

int npy_write(const char *path, const char *descr, uint32_t ndim, const uint64_t *shape,
              const void *data, size_t item_size) {
    char dict[256], shape_text[160] = "";
    uint64_t count = 1;
    for (uint32_t i = 0; i < ndim; ++i) {
        size_t used = strlen(shape_text);
        /* NumPy's spelling: "(a,)" for one dimension, "(a, b)" for more. */
        snprintf(shape_text + used, sizeof shape_text - used, "%s%llu%s", i ? ", " : "",
                 (unsigned long long)shape[i], ndim == 1 ? "," : "");
        count *= shape[i];
    }
    int length =
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                 descr, shape_text);
    size_t total = 10 + (size_t)length + 1;
    size_t padding = (64 - total % 64) % 64;
    FILE *file = fopen(path, "wb");
    if (!file) return 0;
    unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    size_t header_length = (size_t)length + padding + 1;
    preamble[8] = (unsigned char)(header_length & 0xFF);
    preamble[9] = (unsigned char)(header_length >> 8);
    int ok = fwrite(preamble, 1, 10, file) == 10 &&
             fwrite(dict, 1, (size_t)length, file) == (size_t)length;
    for (size_t i = 0; ok && i < padding; ++i) ok = fputc(' ', file) != EOF;
    ok = ok && fputc('\n', file) != EOF;
    ok = ok && (count == 0 || fwrite(data, item_size, count, file) == count);
    ok = (fclose(file) == 0) && ok;
    return ok;
}
