/* One MoE block's tensors in a checkpoint, found by the names of its model family under a
 * prefix (model.layers.N.block_sparse_moe. for Mixtral, model.layers.N.mlp. for the others;
 * in a GGUF file llama.cpp's names under blk.N., the experts stacked in one tensor each), each
 * shape checked against the config, then uploaded into a moevk_layer. */
#ifndef MOEVK_CLI_LAYER_WEIGHTS_H
#define MOEVK_CLI_LAYER_WEIGHTS_H

#include "model_config.h"
#include "model_files.h"
#include "moevk.h"

typedef struct layer_weights {
    const model_tensor *router;      /* [E, d] */
    const model_tensor *score_bias;  /* DeepSeek-V3's e_score_correction_bias [E] */
    const model_tensor **gate, **up; /* [f, d] per expert; gate NULL unless gated */
    const model_tensor **down;       /* [d, f] per expert */
    const model_tensor *shared_gate, *shared_up, *shared_down; /* NULL: none */
    const model_tensor *shared_expert_gate;                    /* [1, d] ([d] in GGUF): Qwen2-MoE */
    uint32_t shared_intermediate_size; /* the shared FFN's width (0: none) */
    /* Gate's and up's type and down's, when each is one type for the block, else both F32. */
    moevk_dtype weight_type, down_type;
    model_tensor *views; /* each expert's slice of GGUF's stacked tensors (owned) */
} layer_weights;

/* The prefix of layer N's MoE block in the family's checkpoints, or blk.N. in a GGUF file
 * (prefix: size bytes). */
void layer_weights_prefix(const model_files *files, const model_config *config, uint32_t layer,
                          char *prefix, size_t size);
/* Finds and checks every tensor of the block (gated: SwiGLU's three matrices, else up and down:
 * Mixtral's w1 and w2, the others' up_proj and down_proj; in GGUF ffn_up_exps and
 * ffn_down_exps). 0 with one line in error. */
int layer_weights_find(model_files *files, const model_config *config, const char *prefix,
                       int gated, layer_weights *out, char *error, size_t error_size);
/* gguf_layer_weights.c: layer_weights_find's GGUF half (out zeroed, freed by the caller on
 * failure). */
int gguf_layer_weights_find(model_files *files, const model_config *config, const char *prefix,
                            int gated, layer_weights *out, char *error, size_t error_size);
/* Sets the layer's weights from the tensors (converted to the layer's types where they differ:
 * f16 and bf16 widen to f32 exactly). */
moevk_result layer_weights_upload(const layer_weights *weights, const model_config *config,
                                  moevk_layer *layer);
/* Where layer_weights_upload_to sets weights: moevk_layer_set_weights' arguments. */
typedef moevk_result (*layer_weights_setter)(void *target, moevk_layer_weight which, uint32_t first,
                                             uint32_t count, moevk_tensor source);
/* layer_weights_upload through set, the routed experts' only for [first_expert, first_expert +
 * expert_count) (an expert-parallel rank's). */
moevk_result layer_weights_upload_to(const layer_weights *weights, const model_config *config,
                                     layer_weights_setter set, void *target, uint32_t first_expert,
                                     uint32_t expert_count);
/* A small f32 tensor's data, widened from f16 or bf16 into *copy (free() it) when needed; NULL
 * when out of memory. */
const float *layer_tensor_f32(const model_tensor *tensor, void **copy);
void layer_weights_free(layer_weights *weights);

#endif
