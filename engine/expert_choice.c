/* Expert choice (shaders/expert_choice.comp): each expert takes its top-C tokens (phase 0, a
 * workgroup per expert), then each token's rows are compacted (phase 1, over the tokens). */
#include "recording.h"

void record_expert_choice(moevk_router *router, const route_params *params) {
    route_params phase = *params;
    phase.phase = 0;
    record_stage(router, STAGE_EXPERT_CHOICE, &phase, params->num_experts);
    record_compute_barrier(router);
    phase.phase = 1;
    record_stage(router, STAGE_EXPERT_CHOICE, &phase, grid_for(router, params->num_tokens));
    record_compute_barrier(router);
}
