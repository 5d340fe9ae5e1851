/* moevk_router_expert_loss: a caller's per-token loss summed per expert over the last route's
 * kept choices on the device, divided by the kept counts on the host. */
#include "stage.h"

#include "expert_loss.h"
#include "expert_loss.spv.h"

DEFINE_STAGE_PARAMS(expert_loss_params, EXPERT_LOSS_PARAMS)

static const stage_kernel EXPERT_LOSS_KERNEL = {
    .name = "expert_loss",
    .shaders = {[VARIANT_PLAIN] = SPIRV(expert_loss)},
    KERNEL_INTERFACE(EXPERT_LOSS_BUFFERS, expert_loss_params)};

/* Not part of the route: moevk_router_expert_loss records it. */
/* The token loss [T], the sums [E], and the blocks' partial sums [stat_blocks, E]. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    uint64_t T = router->info.max_tokens, E = router->info.num_experts;
    raise_size(&sizes[BINDING_EXPERT_LOSS],
               (T + E + router_max_stat_blocks(&router->info) * E) * 4);
}

const stage_module expert_loss_stage = {.name = "per-expert loss",
                                        .kernels = {&EXPERT_LOSS_KERNEL},
                                        .kernel_count = 1,
                                        .size_buffers = size_buffers,
                                        .after = TIMESTAMP_COUNT};

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

moevk_result moevk_router_expert_loss(moevk_router *router, moevk_tensor token_loss,
                                      double *expert_loss) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    moevk_result r = router_settle(router);
    if (r != MOEVK_SUCCESS) return r;
    if (router->route == ROUTE_NONE) REJECT("the per-expert loss needs a route first");
    if (!expert_loss) REJECT("expert_loss must not be NULL");
    const route_plan *last = &router->last;
    uint64_t T = last->num_tokens, E = router->info.num_experts;
    r = tensor_check(context, "token_loss", &token_loss, TENSOR_NONE | TENSOR_HOST | TENSOR_BUFFER,
                     T * 4);
    if (r != MOEVK_SUCCESS) return r;
    if (token_loss.kind == MOEVK_TENSOR_NONE && T > 0) REJECT("token_loss is not given");
    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    tensor_upload(plan, BINDING_EXPERT_LOSS, &token_loss, T * 4);
    transfer_uploads_done(plan);
    record_expert_loss(router, last);
    transfer_download(plan, BINDING_EXPERT_LOSS, NULL, (T + E) * 4);
    transfer_download(plan, BINDING_EXPERT_INFO, NULL, 2 * E * 4);
    r = transfer_submit(plan);
    if (r == MOEVK_SUCCESS) r = transfer_complete(plan, UINT64_MAX);
    if (r != MOEVK_SUCCESS) return r;
    const float *sums = (const float *)transfer_downloaded(plan, BINDING_EXPERT_LOSS) + T;
    const uint32_t *kept = (const uint32_t *)transfer_downloaded(plan, BINDING_EXPERT_INFO) + E;
    for (uint64_t e = 0; e < E; ++e) expert_loss[e] = kept[e] ? (double)sums[e] / kept[e] : 0.0;
    return MOEVK_SUCCESS;
}

/* Per-expert sums of the per-token loss over the route's kept choices: partials per block,
 * then each expert's total. */
void record_expert_loss(moevk_router *router, const route_plan *plan) {
    expert_loss_params params = expert_loss_params_from(plan);
    record_blocks_then_totals(router, STAGE_EXPERT_LOSS, &params, &params.phase, plan->stat_blocks,
                              plan->num_experts);
}
