/* Reading safetensors model files: an 8-byte little-endian header length, a JSON header naming
 * each tensor's dtype, shape and data_offsets, then the data. The file is memory-mapped and
 * every tensor checked before any is used: dtype F32, F16 or BF16, shape and byte range
 * consistent, the range inside the data, no two tensors overlapping, no name twice. A bad file
 * gets a one-line error naming the tensor and the problem. */
#ifndef MOEVK_SAFETENSORS_H
#define MOEVK_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model_tensor.h"

typedef struct safetensors_file {
    void *mapping; /* the whole file, read-only */
    size_t size;
    model_tensor *tensors; /* in the header's order */
    size_t count;
} safetensors_file;

/* Parses a file held in memory (bytes, size; not copied: the tensors point into it). On failure
 * returns 0, leaves nothing allocated, and writes a message to error (not naming the file). */
int safetensors_parse(const void *bytes, size_t size, safetensors_file *out, char *error,
                      size_t error_size);
/* Maps path and parses it; on failure returns 0 and writes "path: problem" to error. */
int safetensors_open(const char *path, safetensors_file *out, char *error, size_t error_size);
/* The tensor of that name, or NULL. */
const model_tensor *safetensors_find(const safetensors_file *file, const char *name);
/* Frees what parse or open made (and unmaps what open mapped). */
void safetensors_close(safetensors_file *file);

#endif
