/* The decision rows of the SEQUENCE, BATCH and SINKHORN modes (sequence_mean.comp): the stage's
 * interface (stage_params.h). */
#ifndef MOEVK_SEQUENCE_MEAN_H
#define MOEVK_SEQUENCE_MEAN_H
#include "stage_params.h"

// clang-format off
#define SEQUENCE_MEAN_BUFFERS(X) X(LOGITS) X(DECISIONS) X(NOISE_STD) X(NOISE_STATE) X(ROW_FLAGS)
#define SEQUENCE_MEAN_PARAMS(U, F, A) A(logits_address) U(num_tokens) U(num_experts) U(flags)     \
    U(phase) SCORE_PARAMS(U, F, A) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
