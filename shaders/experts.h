/* The layer's routed experts (expert_tiles.comp, expert_up.comp, expert_down.comp): the stage's
 * interface (stage_params.h). */
#ifndef MOEVK_EXPERTS_H
#define MOEVK_EXPERTS_H
#include "stage_params.h"

// clang-format off
#define EXPERT_TILES_BUFFERS(X) X(EXPERT_INFO) X(TILES)
#define EXPERT_TILES_PARAMS(U, F, A) U(hidden_size) U(intermediate_size) U(capacity) U(flags)
#define EXPERT_UP_BUFFERS(X) X(HIDDEN) X(ROW_TOKEN) X(TILES) X(EXPERT_GATE) X(EXPERT_UP)         \
    X(EXPERT_BIAS) X(INTERMEDIATE) X(GRAD_PRE)
#define EXPERT_UP_PARAMS(U, F, A) U(hidden_size) U(intermediate_size) U(flags) U(grad_pre_stride)
#define EXPERT_DOWN_BUFFERS(X) X(INTERMEDIATE) X(TILES) X(EXPERT_DOWN) X(EXPERT_BIAS)            \
    X(EXPERT_OUT)
#define EXPERT_DOWN_PARAMS(U, F, A) U(hidden_size) U(intermediate_size) U(flags)
// clang-format on

#endif
