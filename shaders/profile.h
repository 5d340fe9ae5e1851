/* The routing profile of a batch (profile.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_PROFILE_H
#define MOEVK_PROFILE_H
#include "stage_params.h"

// clang-format off
#define PROFILE_BUFFERS(X) X(ROW_STATS) X(ROW_FLAGS) X(ROW_MEASURES) X(EXPERT_IDS)              \
    X(PROFILE_MEASURES) X(PROFILE)
#define PROFILE_PARAMS(U, F, A) U(num_tokens) U(num_experts) U(flags) U(phase) U(profile_bins)
// clang-format on

#endif
