/* Dispatch (dispatch.comp): the stage's interface (stage_params.h). */
#ifndef MOEVK_DISPATCH_H
#define MOEVK_DISPATCH_H
#include "stage_params.h"

// clang-format off
#define DISPATCH_BUFFERS(X) X(HIDDEN) X(ROW_TOKEN) X(DISPATCHED)
#define DISPATCH_PARAMS(U, F, A) A(hidden_address) A(dispatched_address) U(hidden_size)           \
    U(dispatched_rows)
// clang-format on

#endif
