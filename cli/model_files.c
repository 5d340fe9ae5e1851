/* model_files.h: the index's JSON through cJSON, shards mapped by safetensors_open on demand. */
#include "model_files.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fail.h"
#include "model_text.h"

#define INDEX_NAME "model.safetensors.index.json"

static int ends_with(const char *text, const char *end) {
    size_t n = strlen(text), m = strlen(end);
    return n >= m && !strcmp(text + n - m, end);
}

void model_index_free(model_index *index) {
    for (size_t i = 0; i < index->count; ++i) free(index->entries[i].name);
    for (size_t i = 0; i < index->shard_count; ++i) free(index->shards[i]);
    free(index->entries);
    free(index->shards);
    memset(index, 0, sizeof *index);
}

/* The number of a shard in the index, added when first named. */
static int shard_number(model_index *index, const char *file, uint32_t *out) {
    for (size_t i = 0; i < index->shard_count; ++i)
        if (!strcmp(index->shards[i], file)) {
            *out = (uint32_t)i;
            return 1;
        }
    if (!(index->shards[index->shard_count] = strdup(file))) return 0;
    *out = (uint32_t)index->shard_count++;
    return 1;
}

static int by_entry_name(const void *a, const void *b) {
    return strcmp(((const model_index_entry *)a)->name, ((const model_index_entry *)b)->name);
}

static int read_weight_map(const cJSON *map, model_index *out, char *error, size_t error_size) {
    size_t entries = (size_t)cJSON_GetArraySize(map);
    out->entries = calloc(entries + 1, sizeof *out->entries);
    out->shards = calloc(entries + 1, sizeof *out->shards);
    if (!out->entries || !out->shards) return fail(error, error_size, "out of memory");
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !ends_with(e->valuestring, ".safetensors") ||
            strchr(e->valuestring, '/') || strchr(e->valuestring, '\\'))
            return fail(error, error_size,
                        "weight_map: tensor '%.200s' names no plain .safetensors file", e->string);
        model_index_entry *entry = &out->entries[out->count];
        if (!(entry->name = strdup(e->string)) || !shard_number(out, e->valuestring, &entry->shard))
            return fail(error, error_size, "out of memory");
        ++out->count;
    }
    /* Sorted, a name twice sits beside itself, and lookups bisect. */
    qsort(out->entries, out->count, sizeof *out->entries, by_entry_name);
    for (size_t i = 1; i < out->count; ++i)
        if (!strcmp(out->entries[i - 1].name, out->entries[i].name))
            return fail(error, error_size, "weight_map: tensor '%.200s' is named twice",
                        out->entries[i].name);
    return 1;
}

int model_index_parse(const char *text, size_t size, model_index *out, char *error,
                      size_t error_size) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(text, size);
    if (!root) return fail(error, error_size, "not valid JSON");
    const cJSON *map =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    int ok = cJSON_IsObject(map) ? read_weight_map(map, out, error, error_size)
                                 : fail(error, error_size, "no \"weight_map\" object");
    cJSON_Delete(root);
    if (!ok) model_index_free(out);
    return ok;
}

/* Room for count shards' paths and files. */
static int make_shards(model_files *out, size_t count) {
    out->paths = calloc(count + 1, sizeof *out->paths);
    out->files = calloc(count + 1, sizeof *out->files);
    out->opened = calloc(count + 1, sizeof *out->opened);
    return out->paths && out->files && out->opened;
}

static int add_path(model_files *out, const char *folder, const char *name) {
    size_t n = strlen(folder) + strlen(name) + 2;
    char *path = malloc(n);
    if (!path) return 0;
    snprintf(path, n, "%s/%s", folder, name);
    out->paths[out->count++] = path;
    return 1;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A folder without an index: its .safetensors files, in name order. */
static int list_folder(model_files *out, char *error, size_t error_size) {
    DIR *dir = opendir(out->folder);
    if (!dir) return fail(error, error_size, "%s: cannot list the folder", out->folder);
    size_t capacity = 0, count = 0;
    char **names = NULL;
    int ok = 1;
    for (struct dirent *entry; ok && (entry = readdir(dir));) {
        if (!ends_with(entry->d_name, ".safetensors")) continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            char **grown = realloc(names, capacity * sizeof *names);
            if (!grown)
                ok = 0;
            else
                names = grown;
        }
        char *copy = ok ? strdup(entry->d_name) : NULL;
        if (copy)
            names[count++] = copy;
        else
            ok = 0;
    }
    closedir(dir);
    if (ok && count == 0) {
        free(names);
        return fail(error, error_size, "%s: no .safetensors file (nor %s) in the folder",
                    out->folder, INDEX_NAME);
    }
    if (ok) qsort(names, count, sizeof *names, by_name);
    ok = ok && make_shards(out, count);
    for (size_t i = 0; ok && i < count; ++i) ok = add_path(out, out->folder, names[i]);
    for (size_t i = 0; i < count; ++i) free(names[i]);
    free(names);
    return ok || fail(error, error_size, "out of memory");
}

