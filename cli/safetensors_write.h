/* Writing f32 tensors as a safetensors file (what `moevk layer --grad-output` writes the
 * gradients in): the 8-byte little-endian header length, the JSON header (each tensor's dtype,
 * shape and data_offsets; padded with spaces to a multiple of 8 bytes, as Hugging Face's writer
 * pads it), then the data in the header's order. */
#ifndef MOEVK_SAFETENSORS_WRITE_H
#define MOEVK_SAFETENSORS_WRITE_H

#include <stddef.h>
#include <stdint.h>

typedef struct safetensors_entry {
    const char *name;
    uint32_t ndim;
    uint64_t shape[4];
    const float *data; /* the product of shape's extents */
} safetensors_entry;

/* 1 on success; 0 with a line in error (the file may be left part-written). */
int safetensors_write(const char *path, const safetensors_entry *entries, size_t count, char *error,
                      size_t error_size);

#endif
