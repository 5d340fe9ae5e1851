/* The layer's combine and dispatch, backward (grad_combine.comp, grad_hidden.comp): the stage's
 * interface (stage_params.h). */
#ifndef MOEVK_COMBINE_BACKWARD_H
#define MOEVK_COMBINE_BACKWARD_H
#include "stage_params.h"

// clang-format off
#define GRAD_COMBINE_BUFFERS(X) X(ROWS) X(WEIGHTS) X(EXPERT_OUT) X(GRAD_OUTPUT)                    \
    X(GRAD_EXPERT_OUT) X(GRAD_WEIGHTS)
#define GRAD_COMBINE_PARAMS(U, F, A) U(num_tokens) U(hidden_size)
#define GRAD_HIDDEN_BUFFERS(X) X(ROWS) X(GRAD_ROWS) X(GRAD_HIDDEN)
#define GRAD_HIDDEN_PARAMS(U, F, A) U(num_tokens) U(hidden_size)
// clang-format on

#endif
