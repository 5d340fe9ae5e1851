/* The router projection (router_projection.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_ROUTER_PROJECTION_H
#define MOEVK_ROUTER_PROJECTION_H
#include "stage_params.h"

// clang-format off
#define ROUTER_PROJECTION_BUFFERS(X) X(HIDDEN) X(ROUTER_WEIGHTS) X(LOGITS)
#define ROUTER_PROJECTION_PARAMS(U, F, A) A(logits_address) A(hidden_address) U(num_tokens)       \
    U(num_experts) U(hidden_size) U(token_chunk)
// clang-format on

#endif
