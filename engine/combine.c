/* Combine (shaders/combine.comp): each token's kept rows of expert output summed with its
 * weights, in choice order. */
#include "recording.h"

void record_combine(moevk_router *router, const route_params *params) {
    record_bind_set(router);
    record_reset_timestamps(router, TIMESTAMP_COMBINE_START, 2);
    record_timestamp(router, TIMESTAMP_COMBINE_START);
    if (params->num_tokens > 0 && params->hidden_size > 0)
        record_rows_stage(router, STAGE_COMBINE, params, params->num_tokens);
    record_timestamp(router, TIMESTAMP_COMBINE_END);
}
