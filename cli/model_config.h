/* A Hugging Face checkpoint's config.json, read for one MoE layer: the model family (its
 * model_type) and the hyperparameters that decide how that family's MoE block routes and what
 * its experts are, each checked (whole numbers in range, the right JSON types). Host only, no
 * device: fuzzed like the other file readers. */
#ifndef MOEVK_MODEL_CONFIG_H
#define MOEVK_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum model_family {
    MODEL_MIXTRAL,   /* model_type "mixtral" */
    MODEL_QWEN2_MOE, /* "qwen2_moe" */
    MODEL_QWEN3_MOE, /* "qwen3_moe" */
    MODEL_DEEPSEEK_V3,
} model_family;

#define MODEL_MAX_DENSE_LAYERS 256 /* entries of mlp_only_layers */

typedef struct model_config {
    model_family family;
    const char *model_type; /* static text: the family's name */
    uint32_t hidden_size, num_layers;
    uint32_t num_experts, top_k, intermediate_size; /* E, k, f of each routed expert */
    uint32_t shared_intermediate_size;              /* 0: no shared experts */
    int shared_gate;                                /* Qwen2-MoE's shared_expert_gate */
    int renormalize;                                /* the top-k weights divided by their sum */
    int sigmoid;                                    /* scoring_func "sigmoid" (else softmax) */
    uint32_t num_groups, topk_groups;               /* n_group, topk_group (0: none) */
    float routed_scaling_factor;                    /* 1 unless the family scales */
    int gated;                                      /* hidden_act silu: SwiGLU */
    char hidden_act[32];
    /* Which layers are MoE: DeepSeek's first_k_dense_replace and moe_layer_freq, Qwen's
     * decoder_sparse_step and mlp_only_layers. */
    uint32_t first_k_dense, moe_layer_freq, decoder_sparse_step;
    uint32_t dense_layers[MODEL_MAX_DENSE_LAYERS];
    uint32_t dense_layer_count;
} model_config;

/* Parses config.json's text (size bytes, need not end in a NUL). On failure returns 0 and
 * writes one line to error naming the key and the problem. */
int model_config_parse(const char *text, size_t size, model_config *out, char *error,
                       size_t error_size);
/* Reads and parses a file: "path: problem" on failure. */
int model_config_read(const char *path, model_config *out, char *error, size_t error_size);
/* 1 when layer N of the model is an MoE layer; else 0 and why (a dense layer, or no such
 * layer). */
int model_config_moe_layer(const model_config *config, uint32_t layer, char *why, size_t why_size);

#endif
