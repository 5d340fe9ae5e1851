/* Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0, little-endian,
 * C order), with a one-line error naming the problem; no allocation beyond the data itself,
 * which is checked against the file's real size before it is allocated. */
#ifndef MOEVK_NPY_H
#define MOEVK_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

typedef enum npy_type { NPY_F32, NPY_F16, NPY_BF16, NPY_I32, NPY_U32, NPY_F64, NPY_OTHER } npy_type;

typedef struct npy_array {
    npy_type type;
    char descr[16];
    uint32_t ndim;
    uint64_t shape[NPY_MAX_DIMS];
    uint64_t count; /* elements */
    size_t item_size;
    void *data; /* malloc'd; free with npy_free */
} npy_array;

/* Parses an .npy held in memory (bytes, size). On failure returns 0 and writes a message to
 * error (not naming the file). data is copied into a new allocation. */
int npy_parse(const unsigned char *bytes, size_t size, npy_array *out, char *error,
              size_t error_size);
/* Reads path; on failure returns 0 and writes "path: problem" to error. */
int npy_read(const char *path, npy_array *out, char *error, size_t error_size);
void npy_free(npy_array *array);
/* Writes a C-order little-endian array; descr e.g. "<f4", "<i4", "<u2". Returns 0 on failure. */
int npy_write(const char *path, const char *descr, uint32_t ndim, const uint64_t *shape,
              const void *data, size_t item_size);

#endif
