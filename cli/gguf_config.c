/* gguf_config.h: each key read by its architecture's name, checked for type and range. */
#include "gguf_config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fail.h"
#include "moevk.h"

typedef struct reader {
    const gguf_file *file;
    const char *arch;
    char *error;
    size_t error_size;
} reader;

static const gguf_kv *find(const reader *r, const char *key, char *full, size_t size) {
    snprintf(full, size, "%s.%s", r->arch, key);
    return gguf_find_key(r->file, full);
}

/* ARCH.key, a whole number in [low, high]; absent: fallback, or an error when required. */
static int read_count(const reader *r, const char *key, uint32_t low, uint32_t high, int required,
                      uint32_t fallback, uint32_t *out) {
    char full[128];
    const gguf_kv *kv = find(r, key, full, sizeof full);
    uint64_t value;
    if (!kv) {
        if (required) return fail(r->error, r->error_size, "GGUF metadata: no %s", full);
        *out = fallback;
        return 1;
    }
    if (kv->type == GGUF_ARRAY)
        return fail(r->error, r->error_size,
                    "GGUF metadata: %s is an array (one value per layer is not read)", full);
    if (!gguf_kv_uint(kv, &value) || value < low || value > high)
        return fail(r->error, r->error_size,
                    "GGUF metadata: %s must be a whole number from %u to %u", full, low, high);
    *out = (uint32_t)value;
    return 1;
}

static int read_flag(const reader *r, const char *key, int fallback, int *out) {
    char full[128];
    const gguf_kv *kv = find(r, key, full, sizeof full);
    if (!kv) {
        *out = fallback;
        return 1;
    }
    return gguf_kv_bool(kv, out) ||
           fail(r->error, r->error_size, "GGUF metadata: %s must be a bool", full);
}

static int read_scale(const reader *r, const char *key, float *out) {
    char full[128];
    const gguf_kv *kv = find(r, key, full, sizeof full);
    double value = 1.0;
    if (kv && (!gguf_kv_float(kv, &value) || !isfinite(value) || value <= 0 || value > 1e30))
        return fail(r->error, r->error_size, "GGUF metadata: %s must be a positive number", full);
    *out = (float)value;
    return 1;
}

static const struct {
    const char *arch;
    model_family family;
    int renormalize; /* without expert_weights_norm: what llama.cpp's graph for it does */
} ARCHITECTURES[] = {{"llama", MODEL_MIXTRAL, 1},
                     {"qwen2moe", MODEL_QWEN2_MOE, 0},
                     {"qwen3moe", MODEL_QWEN3_MOE, 1},
                     {"deepseek2", MODEL_DEEPSEEK_V3, 0}};

/* The experts' routing: softmax or (deepseek2) sigmoid, renormalised, scaled, in groups. */
static int read_routing(const reader *r, model_config *c, int renormalize) {
    uint32_t gating = 1;
    c->routed_scaling_factor = 1.0f;
    if (!read_flag(r, "expert_weights_norm", renormalize, &c->renormalize) ||
        !read_count(r, "expert_gating_func", 1, 2, 0, 1, &gating))
        return 0;
    c->sigmoid = gating == 2;
    if (c->family != MODEL_DEEPSEEK_V3) {
        if (c->sigmoid)
            return fail(r->error, r->error_size,
                        "GGUF metadata: %s.expert_gating_func 2 (sigmoid) is read for deepseek2 "
                        "only",
                        r->arch);
        return 1;
    }
    uint32_t shared_experts = 0;
    if (!read_scale(r, "expert_weights_scale", &c->routed_scaling_factor) ||
        !read_count(r, "expert_shared_count", 0, 64, 0, 0, &shared_experts) ||
        !read_count(r, "expert_group_count", 0, 32, 0, 0, &c->num_groups) ||
        !read_count(r, "expert_group_used_count", 0, 32, 0, 0, &c->topk_groups) ||
        !read_count(r, "leading_dense_block_count", 0, 1u << 16, 0, 0, &c->first_k_dense))
        return 0;
    if ((uint64_t)shared_experts * c->intermediate_size > (1u << 24))
        return fail(r->error, r->error_size, "GGUF metadata: the shared experts are too wide");
    c->shared_intermediate_size = shared_experts * c->intermediate_size;
    if (c->num_groups <= 1) c->num_groups = c->topk_groups = 0; /* one group: no limit */
    if (c->num_groups == 0) return 1;
    if (!c->sigmoid)
        return fail(r->error, r->error_size,
                    "GGUF metadata: softmax routing in %u groups (DeepSeek-V2's group-limited "
                    "greedy, ranking groups by their best score) is not offered: moevk ranks "
                    "groups as DeepSeek-V3 does",
                    c->num_groups);
    if (c->num_experts % c->num_groups || c->topk_groups == 0 || c->topk_groups > c->num_groups)
        return fail(r->error, r->error_size,
                    "GGUF metadata: %u experts in %u groups keeping %u: the groups must divide "
                    "the experts and keep 1 to %u",
                    c->num_experts, c->num_groups, c->topk_groups, c->num_groups);
    return 1;
}

