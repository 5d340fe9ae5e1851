/* The score drop policy (score_select.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_SCORE_SELECT_H
#define MOEVK_SCORE_SELECT_H
#include "stage_params.h"

// clang-format off
#define SCORE_SELECT_BUFFERS(X) X(WEIGHTS) X(EXPERT_INFO) X(ORDER) X(SLOTS) X(ROWS)               \
    X(ROW_TOKEN)
#define SCORE_SELECT_PARAMS(U, F, A) U(choices) U(capacity)
// clang-format on

#endif
