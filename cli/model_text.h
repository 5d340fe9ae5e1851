/* A small text file (config.json, model.safetensors.index.json) read whole into memory. */
#ifndef MOEVK_MODEL_TEXT_H
#define MOEVK_MODEL_TEXT_H

#include <stddef.h>

/* The file's bytes and a NUL after them (free() them), their count in size; NULL with
 * "path: problem" in error when it cannot be read or passes 64 MiB. */
char *model_text_read(const char *path, size_t *size, char *error, size_t error_size);

#endif
