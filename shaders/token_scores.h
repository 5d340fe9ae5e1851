/* Each token's out-of-distribution scores (token_scores.comp): the stage's interface
 * (stage_params.h). */
#ifndef MOEVK_TOKEN_SCORES_H
#define MOEVK_TOKEN_SCORES_H
#include "stage_params.h"

// clang-format off
#define TOKEN_SCORES_BUFFERS(X) X(LOGITS) X(DECISIONS) X(NOISE_STD) X(ROW_STATS) X(ROW_FLAGS)     \
    X(TOKEN_SCORES)
#define TOKEN_SCORES_PARAMS(U, F, A) A(logits_address) U(num_tokens) U(num_experts) U(flags)       \
    SCORE_PARAMS(U, F, A) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
