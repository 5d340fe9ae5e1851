/* model_config.h: config.json through Debian's cJSON. Absent keys take the defaults of the
 * family's Hugging Face configuration class; present ones must have the right type and range. */
#include "model_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "model_text.h"
#include "moevk.h"

typedef struct reader {
    const cJSON *root;
    char *error;
    size_t error_size;
} reader;

/* A whole-number key in [low, high]; absent: fallback, or an error when required. */
static int read_count(const reader *r, const char *key, uint32_t low, uint32_t high, int required,
                      uint32_t fallback, uint32_t *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!item || cJSON_IsNull(item)) {
        if (required) return fail(r->error, r->error_size, "config.json: no \"%s\"", key);
        *out = fallback;
        return 1;
    }
    double value = cJSON_IsNumber(item) ? item->valuedouble : -1.0;
    if (!cJSON_IsNumber(item) || floor(value) != value || value < low || value > high)
        return fail(r->error, r->error_size,
                    "config.json: \"%s\" must be a whole number from %u to %u", key, low, high);
    *out = (uint32_t)value;
    return 1;
}

static int read_flag(const reader *r, const char *key, int fallback, int *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!item || cJSON_IsNull(item)) {
        *out = fallback;
        return 1;
    }
    if (!cJSON_IsBool(item))
        return fail(r->error, r->error_size, "config.json: \"%s\" must be true or false", key);
    *out = cJSON_IsTrue(item);
    return 1;
}

static int read_number(const reader *r, const char *key, float fallback, float *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!item || cJSON_IsNull(item)) {
        *out = fallback;
        return 1;
    }
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) || item->valuedouble <= 0 ||
        item->valuedouble > 1e30)
        return fail(r->error, r->error_size, "config.json: \"%s\" must be a positive number", key);
    *out = (float)item->valuedouble;
    return 1;
}

/* A string key copied into text (size bytes); absent: fallback. */
static int read_text(const reader *r, const char *key, const char *fallback, char *text,
                     size_t size) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->root, key);
    const char *value = fallback;
    if (item && !cJSON_IsNull(item)) {
        if (!cJSON_IsString(item) || strlen(item->valuestring) >= size)
            return fail(r->error, r->error_size, "config.json: \"%s\" must be a short string", key);
        value = item->valuestring;
    }
    snprintf(text, size, "%s", value);
    return 1;
}

/* Qwen's mlp_only_layers: a list of layer numbers. */
static int read_dense_layers(const reader *r, model_config *c) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r->root, "mlp_only_layers");
    if (!list || cJSON_IsNull(list)) return 1;
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) > MODEL_MAX_DENSE_LAYERS)
        return fail(r->error, r->error_size,
                    "config.json: \"mlp_only_layers\" must be a list of at most %d layers",
                    MODEL_MAX_DENSE_LAYERS);
    for (const cJSON *item = list->child; item; item = item->next) {
        double value = cJSON_IsNumber(item) ? item->valuedouble : -1.0;
        if (!cJSON_IsNumber(item) || floor(value) != value || value < 0 || value > UINT32_MAX)
            return fail(r->error, r->error_size,
                        "config.json: \"mlp_only_layers\" holds something not a layer number");
        c->dense_layers[c->dense_layer_count++] = (uint32_t)value;
    }
    return 1;
}

static const struct {
    const char *name;
    model_family family;
} FAMILIES[] = {{"mixtral", MODEL_MIXTRAL},
                {"qwen2_moe", MODEL_QWEN2_MOE},
                {"qwen3_moe", MODEL_QWEN3_MOE},
                {"deepseek_v3", MODEL_DEEPSEEK_V3}};

/* The routed experts: how many, k, their width, and how their weights are formed. */
static int read_experts(const reader *r, model_config *c) {
    static const char *const EXPERT_COUNT[] = {"num_local_experts", "num_experts", "num_experts",
                                               "n_routed_experts"};
    static const char *const WIDTH[] = {"intermediate_size", "moe_intermediate_size",
                                        "moe_intermediate_size", "moe_intermediate_size"};
    if (!read_count(r, "hidden_size", 1, 1u << 20, 1, 0, &c->hidden_size) ||
        !read_count(r, "num_hidden_layers", 1, 1u << 16, 1, 0, &c->num_layers) ||
        !read_count(r, EXPERT_COUNT[c->family], 1, MOEVK_MAX_EXPERTS, 1, 0, &c->num_experts) ||
        !read_count(r, "num_experts_per_tok", 1, MOEVK_MAX_TOP_K, 1, 0, &c->top_k) ||
        !read_count(r, WIDTH[c->family], 1, 1u << 24, 1, 0, &c->intermediate_size))
        return 0;
    if (c->top_k > c->num_experts)
        return fail(r->error, r->error_size,
                    "config.json: \"num_experts_per_tok\" %u is more than the %u experts", c->top_k,
                    c->num_experts);
    if (!read_text(r, "hidden_act", "silu", c->hidden_act, sizeof c->hidden_act)) return 0;
    c->gated = !strcmp(c->hidden_act, "silu") || !strcmp(c->hidden_act, "swish");
    return 1;
}

