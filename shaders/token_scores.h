/* Each token's out-of-distribution scores (token_scores.comp): the stage's interface
 * (stage_params.h). */
#ifndef MOEVK_TOKEN_SCORES_H
#define MOEVK_TOKEN_SCORES_H
#include "stage_params.h"

// clang-format off
#define TOKEN_SCORES_BUFFERS(X) X(ROW_STATS) X(ROW_FLAGS) X(ROW_MEASURES) X(TOKEN_SCORES)
#define TOKEN_SCORES_PARAMS(U, F, A) U(num_tokens)
// clang-format on

#endif
