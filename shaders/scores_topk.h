/* Scores and top-k (scores_topk.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_SCORES_TOPK_H
#define MOEVK_SCORES_TOPK_H
#include "stage_params.h"

// clang-format off
#define SCORES_TOPK_BUFFERS(X) X(LOGITS) X(BIAS) X(DECISIONS) X(NOISE_STD) X(NOISE_STATE)          \
    X(EXPERT_IDS) X(WEIGHTS) X(ROW_STATS) X(ROW_FLAGS) X(ROW_MEASURES) X(BLOCK_COUNTS)
#define SCORES_TOPK_PARAMS(U, F, A) A(logits_address) U(num_tokens) U(num_experts) U(choices)       \
    U(flags) U(block_size) F(scale) SCORE_PARAMS(U, F, A) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