int gguf_model_config(const gguf_file *file, model_config *c, char *error, size_t error_size) {
    memset(c, 0, sizeof *c);
    char arch[64];
    const gguf_kv *kv = gguf_find_key(file, "general.architecture");
    if (!kv || !gguf_kv_string(kv, arch, sizeof arch))
        return fail(error, error_size, "GGUF metadata: no general.architecture string");
    size_t a = 0, count = sizeof ARCHITECTURES / sizeof ARCHITECTURES[0];
    while (a < count && strcmp(arch, ARCHITECTURES[a].arch) != 0) ++a;
    if (a == count)
        return fail(error, error_size,
                    "GGUF metadata: architecture '%s' (moevk reads llama, qwen2moe, qwen3moe and "
                    "deepseek2)",
                    arch);
    reader r = {file, ARCHITECTURES[a].arch, error, error_size};
    c->family = ARCHITECTURES[a].family;
    c->model_type = ARCHITECTURES[a].arch;
    const char *width =
        c->family == MODEL_MIXTRAL ? "feed_forward_length" : "expert_feed_forward_length";
    uint32_t experts = 0;
    if (!read_count(&r, "expert_count", 0, MOEVK_MAX_EXPERTS, c->family != MODEL_MIXTRAL, 0,
                    &experts))
        return 0;
    if (experts == 0)
        return fail(error, error_size,
                    "GGUF metadata: %s.expert_count is 0 or absent: not an MoE model", arch);
    c->num_experts = experts;
    if (!read_count(&r, "embedding_length", 1, 1u << 20, 1, 0, &c->hidden_size) ||
        !read_count(&r, "block_count", 1, 1u << 16, 1, 0, &c->num_layers) ||
        !read_count(&r, "expert_used_count", 1, MOEVK_MAX_TOP_K, 1, 0, &c->top_k) ||
        !read_count(&r, width, 1, 1u << 24, 1, 0, &c->intermediate_size))
        return 0;
    if (c->top_k > c->num_experts)
        return fail(error, error_size,
                    "GGUF metadata: %s.expert_used_count %u is more than the %u "
                    "experts",
                    arch, c->top_k, c->num_experts);
    if (c->family == MODEL_QWEN2_MOE) {
        if (!read_count(&r, "expert_shared_feed_forward_length", 0, 1u << 24, 0, 0,
                        &c->shared_intermediate_size))
            return 0;
        c->shared_gate = 1; /* Qwen2-MoE's shared expert always has its gate */
    }
    snprintf(c->hidden_act, sizeof c->hidden_act, "silu"); /* every family here: SwiGLU */
    c->gated = 1;
    c->moe_layer_freq = 1;
    c->decoder_sparse_step = 1;
    return read_routing(&r, c, ARCHITECTURES[a].renormalize);
}
