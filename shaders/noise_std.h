/* The learned Gaussian std (noise_std.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_NOISE_STD_H
#define MOEVK_NOISE_STD_H
#include "stage_params.h"

// clang-format off
#define NOISE_STD_BUFFERS(X) X(HIDDEN) X(NOISE_WEIGHTS) X(NOISE_STD) X(NOISE_STATE)
#define NOISE_STD_PARAMS(U, F, A) A(hidden_address) U(num_tokens) U(num_experts)                  \
    U(hidden_size) U(flags) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
