/* The rows the SEQUENCE, BATCH and SINKHORN modes decide from (shaders/sequence_mean.comp):
 * each row's own validity, then in the sequence modes each sequence's mean logits, a dispatch
 * per TOKEN_CHUNK tokens of the longest sequence (the running sums carry over). */
#include "recording.h"

void record_row_flags(moevk_router *router, const route_params *params) {
    route_params phase = *params;
    phase.phase = 0;
    record_stage(router, STAGE_SEQUENCE_MEAN, &phase, grid_for(router, params->num_tokens));
    record_compute_barrier(router);
}

void record_sequence_means(moevk_router *router, const route_params *params) {
    uint32_t sequences = div_ceil_u32(params->num_tokens, params->mode_param);
    uint32_t longest =
        params->mode_param < params->num_tokens ? params->mode_param : params->num_tokens;
    uint32_t chunks = div_ceil_u32(longest, TOKEN_CHUNK);
    route_params phase = *params;
    for (uint32_t c = 0; c < chunks; ++c) {
        phase.phase = 1 + c;
        record_stage(router, STAGE_SEQUENCE_MEAN, &phase,
                     grid_for(router, (uint64_t)sequences * params->num_experts));
        record_compute_barrier(router);
    }
}
