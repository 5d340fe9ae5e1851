/* Combine (combine.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_COMBINE_H
#define MOEVK_COMBINE_H
#include "stage_params.h"

// clang-format off
#define COMBINE_BUFFERS(X) X(EXPERT_OUT) X(ROWS) X(COMPACT_ROWS) X(WEIGHTS) X(COMBINED)
#define COMBINE_PARAMS(U, F, A) A(expert_out_address) A(combined_address) U(num_tokens)           \
    U(hidden_size) U(flags) U(capacity)
// clang-format on

#endif
