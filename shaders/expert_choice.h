/* Expert choice (expert_choice.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_EXPERT_CHOICE_H
#define MOEVK_EXPERT_CHOICE_H
#include "stage_params.h"

// clang-format off
#define EXPERT_CHOICE_BUFFERS(X) X(LOGITS) X(DECISIONS) X(NOISE_STD) X(NOISE_STATE) X(ROW_STATS)   \
    X(EXPERT_IDS) X(WEIGHTS) X(SLOTS) X(ROWS) X(COMPACT_ROWS) X(ROW_TOKEN) X(EXPERT_INFO)
#define EXPERT_CHOICE_PARAMS(U, F, A) A(logits_address) U(num_tokens) U(num_experts) U(flags)     \
    U(phase) U(capacity) U(choice_block_tokens) F(scale) SCORE_PARAMS(U, F, A) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
