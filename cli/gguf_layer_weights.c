/* layer_weights.h, GGUF's side: llama.cpp's tensor names (gguf-py's constants) under blk.N.:
 * ffn_gate_inp (the router [E, d]), the stacked experts ffn_gate_exps, ffn_up_exps [E, f, d]
 * and ffn_down_exps [E, d, f] (or, in files converted before stacking, ffn_gate.I and so on,
 * one per expert), the shared experts ffn_gate_shexp, ffn_up_shexp [fs, d], ffn_down_shexp
 * [d, fs], Qwen2-MoE's shared gate ffn_gate_inp_shexp [d] and DeepSeek-V3's selection bias
 * exp_probs_b.bias [E]. Each stacked tensor is handed out as E views of one expert each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "layer_weights.h"

typedef struct finder {
    model_files *files;
    const char *prefix;
    char *error;
    size_t error_size;
} finder;

/* prefix + name with the shape given (row-major; ggml's ne is its reverse), in a float type
 * or (blocks: an FFN matrix) one of the block formats moevk computes with. */
static const model_tensor *find_typed(const finder *f, const char *name, uint32_t ndim,
                                      const uint64_t *shape, int blocks) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", f->prefix, name);
    const model_tensor *t = model_files_find(f->files, full, f->error, f->error_size);
    if (!t) return NULL;
    int ok = t->ndim == ndim;
    for (uint32_t i = 0; ok && i < ndim; ++i) ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[128] = "", ne[128] = "";
        for (uint32_t i = 0; i < ndim; ++i) {
            size_t w = strlen(want), n = strlen(ne);
            snprintf(want + w, sizeof want - w, "%s%llu", i ? ", " : "",
                     (unsigned long long)shape[i]);
            snprintf(ne + n, sizeof ne - n, "%s%llu", i ? ", " : "",
                     (unsigned long long)shape[ndim - 1 - i]);
        }
        fail(f->error, f->error_size,
             "tensor '%s' must have shape [%s] (ggml ne [%s]) by the GGUF metadata", full, want,
             ne);
        return NULL;
    }
    int is_float = t->dtype == MODEL_F32 || t->dtype == MODEL_F16 || t->dtype == MODEL_BF16;
    if (t->dtype == MODEL_OTHER || (!blocks && !is_float)) {
        fail(f->error, f->error_size, "tensor '%s' is %s: moevk reads %s", full, t->type_name,
             blocks ? "F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K and Q6_K expert weights"
                    : "F32, F16 and BF16 for it");
        return NULL;
    }
    return t;
}

static const model_tensor *find(const finder *f, const char *name, uint32_t ndim,
                                const uint64_t *shape) {
    return find_typed(f, name, ndim, shape, 1);
}

/* A matrix [rows, cols] (rows 0: a vector [cols], always a float type). */
static const model_tensor *find_matrix(const finder *f, const char *name, uint64_t rows,
                                       uint64_t cols) {
    uint64_t shape[2] = {rows, cols};
    return find_typed(f, name, rows ? 2 : 1, rows ? shape : shape + 1, rows != 0);
}

static const model_tensor *find_float_matrix(const finder *f, const char *name, uint64_t rows,
                                             uint64_t cols) {
    uint64_t shape[2] = {rows, cols};
    return find_typed(f, name, 2, shape, 0);
}

/* One matrix [rows, cols] per expert: E views of the stacked ffn_KIND_exps, or the per-expert
 * tensors ffn_KIND.I of older files. */
