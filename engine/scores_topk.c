/* Scores and top-k (shaders/scores_topk.comp): every token's routing scores, row statistics
 * and its top-k experts (in expert choice, each (token, expert)'s ranking key instead). */
#include "recording.h"

void record_scores_topk(moevk_router *router, const route_params *params) {
    record_stage(router, STAGE_SCORES_TOPK, params, grid_for(router, params->num_tokens));
    record_compute_barrier(router);
}
