/* The score drop policy (shaders/score_select.comp): each overflowing expert keeps its C
 * highest-scoring choices (a workgroup per expert). */
#include "recording.h"

void record_score_select(moevk_router *router, const route_params *params) {
    record_stage(router, STAGE_SCORE_SELECT, params, params->num_experts);
    record_compute_barrier(router);
}
