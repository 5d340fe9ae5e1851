/* A GGUF file's metadata read as a model_config, so that a layer of a GGUF model routes as the
 * same model's Hugging Face checkpoint does. general.architecture picks the family: llama
 * (Mixtral's conversion: an MoE only with experts), qwen2moe, qwen3moe, deepseek2 (DeepSeek-V2
 * and V3); the keys are ARCH.embedding_length, block_count, expert_count, expert_used_count,
 * expert_feed_forward_length (llama: feed_forward_length), expert_shared_feed_forward_length,
 * expert_shared_count, expert_weights_norm, expert_weights_scale, expert_gating_func,
 * expert_group_count, expert_group_used_count and leading_dense_block_count. Where a file has
 * no expert_weights_norm, each family does as llama.cpp does: llama and qwen3moe renormalise,
 * qwen2moe and deepseek2 do not. */
#ifndef MOEVK_GGUF_CONFIG_H
#define MOEVK_GGUF_CONFIG_H

#include <stddef.h>

#include "gguf.h"
#include "model_config.h"

/* 0 with one line in error naming the key and the problem. A qwen2moe file's shared width may
 * be left 0 (no expert_shared_feed_forward_length): the shared tensors' shape gives it. */
int gguf_model_config(const gguf_file *file, model_config *out, char *error, size_t error_size);

#endif
