/* Dispatch (shaders/dispatch.comp): the kept tokens' hidden states gathered into the experts'
 * rows. Nothing after it in the route reads them, so no barrier follows. */
#include "recording.h"

void record_dispatch(moevk_router *router, const route_params *params) {
    record_rows_stage(router, STAGE_DISPATCH, params, params->dispatched_rows);
}
