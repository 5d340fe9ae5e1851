/* The layer's shared experts (shared_up.comp, shared_down.comp): the stage's interface
 * (stage_params.h). */
#ifndef MOEVK_SHARED_EXPERTS_H
#define MOEVK_SHARED_EXPERTS_H
#include "stage_params.h"

// clang-format off
#define SHARED_UP_BUFFERS(X) X(HIDDEN) X(SHARED_GATE) X(SHARED_UP) X(SHARED_BIAS)                \
    X(SHARED_INTERMEDIATE) X(SHARED_GATE_WEIGHTS) X(SHARED_SCALE) X(GRAD_SHARED_PRE)
#define SHARED_UP_PARAMS(U, F, A) U(num_tokens) U(hidden_size) U(shared_intermediate_size)        \
    U(flags) U(shared_pre_stride)
#define SHARED_DOWN_BUFFERS(X) X(SHARED_INTERMEDIATE) X(SHARED_DOWN) X(SHARED_BIAS)              \
    X(SHARED_SCALE) X(SHARED_OUT)
#define SHARED_DOWN_PARAMS(U, F, A) U(num_tokens) U(hidden_size) U(shared_intermediate_size)      \
    U(flags)
// clang-format on

#endif
