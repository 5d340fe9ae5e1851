/* The learned Gaussian std (shaders/noise_std.comp): std_te = softplus(x_t . W_noise[:, e]) +
 * epsilon for every (token, expert) of the call, before the stages that draw the noise. */
#include "stage.h"

#include "noise_std.h"
#include "noise_std.spv.h"
#include "noise_std_addresses.spv.h"

DEFINE_STAGE_PARAMS(noise_std_params, NOISE_STD_PARAMS)

static const stage_kernel NOISE_STD_KERNEL = {
    .name = "noise_std",
    .shaders =
        {[VARIANT_PLAIN] = SPIRV(noise_std), [VARIANT_ADDRESSES] = SPIRV(noise_std_addresses)},
    KERNEL_INTERFACE(NOISE_STD_BUFFERS, noise_std_params)};

static int needed(const moevk_router *router) { return router->info.learned_noise; }

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 && (call->plan->flags & FLAG_NOISE_STD_LEARNED);
}

static void record(moevk_router *router, const route_plan *plan) {
    noise_std_params params = noise_std_params_from(plan);
    record_kernel(router, STAGE_NOISE_STD, 0, &params,
                  grid_for(router, (uint64_t)plan->num_tokens * plan->num_experts));
    record_compute_barrier(router);
}

/* W_noise [d, E], and the std of each (token, expert). */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (!info->learned_noise) return;
    uint64_t E = info->num_experts;
    raise_size(&sizes[BINDING_NOISE_WEIGHTS], (uint64_t)info->hidden_size * E * 4);
    raise_size(&sizes[BINDING_NOISE_STD], (uint64_t)info->max_tokens * E * 4);
}

const stage_module noise_std_stage = {.name = "noise std",
                                      .kernels = {&NOISE_STD_KERNEL},
                                      .kernel_count = 1,
                                      .size_buffers = size_buffers,
                                      .needed = needed,
                                      .runs = runs,
                                      .record = record,
                                      .after = TIMESTAMP_COUNT};
