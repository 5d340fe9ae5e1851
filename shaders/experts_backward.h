/* The layer's experts' backward (grad_expert_down.comp, grad_expert_input.comp,
 * grad_expert_weights.comp, grad_expert_bias.comp, routed and, built with SHARED_FFN, shared;
 * grad_shared_gate.comp): the interfaces of the experts_backward and shared_backward stages
 * (stage_params.h). */
#ifndef MOEVK_EXPERTS_BACKWARD_H
#define MOEVK_EXPERTS_BACKWARD_H
#include "stage_params.h"

// clang-format off
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
/* The shared experts' (the "shared" variant, SHARED_FFN: grad_ffn.glsl). */
#define GRAD_SHARED_DOWN_BUFFERS(X) X(GRAD_OUTPUT) X(SHARED_SCALE) X(SHARED_DOWN)                \
    X(GRAD_SHARED_PRE)
#define GRAD_SHARED_DOWN_PARAMS(U, F, A) U(num_tokens) U(hidden_size)                            \
    U(shared_intermediate_size) U(flags) U(grad_pre_stride)
#define GRAD_SHARED_INPUT_BUFFERS(X) X(GRAD_SHARED_PRE) X(SHARED_GATE) X(SHARED_UP)              \
    X(GRAD_HIDDEN)
#define GRAD_SHARED_INPUT_PARAMS(U, F, A) U(num_tokens) U(hidden_size)                           \
    U(shared_intermediate_size) U(grad_pre_stride)
#define GRAD_SHARED_WEIGHTS_BUFFERS(X) X(HIDDEN) X(GRAD_OUTPUT) X(SHARED_SCALE)                  \
    X(SHARED_INTERMEDIATE) X(GRAD_SHARED_PRE) X(GRAD_SHARED_GATE) X(GRAD_SHARED_UP)             \
    X(GRAD_SHARED_DOWN)
#define GRAD_SHARED_WEIGHTS_PARAMS(U, F, A) U(num_tokens) U(hidden_size)                         \
    U(shared_intermediate_size) U(flags) U(grad_pre_stride) U(grad_matrix)
#define GRAD_SHARED_BIAS_BUFFERS(X) X(GRAD_OUTPUT) X(SHARED_SCALE) X(GRAD_SHARED_PRE)            \
    X(GRAD_SHARED_BIAS)
#define GRAD_SHARED_BIAS_PARAMS(U, F, A) U(num_tokens) U(hidden_size)                            \
    U(shared_intermediate_size) U(flags) U(grad_pre_stride)
/* The shared experts' gate (grad_shared_gate.comp, Qwen2-MoE). */
#define GRAD_SHARED_GATE_BUFFERS(X) X(HIDDEN) X(GRAD_OUTPUT) X(SHARED_OUT) X(SHARED_SCALE)       \
    X(SHARED_GATE_WEIGHTS) X(GRAD_SHARED_DZ) X(GRAD_SHARED_EXPERT_GATE) X(GRAD_HIDDEN)
#define GRAD_SHARED_GATE_PARAMS(U, F, A) U(num_tokens) U(hidden_size) U(phase)
// clang-format on

#endif
