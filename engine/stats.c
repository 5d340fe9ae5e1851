/* Routing statistics (shaders/stats.comp): per-block partial sums, then each total over the
 * blocks in a fixed order. */
#include "recording.h"

void record_stats(moevk_router *router, const route_params *params) {
    route_params phase = *params;
    phase.phase = 0;
    if (params->stat_blocks > 0) {
        record_stage(router, STAGE_STATS, &phase, params->stat_blocks);
        record_compute_barrier(router);
    }
    phase.phase = 1;
    record_stage(router, STAGE_STATS, &phase, params->num_experts + STAT_SCALARS);
}
