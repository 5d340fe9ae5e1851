/* The routing options that `moevk route` and `moevk layer` share: one table fragment, so that
 * both spell, check and document them alike. A command's argument struct (its OPTION_ARGS)
 * begins with its moevk_router_info `info` and has the members `bias`, `device` (const char *),
 * `step` (uint32_t) and `dropless_given` (int). */
#ifndef MOEVK_CLI_ROUTING_OPTIONS_H
#define MOEVK_CLI_ROUTING_OPTIONS_H

#include "moevk.h"
#include "option_table.h"

/* What the options' values do beyond storing them (args: the command's struct). */
const char *routing_take_noise(void *args, const char *text);
/* "aux=0.01,z=0.001,..." (--loss of route and layer) into loss's coefficients; NULL, or what is
 * wrong. */
const char *routing_parse_losses(const char *text, moevk_loss_info *loss);
const char *routing_take_seed(void *args, const char *text);
void routing_dropless(void *args);
void routing_by_factor(void *args);
void routing_fixed_capacity(void *args);
extern const char *const ROUTING_SCORES[], *const ROUTING_POLICIES[], *const ROUTING_MODES[];

/* The entries; sequence_then: what --sequence-length also implies (NULL: nothing). */
#define ROUTING_OPTIONS(sequence_then)                                                             \
    OPT_TEXT("--bias", "B.npy", "selection bias [E] float32, added to the logits to select",       \
             bias),                                                                                \
        OPT_UINT("--k", "K", "experts per token", info.top_k, 1, MOEVK_MAX_TOP_K, NULL),           \
        OPT_CHOICE("--score", "softmax|sigmoid", "score function", info.score, ROUTING_SCORES),    \
        OPT_FLOAT("--temperature", "T", "divides the logits in the scores (default 1)",            \
                  info.temperature, 2, NULL),                                                      \
        OPT_FLAG("--renorm", "divide the top-k weights by their sum", info.renormalize, NULL),     \
        OPT_FLAG("--bias-on-scores",                                                               \
                 "add the bias to the sigmoid scores, not the logits (DeepSeek-V3)",               \
                 info.bias_on_scores, NULL),                                                       \
        OPT_FLOAT("--scale", "S", "multiplies the weights", info.scale, 0, NULL),                  \
        OPT_FLOAT("--capacity-factor", "F",                                                        \
                  "C = max(min capacity, ceil(F T k / E)) (default 1.25)", info.capacity_factor,   \
                  1, routing_by_factor),                                                           \
        OPT_INT("--capacity", "N", "a fixed capacity C per expert", info.capacity, 0, INT32_MAX,   \
                routing_fixed_capacity),                                                           \
        OPT_FLAG("--dropless", "no capacity: every choice kept, the experts' rows packed",         \
                 dropless_given, routing_dropless),                                                \
        OPT_UINT("--pad-multiple", "N",                                                            \
                 "dropless: pad each expert's block to a multiple of N rows", info.pad_multiple,   \
                 0, 1 << 20, NULL),                                                                \
        OPT_INT("--min-capacity", "N", "the least C of --capacity-factor (default 4)",             \
                info.min_capacity, 0, INT32_MAX, NULL),                                            \
        OPT_CHOICE("--drop-policy", "position|score", "what an overflowing expert drops first",    \
                   info.drop_policy, ROUTING_POLICIES),                                            \
        OPT_TEXT("--device", "N|NAME", "the Vulkan device (default: the best one)", device),       \
        OPT_CALL("--noise", "KIND:AMOUNT", "jitter:EPS, gaussian:STD or gumbel:SCALE",             \
                 routing_take_noise),                                                              \
        OPT_CALL("--seed", "S", "the noise's seed", routing_take_seed),                            \
        OPT_UINT("--step", "N", "the noise counter's step", step, 0, UINT32_MAX, NULL),            \
        OPT_FLAG("--noisy-scores", "weights and statistics from the noisy logits",                 \
                 info.noisy_scores, NULL),                                                         \
        OPT_UINT("--groups", "G", "group-limited routing: G equal groups of experts",              \
                 info.num_groups, 1, 32, NULL),                                                    \
        OPT_UINT("--topk-groups", "K", "the groups each token keeps", info.topk_groups, 1, 32,     \
                 NULL),                                                                            \
        OPT_CHOICE("--mode", "MODE", "token, sequence, batch, sinkhorn or expert-choice",          \
                   info.mode, ROUTING_MODES),                                                      \
        OPT_UINT("--sequence-length", "S", "tokens per sequence (sequence mode, sequence loss)",   \
                 info.sequence_length, 1, 1 << 30, sequence_then),                                 \
        OPT_UINT("--sinkhorn-iterations", "N", "Sinkhorn's iteration cap (default 100)",           \
                 info.sinkhorn_iterations, 1, 1 << 20, NULL)

#endif