static int find_experts_of(const finder *f, const char *kind, uint32_t E, uint64_t rows,
                           uint64_t cols, model_tensor *views, const model_tensor **out) {
    char name[128], legacy[128];
    snprintf(name, sizeof name, "ffn_%s_exps.weight", kind);
    snprintf(legacy, sizeof legacy, "%sffn_%s.0.weight", f->prefix, kind);
    if (!model_files_lookup(f->files, legacy)) {
        uint64_t shape[3] = {E, rows, cols};
        const model_tensor *t = find(f, name, 3, shape);
        if (!t) return 0;
        uint64_t part = t->bytes / E;
        for (uint32_t e = 0; e < E; ++e) {
            views[e] = *t;
            views[e].ndim = 2;
            views[e].shape[0] = rows;
            views[e].shape[1] = cols;
            views[e].count = rows * cols;
            views[e].bytes = part;
            views[e].data = (const unsigned char *)t->data + part * e;
            out[e] = &views[e];
        }
        return 1;
    }
    for (uint32_t e = 0; e < E; ++e) {
        snprintf(name, sizeof name, "ffn_%s.%u.weight", kind, e);
        if (!(out[e] = find_matrix(f, name, rows, cols))) return 0;
    }
    return 1;
}

static int find_shared(const finder *f, const model_config *c, int gated, layer_weights *w) {
    char full[512];
    snprintf(full, sizeof full, "%sffn_up_shexp.weight", f->prefix);
    const model_tensor *up = model_files_lookup(f->files, full);
    uint64_t d = c->hidden_size, fs = c->shared_intermediate_size;
    if (!up) {
        if (fs == 0) return 1;
        return fail(f->error, f->error_size,
                    "%s: no tensor '%s' (the metadata give shared experts)", f->files->paths[0],
                    full);
    }
    if (fs == 0 && c->family == MODEL_QWEN2_MOE && up->ndim == 2) fs = up->shape[0];
    if (fs == 0)
        return fail(f->error, f->error_size, "tensor '%s': the metadata give no shared experts",
                    full);
    if ((gated && !(w->shared_gate = find_matrix(f, "ffn_gate_shexp.weight", fs, d))) ||
        !(w->shared_up = find_matrix(f, "ffn_up_shexp.weight", fs, d)) ||
        !(w->shared_down = find_matrix(f, "ffn_down_shexp.weight", d, fs)))
        return 0;
    w->shared_intermediate_size = (uint32_t)fs;
    if (c->family == MODEL_QWEN2_MOE &&
        !(w->shared_expert_gate = find_matrix(f, "ffn_gate_inp_shexp.weight", 0, d)))
        return 0;
    return 1;
}

int gguf_layer_weights_find(model_files *files, const model_config *c, const char *prefix,
                            int gated, layer_weights *w, char *error, size_t error_size) {
    finder f = {files, prefix, error, error_size};
    uint32_t E = c->num_experts;
    uint64_t d = c->hidden_size, ff = c->intermediate_size;
    char full[512];
    snprintf(full, sizeof full, "%sffn_gate_inp.weight", prefix);
    if (!model_files_lookup(files, full))
        return fail(error, error_size, "%s: no tensor '%s': no MoE block there (a dense layer?)",
                    files->paths[0], full);
    w->views = calloc((size_t)E * 3 + 1, sizeof *w->views);
    w->up = calloc(E, sizeof *w->up);
    w->down = calloc(E, sizeof *w->down);
    w->gate = gated ? calloc(E, sizeof *w->gate) : NULL;
    if (!w->views || !w->up || !w->down || (gated && !w->gate))
        return fail(error, error_size, "out of memory");
    if (!(w->router = find_float_matrix(&f, "ffn_gate_inp.weight", E, d)) ||
        (gated && !find_experts_of(&f, "gate", E, ff, d, w->views, w->gate)) ||
        !find_experts_of(&f, "up", E, ff, d, w->views + E, w->up) ||
        !find_experts_of(&f, "down", E, d, ff, w->views + 2 * (size_t)E, w->down) ||
        !find_shared(&f, c, gated, w))
        return 0;
    snprintf(full, sizeof full, "%sexp_probs_b.bias", prefix);
    if (c->family == MODEL_DEEPSEEK_V3 && model_files_lookup(files, full)) {
        if (!c->sigmoid)
            return fail(error, error_size,
                        "tensor '%s': a selection bias with softmax routing is not read", full);
        if (!(w->score_bias = find_matrix(&f, "exp_probs_b.bias", 0, E))) return 0;
    }
    return 1;
}