/* Each family's routing and shared experts, by its own configuration class's keys. */
static int read_routing(const reader *r, model_config *c) {
    c->routed_scaling_factor = 1.0f;
    c->decoder_sparse_step = 1;
    c->moe_layer_freq = 1;
    switch (c->family) {
    case MODEL_MIXTRAL: c->renormalize = 1; return 1; /* no norm_topk_prob: always */
    case MODEL_QWEN2_MOE:
        if (!read_count(r, "shared_expert_intermediate_size", 0, 1u << 24, 0, 0,
                        &c->shared_intermediate_size))
            return 0;
        c->shared_gate = c->shared_intermediate_size > 0; /* the rest as Qwen3's */
        /* fall through */
    case MODEL_QWEN3_MOE:
        return read_flag(r, "norm_topk_prob", 0, &c->renormalize) &&
               read_count(r, "decoder_sparse_step", 1, 1u << 16, 0, 1, &c->decoder_sparse_step) &&
               read_dense_layers(r, c);
    case MODEL_DEEPSEEK_V3: break;
    }
    uint32_t shared_experts = 0;
    char scoring[16];
    if (!read_count(r, "n_shared_experts", 0, 64, 0, 1, &shared_experts) ||
        !read_flag(r, "norm_topk_prob", 1, &c->renormalize) ||
        !read_text(r, "scoring_func", "sigmoid", scoring, sizeof scoring) ||
        !read_count(r, "n_group", 1, 32, 0, 8, &c->num_groups) ||
        !read_count(r, "topk_group", 1, 32, 0, 4, &c->topk_groups) ||
        !read_number(r, "routed_scaling_factor", 2.5f, &c->routed_scaling_factor) ||
        !read_count(r, "first_k_dense_replace", 0, 1u << 16, 0, 3, &c->first_k_dense) ||
        !read_count(r, "moe_layer_freq", 1, 1u << 16, 0, 1, &c->moe_layer_freq))
        return 0;
    if (strcmp(scoring, "sigmoid") != 0 && strcmp(scoring, "softmax") != 0)
        return fail(r->error, r->error_size,
                    "config.json: \"scoring_func\" '%s' (sigmoid or softmax are read)", scoring);
    c->sigmoid = !strcmp(scoring, "sigmoid");
    if ((uint64_t)shared_experts * c->intermediate_size > (1u << 24))
        return fail(r->error, r->error_size, "config.json: the shared experts are too wide");
    c->shared_intermediate_size = shared_experts * c->intermediate_size;
    if (c->num_groups == 1) c->num_groups = c->topk_groups = 0; /* one group: no limit */
    return 1;
}

int model_config_parse(const char *text, size_t size, model_config *out, char *error,
                       size_t error_size) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(text, size);
    if (!root) return fail(error, error_size, "config.json: not valid JSON");
    reader r = {root, error, error_size};
    int ok = cJSON_IsObject(root) || fail(error, error_size, "config.json: not a JSON object");
    const cJSON *type = ok ? cJSON_GetObjectItemCaseSensitive(root, "model_type") : NULL;
    if (ok && !cJSON_IsString(type)) ok = fail(error, error_size, "config.json: no \"model_type\"");
    size_t family = 0, families = sizeof FAMILIES / sizeof FAMILIES[0];
    while (ok && family < families && strcmp(type->valuestring, FAMILIES[family].name) != 0)
        ++family;
    if (ok && family == families)
        ok = fail(error, error_size,
                  "config.json: model_type '%.40s' (moevk reads mixtral, qwen2_moe, qwen3_moe and "
                  "deepseek_v3)",
                  type->valuestring);
    if (ok) {
        out->family = FAMILIES[family].family;
        out->model_type = FAMILIES[family].name;
        ok = read_experts(&r, out) && read_routing(&r, out);
    }
    cJSON_Delete(root);
    return ok;
}

int model_config_read(const char *path, model_config *out, char *error, size_t error_size) {
    size_t size = 0;
    char why[400];
    char *text = model_text_read(path, &size, why, sizeof why);
    if (!text) return fail(error, error_size, "%s", why);
    int ok = model_config_parse(text, size, out, why, sizeof why);
    free(text);
    return ok || fail(error, error_size, "%s: %s", path, why);
}

int model_config_moe_layer(const model_config *c, uint32_t layer, char *why, size_t why_size) {
    if (layer >= c->num_layers)
        return fail(why, why_size, "layer %u: the model has %u layers (0 to %u)", layer,
                    c->num_layers, c->num_layers - 1);
    if (c->family == MODEL_DEEPSEEK_V3 &&
        (layer < c->first_k_dense || layer % c->moe_layer_freq != 0))
        return fail(why, why_size,
                    "layer %u is a dense layer (first_k_dense_replace %u, moe_layer_freq %u)",
                    layer, c->first_k_dense, c->moe_layer_freq);
    if (c->family == MODEL_QWEN2_MOE || c->family == MODEL_QWEN3_MOE) {
        for (uint32_t i = 0; i < c->dense_layer_count; ++i)
            if (c->dense_layers[i] == layer)
                return fail(why, why_size, "layer %u is a dense layer (in mlp_only_layers)", layer);
        if ((layer + 1) % c->decoder_sparse_step != 0)
            return fail(why, why_size, "layer %u is a dense layer (decoder_sparse_step %u)", layer,
                        c->decoder_sparse_step);
    }
    return 1;
}
