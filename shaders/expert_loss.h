/* The per-expert loss (expert_loss.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_EXPERT_LOSS_H
#define MOEVK_EXPERT_LOSS_H
#include "stage_params.h"

// clang-format off
#define EXPERT_LOSS_BUFFERS(X) X(EXPERT_IDS) X(SLOTS) X(EXPERT_LOSS)
#define EXPERT_LOSS_PARAMS(U, F, A) U(num_tokens) U(num_experts) U(choices) U(flags) U(phase)       \
    U(stat_blocks) U(rows_per_stat_block)
// clang-format on

#endif
