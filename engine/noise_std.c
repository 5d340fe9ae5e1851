/* The learned Gaussian std (shaders/noise_std.comp): std_te = softplus(x_t . W_noise[:, e]) +
 * epsilon for every (token, expert) of the call, before the stages that draw the noise. */
#include "recording.h"

void record_noise_std(moevk_router *router, const route_params *params) {
    record_stage(router, STAGE_NOISE_STD, params,
                 grid_for(router, (uint64_t)params->num_tokens * params->num_experts));
    record_compute_barrier(router);
}
