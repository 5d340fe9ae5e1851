/* model_text.h */
#include "model_text.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_TEXT_BYTES (64u << 20)

char *model_text_read(const char *path, size_t *size, char *error, size_t error_size) {
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "%s: cannot open it", path);
        return NULL;
    }
    char *text = NULL;
    size_t used = 0, capacity = 0;
    int too_big = 0;
    for (;;) {
        if (used == capacity) {
            capacity = capacity ? 2 * capacity : 4096;
            char *grown = capacity <= 2 * MAX_TEXT_BYTES ? realloc(text, capacity + 1) : NULL;
            if (!grown) {
                too_big = 1;
                break;
            }
            text = grown;
        }
        size_t got = fread(text + used, 1, capacity - used, file);
        used += got;
        if (got == 0) break;
    }
    int failed = ferror(file) || too_big || used > MAX_TEXT_BYTES || !text;
    fclose(file);
    if (failed) {
        snprintf(error, error_size, "%s: cannot read it (unreadable, or past %u MiB)", path,
                 MAX_TEXT_BYTES >> 20);
        free(text);
        return NULL;
    }
    text[used] = '\0';
    *size = used;
    return text;
}
