/* A checkpoint's weights as `--weights` names them: one .safetensors file, a
 * model.safetensors.index.json (its weight_map says which shard holds each tensor), the folder
 * that holds them, or one GGUF file (its metadata then stand for config.json). Shards are mapped
 * when a tensor in them is first asked for, so that reading one layer of a model split over many
 * files maps only the shards that layer is in. */
#ifndef MOEVK_MODEL_FILES_H
#define MOEVK_MODEL_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "gguf_splits.h"
#include "safetensors.h"

/* One tensor of the index's weight_map: its name and the number of its shard in `shards`. */
typedef struct model_index_entry {
    char *name;
    uint32_t shard;
} model_index_entry;

/* The index's weight_map, sorted by name (a checkpoint names up to some 100000 tensors). */
typedef struct model_index {
    model_index_entry *entries;
    size_t count;
    char **shards; /* file names, each once, in the order first named */
    size_t shard_count;
} model_index;

/* Parses an index's text (size bytes). Shard names must be plain file names (no folder). On
 * failure returns 0, leaves nothing allocated, and writes one line naming the problem. */
int model_index_parse(const char *text, size_t size, model_index *out, char *error,
                      size_t error_size);
void model_index_free(model_index *index);

typedef struct model_files {
    char folder[4096]; /* where the weights are: config.json is looked for here */
    model_index index; /* empty without an index file */
    char **paths;      /* each shard's path */
    safetensors_file *files;
    int *opened;
    size_t count;
    int is_gguf;      /* paths[0] is a GGUF file (or one of its splits), mapped as gguf */
    gguf_splits gguf; /* gguf.files[0]: the metadata */
} model_files;

/* Opens what weights names (a file, an index or a folder; a GGUF file by its magic). 0 with one
 * line in error on failure (nothing left allocated). */
int model_files_open(const char *weights, model_files *out, char *error, size_t error_size);
/* The tensor of that name, mapping its shard if needed; NULL with the problem in error (not
 * there, in two shards, or its shard unreadable). */
const model_tensor *model_files_find(model_files *files, const char *name, char *error,
                                     size_t error_size);
void model_files_close(model_files *files);
/* The tensor of that name, or NULL, without an error (a GGUF model's optional tensors). */
const model_tensor *model_files_lookup(const model_files *files, const char *name);

#endif
