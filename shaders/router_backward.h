/* The router projection, backward (grad_router.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_ROUTER_BACKWARD_H
#define MOEVK_ROUTER_BACKWARD_H
#include "stage_params.h"

// clang-format off
#define GRAD_ROUTER_BUFFERS(X) X(HIDDEN) X(ROUTER_WEIGHTS) X(GRAD_LOGITS) X(GRAD_ROUTER)           \
    X(GRAD_HIDDEN)
#define GRAD_ROUTER_PARAMS(U, F, A) U(num_tokens) U(hidden_size) U(grad_matrix)
// clang-format on

#endif
