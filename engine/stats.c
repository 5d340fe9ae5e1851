/* Routing statistics (shaders/stats.comp): per-block partial sums, then each total over the
 * blocks in a fixed order. */
#include "recording.h"

void record_stats(moevk_router *router, const route_params *params) {
    record_blocks_then_totals(router, STAGE_STATS, params, params->num_experts + STAT_SCALARS);
}
