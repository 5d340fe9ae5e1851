/* safetensors_write.h: the header through cJSON, the data as it is (f32, little-endian). */
#include "safetensors_write.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"

static uint64_t elements_of(const safetensors_entry *e) {
    uint64_t n = 1;
    for (uint32_t i = 0; i < e->ndim; ++i) n *= e->shape[i];
    return n;
}

/* The header's JSON text (malloc'd), or NULL when out of memory. */
static char *header_text(const safetensors_entry *entries, size_t count) {
    cJSON *root = cJSON_CreateObject();
    uint64_t offset = 0;
    for (size_t i = 0; root && i < count; ++i) {
        cJSON *tensor = cJSON_AddObjectToObject(root, entries[i].name);
        cJSON *shape = tensor ? cJSON_AddArrayToObject(tensor, "shape") : NULL;
        cJSON *offsets = tensor ? cJSON_AddArrayToObject(tensor, "data_offsets") : NULL;
        if (!shape || !offsets || !cJSON_AddStringToObject(tensor, "dtype", "F32")) {
            cJSON_Delete(root);
            return NULL;
        }
        for (uint32_t d = 0; d < entries[i].ndim; ++d)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)entries[i].shape[d]));
        uint64_t end = offset + elements_of(&entries[i]) * 4;
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)end));
        offset = end;
    }
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

int safetensors_write(const char *path, const safetensors_entry *entries, size_t count, char *error,
                      size_t error_size) {
    char *text = header_text(entries, count);
    if (!text) return fail(error, error_size, "%s: out of host memory", path);
    size_t length = strlen(text), padded = (length + 7) / 8 * 8;
    FILE *file = fopen(path, "wb");
    if (!file) {
        free(text);
        return fail(error, error_size, "%s: cannot write", path);
    }
    unsigned char size_bytes[8];
    for (int i = 0; i < 8; ++i) size_bytes[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(size_bytes, 1, 8, file) == 8 && fwrite(text, 1, length, file) == length;
    for (size_t i = length; ok && i < padded; ++i) ok = fputc(' ', file) != EOF;
    for (size_t i = 0; ok && i < count; ++i) {
        uint64_t n = elements_of(&entries[i]);
        ok = fwrite(entries[i].data, 4, n, file) ==
             n; /* the hosts moevk runs on are little-endian */
    }
    ok = fclose(file) == 0 && ok;
    free(text);
    return ok ? 1 : fail(error, error_size, "%s: cannot write", path);
}
