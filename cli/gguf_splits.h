/* A GGUF model in one file or split over several by llama.cpp's gguf-split: PREFIX-00001-of-
 * 0000N.gguf and so on, each a GGUF file of its own with split.no, split.count and (in the
 * first, which holds the model's metadata) split.tensors.count. Naming any split opens them
 * all; each is checked to belong (its number and count), no tensor is in two, and the tensors
 * add up to split.tensors.count. */
#ifndef MOEVK_GGUF_SPLITS_H
#define MOEVK_GGUF_SPLITS_H

#include <stddef.h>

#include "gguf.h"

typedef struct gguf_splits {
    gguf_file *files; /* in split order: files[0] holds the metadata */
    size_t count;
} gguf_splits;

/* 0 with "path: problem" in error (nothing left open). */
int gguf_splits_open(const char *path, gguf_splits *out, char *error, size_t error_size);
void gguf_splits_close(gguf_splits *splits);
/* The tensor of that name in whichever split holds it, or NULL. */
const model_tensor *gguf_splits_find(const gguf_splits *splits, const char *name);

#endif
