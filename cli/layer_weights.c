/* layer_weights.h: the families' tensor names, as their Hugging Face modelling code names them. */
#include "layer_weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "moevk_reference.h"

/* What each family calls its experts' matrices and its shared experts. */
typedef struct family_names {
    const char *gate, *up, *down; /* after "experts.I." */
    const char *first;            /* the up projection of an expert that is not gated */
    const char *shared;           /* the shared experts' module, NULL: none */
} family_names;

static family_names names_of(model_family family) {
    switch (family) {
    case MODEL_MIXTRAL: return (family_names){"w1", "w3", "w2", "w1", NULL};
    case MODEL_QWEN2_MOE:
        return (family_names){"gate_proj", "up_proj", "down_proj", "up_proj", "shared_expert"};
    case MODEL_QWEN3_MOE:
        return (family_names){"gate_proj", "up_proj", "down_proj", "up_proj", NULL};
    case MODEL_DEEPSEEK_V3:
        return (family_names){"gate_proj", "up_proj", "down_proj", "up_proj", "shared_experts"};
    }
    return (family_names){0};
}

void layer_weights_prefix(const model_files *files, const model_config *config, uint32_t layer,
                          char *prefix, size_t size) {
    if (files->is_gguf) {
        snprintf(prefix, size, "blk.%u.", layer);
        return;
    }
    snprintf(prefix, size, "model.layers.%u.%s", layer,
             config->family == MODEL_MIXTRAL ? "block_sparse_moe." : "mlp.");
}

static moevk_dtype dtype_of(const model_tensor *t) {
    switch (t->dtype) {
    case MODEL_F16: return MOEVK_DTYPE_F16;
    case MODEL_BF16: return MOEVK_DTYPE_BF16;
    case MODEL_Q8_0: return MOEVK_DTYPE_Q8_0;
    case MODEL_Q4_0: return MOEVK_DTYPE_Q4_0;
    case MODEL_Q4_K: return MOEVK_DTYPE_Q4_K;
    case MODEL_Q6_K: return MOEVK_DTYPE_Q6_K;
    case MODEL_Q5_0: return MOEVK_DTYPE_Q5_0;
    case MODEL_Q5_K: return MOEVK_DTYPE_Q5_K;
    default: return MOEVK_DTYPE_F32;
    }
}

typedef struct finder {
    model_files *files;
    const char *prefix;
    char *error;
    size_t error_size;
} finder;

/* prefix + name, which must have the shape [rows, cols] (rows 0: a vector [cols]). */
static const model_tensor *find(const finder *f, const char *name, uint64_t rows, uint64_t cols) {
    char full[1024];
    snprintf(full, sizeof full, "%s%s", f->prefix, name);
    const model_tensor *t = model_files_find(f->files, full, f->error, f->error_size);
    if (!t) return NULL;
    int ok = rows ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols
                  : t->ndim == 1 && t->shape[0] == cols;
    if (ok) return t;
    if (rows)
        fail(f->error, f->error_size, "tensor '%s' must have shape [%llu, %llu] (config.json)",
             full, (unsigned long long)rows, (unsigned long long)cols);
    else
        fail(f->error, f->error_size, "tensor '%s' must have shape [%llu] (config.json)", full,
             (unsigned long long)cols);
    return NULL;
}

/* Each expert's matrices. */
static int find_experts(const finder *f, const model_config *c, int gated, layer_weights *w) {
    family_names names = names_of(c->family);
    uint32_t E = c->num_experts, d = c->hidden_size, ff = c->intermediate_size;
    w->up = calloc(E, sizeof *w->up);
    w->down = calloc(E, sizeof *w->down);
    w->gate = gated ? calloc(E, sizeof *w->gate) : NULL;
    if (!w->up || !w->down || (gated && !w->gate))
        return fail(f->error, f->error_size, "out of memory");
    char name[256];
    for (uint32_t e = 0; e < E; ++e) {
        if (gated) {
            snprintf(name, sizeof name, "experts.%u.%s.weight", e, names.gate);
            if (!(w->gate[e] = find(f, name, ff, d))) return 0;
        }
        snprintf(name, sizeof name, "experts.%u.%s.weight", e, gated ? names.up : names.first);
        if (!(w->up[e] = find(f, name, ff, d))) return 0;
        snprintf(name, sizeof name, "experts.%u.%s.weight", e, names.down);
        if (!(w->down[e] = find(f, name, d, ff))) return 0;
    }
    return 1;
}

static int find_shared(const finder *f, const model_config *c, int gated, layer_weights *w) {
    family_names names = names_of(c->family);
    uint32_t d = c->hidden_size, fs = c->shared_intermediate_size;
    if (!names.shared || fs == 0) return 1;
    char name[256];
    if (gated) {
        snprintf(name, sizeof name, "%s.gate_proj.weight", names.shared);
        if (!(w->shared_gate = find(f, name, fs, d))) return 0;
    }
    snprintf(name, sizeof name, "%s.up_proj.weight", names.shared);
    if (!(w->shared_up = find(f, name, fs, d))) return 0;
    snprintf(name, sizeof name, "%s.down_proj.weight", names.shared);
    if (!(w->shared_down = find(f, name, d, fs))) return 0;
    if (c->shared_gate && !(w->shared_expert_gate = find(f, "shared_expert_gate.weight", 1, d)))
        return 0;
    return 1;
}

