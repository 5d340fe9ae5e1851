/* A model file mapped read-only into memory, whole: what the safetensors and GGUF readers parse
 * in place (tensors stay in the mapping, nothing is copied). */
#ifndef MOEVK_FILE_MAP_H
#define MOEVK_FILE_MAP_H

#include <stddef.h>

/* Maps path; 0 with "path: problem" in error (a missing, empty or unreadable file). */
int file_map(const char *path, void **mapping, size_t *size, char *error, size_t error_size);
void file_unmap(void *mapping, size_t size);

#endif
