/* The layer's routed experts' backward (grad_expert_pre.comp, grad_expert_down.comp,
 * grad_expert_input.comp, grad_expert_weights.comp, grad_expert_bias.comp): the stage's
 * interface (stage_params.h). */
#ifndef MOEVK_EXPERTS_BACKWARD_H
#define MOEVK_EXPERTS_BACKWARD_H
#include "stage_params.h"

// clang-format off
#define GRAD_EXPERT_PRE_BUFFERS(X) X(HIDDEN) X(ROW_TOKEN) X(TILES) X(EXPERT_GATE) X(EXPERT_UP)     \
    X(EXPERT_BIAS) X(GRAD_PRE)
#define GRAD_EXPERT_PRE_PARAMS(U, F, A) U(hidden_size) U(intermediate_size) U(flags)               \
    U(grad_pre_stride)
#define GRAD_EXPERT_DOWN_BUFFERS(X) X(GRAD_EXPERT_OUT) X(TILES) X(EXPERT_DOWN) X(GRAD_PRE)
#define GRAD_EXPERT_DOWN_PARAMS(U, F, A) U(hidden_size) U(intermediate_size)                       \
    U(grad_pre_stride)
#define GRAD_EXPERT_INPUT_BUFFERS(X) X(GRAD_PRE) X(TILES) X(EXPERT_GATE) X(EXPERT_UP)              \
    X(GRAD_ROWS)
#define GRAD_EXPERT_INPUT_PARAMS(U, F, A) U(hidden_size) U(intermediate_size)                      \
    U(grad_pre_stride)
#define GRAD_EXPERT_WEIGHTS_BUFFERS(X) X(HIDDEN) X(ROW_TOKEN) X(EXPERT_INFO) X(GRAD_EXPERT_OUT)    \
    X(INTERMEDIATE) X(GRAD_PRE) X(GRAD_EXPERT_GATE) X(GRAD_EXPERT_UP) X(GRAD_EXPERT_DOWN)
#define GRAD_EXPERT_WEIGHTS_PARAMS(U, F, A) U(hidden_size) U(intermediate_size) U(flags)           \
    U(grad_pre_stride) U(capacity) U(grad_matrix)
#define GRAD_EXPERT_BIAS_BUFFERS(X) X(EXPERT_INFO) X(GRAD_EXPERT_OUT) X(GRAD_PRE)                  \
    X(GRAD_EXPERT_BIAS)
#define GRAD_EXPERT_BIAS_PARAMS(U, F, A) U(hidden_size) U(intermediate_size) U(flags)              \
    U(grad_pre_stride) U(capacity)
// clang-format on

#endif
