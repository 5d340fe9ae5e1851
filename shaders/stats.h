/* Routing statistics (stats.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_STATS_H
#define MOEVK_STATS_H
#include "stage_params.h"

// clang-format off
#define STATS_BUFFERS(X) X(LOGITS) X(DECISIONS) X(NOISE_STD) X(NOISE_STATE) X(ROW_STATS)           \
    X(ROW_FLAGS) X(SLOTS) X(STAT_PARTIALS) X(STAT_TOTALS)
#define STATS_PARAMS(U, F, A) A(logits_address) U(num_tokens) U(num_experts) U(choices) U(flags)    \
    U(phase) U(stat_blocks) U(rows_per_stat_block) SCORE_PARAMS(U, F, A) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