/* The FFN tensors' types: gate's and up's one type, down's another (Q4_K_M files keep down in
 * Q6_K or Q8_0), or, where either is mixed, F32 for all: every type widens to it exactly. */
static void common_types(layer_weights *w, uint32_t E) {
    moevk_dtype type = dtype_of(w->up[0]), down = dtype_of(w->down[0]);
    int same = 1;
    for (uint32_t e = 0; e < E; ++e) {
        same &= dtype_of(w->up[e]) == type && dtype_of(w->down[e]) == down;
        if (w->gate) same &= dtype_of(w->gate[e]) == type;
    }
    if (w->shared_gate) same &= dtype_of(w->shared_gate) == type;
    if (w->shared_up) same &= dtype_of(w->shared_up) == type && dtype_of(w->shared_down) == down;
    w->weight_type = same ? type : MOEVK_DTYPE_F32;
    w->down_type = same ? down : MOEVK_DTYPE_F32;
}

int layer_weights_find(model_files *files, const model_config *config, const char *prefix,
                       int gated, layer_weights *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    if (files->is_gguf) {
        int ok = gguf_layer_weights_find(files, config, prefix, gated, out, error, error_size);
        if (ok)
            common_types(out, config->num_experts);
        else
            layer_weights_free(out);
        return ok;
    }
    finder f = {files, prefix, error, error_size};
    int ok = (out->router = find(&f, "gate.weight", config->num_experts, config->hidden_size)) &&
             find_experts(&f, config, gated, out) && find_shared(&f, config, gated, out);
    if (ok && config->family == MODEL_DEEPSEEK_V3)
        ok = (out->score_bias = find(&f, "gate.e_score_correction_bias", 0, config->num_experts)) !=
             NULL;
    if (ok) {
        common_types(out, config->num_experts);
        out->shared_intermediate_size = out->shared_up ? config->shared_intermediate_size : 0;
    } else {
        layer_weights_free(out);
    }
    return ok;
}

/* A tensor's elements in type `to` (its own, or widened to f32): data points into the mapping
 * or at *copy (free() it). NULL when out of memory. */
static const void *as_type(const model_tensor *t, moevk_dtype to, void **copy) {
    *copy = NULL;
    moevk_dtype from = dtype_of(t);
    if (from == to) return t->data;
    float *wide = malloc((size_t)t->count * sizeof *wide + 1);
    if (!wide) return NULL;
    for (uint64_t i = 0; i < t->count; ++i) wide[i] = ref_load(t->data, i, from); /* to is F32 */
    *copy = wide;
    return wide;
}

const float *layer_tensor_f32(const model_tensor *tensor, void **copy) {
    return as_type(tensor, MOEVK_DTYPE_F32, copy);
}

static moevk_result upload(layer_weights_setter set, void *target, moevk_layer_weight which,
                           uint32_t first, const model_tensor *t, moevk_dtype type) {
    void *copy;
    const void *data = as_type(t, type, &copy);
    if (!data) return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    moevk_result r = set(target, which, first, 1, moevk_host_tensor(data));
    free(copy);
    return r;
}

moevk_result layer_weights_upload_to(const layer_weights *w, const model_config *config,
                                     layer_weights_setter set, void *target, uint32_t first_expert,
                                     uint32_t expert_count) {
    moevk_dtype type = w->weight_type;
    moevk_result r = upload(set, target, MOEVK_WEIGHT_ROUTER, 0, w->router, MOEVK_DTYPE_F32);
    uint32_t end = first_expert + expert_count;
    for (uint32_t e = first_expert; r == MOEVK_SUCCESS && e < end && e < config->num_experts; ++e) {
        if (w->gate) r = upload(set, target, MOEVK_WEIGHT_GATE, e, w->gate[e], type);
        if (r == MOEVK_SUCCESS) r = upload(set, target, MOEVK_WEIGHT_UP, e, w->up[e], type);
        if (r == MOEVK_SUCCESS)
            r = upload(set, target, MOEVK_WEIGHT_DOWN, e, w->down[e], w->down_type);
    }
    const struct {
        moevk_layer_weight which;
        const model_tensor *tensor;
        moevk_dtype type;
    } shared[] = {{MOEVK_WEIGHT_SHARED_GATE, w->shared_gate, type},
                  {MOEVK_WEIGHT_SHARED_UP, w->shared_up, type},
                  {MOEVK_WEIGHT_SHARED_DOWN, w->shared_down, w->down_type},
                  {MOEVK_WEIGHT_SHARED_EXPERT_GATE, w->shared_expert_gate, MOEVK_DTYPE_F32}};
    for (size_t i = 0; i < sizeof shared / sizeof shared[0] && r == MOEVK_SUCCESS; ++i)
        if (shared[i].tensor)
            r = upload(set, target, shared[i].which, 0, shared[i].tensor, shared[i].type);
    return r;
}

static moevk_result set_layer_weights(void *layer, moevk_layer_weight which, uint32_t first,
                                      uint32_t count, moevk_tensor source) {
    return moevk_layer_set_weights(layer, which, first, count, source);
}

moevk_result layer_weights_upload(const layer_weights *w, const model_config *config,
                                  moevk_layer *layer) {
    return layer_weights_upload_to(w, config, set_layer_weights, layer, 0, config->num_experts);
}

void layer_weights_free(layer_weights *weights) {
    free(weights->gate);
    free(weights->up);
    free(weights->down);
    free(weights->views);
    memset(weights, 0, sizeof *weights);
}
