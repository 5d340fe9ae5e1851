/* The layer's combine (layer_combine.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_LAYER_COMBINE_H
#define MOEVK_LAYER_COMBINE_H
#include "stage_params.h"

// clang-format off
#define LAYER_COMBINE_BUFFERS(X) X(EXPERT_OUT) X(ROWS) X(COMPACT_ROWS) X(WEIGHTS) X(ROW_FLAGS)    \
    X(SHARED_OUT) X(COMBINED)
#define LAYER_COMBINE_PARAMS(U, F, A) U(num_tokens) U(hidden_size) U(flags) U(capacity)
// clang-format on

#endif
