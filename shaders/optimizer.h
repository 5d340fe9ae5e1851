/* The optimizer's step (optimizer.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_OPTIMIZER_H
#define MOEVK_OPTIMIZER_H
#include "stage_params.h"

// clang-format off
#define OPTIMIZER_BUFFERS(X) X(ROUTER_WEIGHTS) X(EXPERT_GATE) X(EXPERT_UP) X(EXPERT_DOWN)         \
    X(EXPERT_BIAS) X(SHARED_GATE) X(SHARED_UP) X(SHARED_DOWN) X(SHARED_BIAS)                     \
    X(SHARED_GATE_WEIGHTS) X(GRAD_ROUTER) X(GRAD_EXPERT_GATE) X(GRAD_EXPERT_UP)                  \
    X(GRAD_EXPERT_DOWN) X(GRAD_EXPERT_BIAS) X(GRAD_SHARED_GATE) X(GRAD_SHARED_UP)                \
    X(GRAD_SHARED_DOWN) X(GRAD_SHARED_BIAS) X(GRAD_SHARED_EXPERT_GATE) X(OPT_MASTER) X(OPT_M)    \
    X(OPT_V) X(OPT_PARTIALS)
#define OPTIMIZER_PARAMS(U, F, A) U(phase) U(opt_param) U(opt_dtype) U(opt_count) U(opt_offset)    \
    U(opt_partial_offset) U(opt_adamw) F(learning_rate) F(beta1) F(beta2) F(epsilon)               \
    F(weight_decay) F(grad_scale) F(step_size) F(correction2_sqrt) F(keep)
// clang-format on

#endif