static int open_index(model_files *out, const char *path, char *error, size_t error_size) {
    size_t size = 0;
    char why[512];
    char *text = model_text_read(path, &size, why, sizeof why);
    if (!text) return fail(error, error_size, "%s", why);
    int ok = model_index_parse(text, size, &out->index, why, sizeof why);
    free(text);
    if (!ok) return fail(error, error_size, "%s: %s", path, why);
    ok = make_shards(out, out->index.shard_count);
    for (size_t i = 0; ok && i < out->index.shard_count; ++i)
        ok = add_path(out, out->folder, out->index.shards[i]);
    return ok || fail(error, error_size, "out of memory");
}

static void folder_of(const char *path, char *folder, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(folder, size, ".");
    else
        snprintf(folder, size, "%.*s", (int)(slash - path), path);
    if (!folder[0]) snprintf(folder, size, "/");
}

/* A file whose first bytes are GGUF's magic (whatever its name). */
static int starts_as_gguf(const char *path) {
    unsigned char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(magic, 1, sizeof magic, f) : 0;
    if (f) fclose(f);
    return gguf_is_gguf(magic, got);
}

int model_files_open(const char *weights, model_files *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    struct stat st;
    int ok;
    if (stat(weights, &st) != 0)
        return fail(error, error_size, "%s: no such file or folder", weights);
    if (S_ISDIR(st.st_mode)) {
        snprintf(out->folder, sizeof out->folder, "%s", weights);
        char index[4200];
        snprintf(index, sizeof index, "%s/%s", weights, INDEX_NAME);
        ok = stat(index, &st) == 0 ? open_index(out, index, error, error_size)
                                   : list_folder(out, error, error_size);
    } else if (ends_with(weights, ".json")) {
        folder_of(weights, out->folder, sizeof out->folder);
        ok = open_index(out, weights, error, error_size);
    } else {
        folder_of(weights, out->folder, sizeof out->folder);
        ok = make_shards(out, 1) && (out->paths[0] = strdup(weights)) != NULL;
        if (ok)
            out->count = 1;
        else
            fail(error, error_size, "out of memory");
        if (ok && starts_as_gguf(weights)) {
            ok = gguf_splits_open(weights, &out->gguf, error, error_size);
            out->is_gguf = ok;
        }
    }
    if (!ok) model_files_close(out);
    return ok;
}

/* Shard i, mapped on first use. */
static const safetensors_file *shard(model_files *files, size_t i, char *error, size_t error_size) {
    if (!files->opened[i]) {
        if (!safetensors_open(files->paths[i], &files->files[i], error, error_size)) return NULL;
        files->opened[i] = 1;
    }
    return &files->files[i];
}

const model_tensor *model_files_find(model_files *files, const char *name, char *error,
                                     size_t error_size) {
    if (files->is_gguf) {
        const model_tensor *t = gguf_splits_find(&files->gguf, name);
        if (!t)
            fail(error, error_size, "%s%s: no tensor '%s'", files->paths[0],
                 files->gguf.count > 1 ? " and its splits" : "", name);
        return t;
    }
    const model_index *index = &files->index;
    if (index->entries) {
        model_index_entry key = {(char *)name, 0};
        const model_index_entry *entry =
            bsearch(&key, index->entries, index->count, sizeof key, by_entry_name);
        if (!entry) {
            fail(error, error_size, "the index names no tensor '%s'", name);
            return NULL;
        }
        const safetensors_file *file = shard(files, entry->shard, error, error_size);
        if (!file) return NULL;
        const model_tensor *t = safetensors_find(file, name);
        if (!t)
            fail(error, error_size, "%s: no tensor '%s', which the index places there",
                 files->paths[entry->shard], name);
        return t;
    }
    const model_tensor *found = NULL;
    size_t found_in = 0;
    for (size_t i = 0; i < files->count; ++i) {
        const safetensors_file *file = shard(files, i, error, error_size);
        if (!file) return NULL;
        const model_tensor *t = safetensors_find(file, name);
        if (t && found) {
            fail(error, error_size, "tensor '%s' is in both %s and %s", name,
                 files->paths[found_in], files->paths[i]);
            return NULL;
        }
        if (t) found = t, found_in = i;
    }
    if (!found)
        fail(error, error_size, "%s: no tensor '%s'",
             files->count == 1 ? files->paths[0] : files->folder, name);
    return found;
}

void model_files_close(model_files *files) {
    for (size_t i = 0; i < files->count; ++i) {
        if (files->opened && files->opened[i]) safetensors_close(&files->files[i]);
        free(files->paths[i]);
    }
    free(files->paths);
    free(files->files);
    free(files->opened);
    model_index_free(&files->index);
    if (files->is_gguf) gguf_splits_close(&files->gguf);
    memset(files, 0, sizeof *files);
}

const model_tensor *model_files_lookup(const model_files *files, const char *name) {
    return files->is_gguf ? gguf_splits_find(&files->gguf, name) : NULL;
}
