/* The Sinkhorn iteration (sinkhorn.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_SINKHORN_H
#define MOEVK_SINKHORN_H
#include "stage_params.h"

// clang-format off
#define SINKHORN_BUFFERS(X) X(LOGITS) X(DECISIONS) X(NOISE_STD) X(NOISE_STATE) X(ROW_FLAGS)
#define SINKHORN_PARAMS(U, F, A) A(logits_address) U(num_tokens) U(num_experts) U(flags)          \
    U(phase) SCORE_PARAMS(U, F, A) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
