/* The routing profile of a batch (shaders/profile.comp): each valid token's measures, then
 * their histograms, for a route whose output adds to a profile or checks drift against one
 * (FLAG_PROFILE), after its scores and choices. The host turns the counts into a profile's
 * totals or a batch's drift (engine/drift.c). */
#include "stage.h"

#include "profile.h"
#include "profile.spv.h"
#include "profile_object.h"

DEFINE_STAGE_PARAMS(profile_params, PROFILE_PARAMS)

static const stage_kernel PROFILE_KERNEL = {.name = "profile",
                                            .shaders = {[VARIANT_PLAIN] = SPIRV(profile)},
                                            KERNEL_INTERFACE(PROFILE_BUFFERS, profile_params)};

/* The modes that give each token a routing distribution of its own (Sinkhorn balances only the
 * selection keys; SEQUENCE and BATCH decide from a sequence's mean). */
int profile_mode(const moevk_router_info *info) {
    return info->mode == MOEVK_MODE_TOKEN || info->mode == MOEVK_MODE_EXPERT_CHOICE ||
           info->mode == MOEVK_MODE_SINKHORN;
}

/* Co-selection: the modes where each token picks its k experts. */
int profile_counts_pairs(const moevk_router_info *info) {
    return (info->mode == MOEVK_MODE_TOKEN || info->mode == MOEVK_MODE_SINKHORN) &&
           info->top_k >= 2;
}

static int needed(const moevk_router *router) { return profile_mode(&router->info); }

static int runs(const route_call *call) {
    return call && (call->plan->flags & FLAG_PROFILE) && call->plan->num_tokens > 0;
}

static void record(moevk_router *router, const route_plan *plan) {
    /* The histograms and pairs start at zero; the header came with the call's uploads. */
    router->context->vk.vkCmdFillBuffer(router->recording, router->buffers[BINDING_PROFILE].buffer,
                                        PROFILE_HISTOGRAMS * 4, VK_WHOLE_SIZE, 0);
    record_barrier(router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    profile_params params = profile_params_from(plan);
    uint32_t groups = grid_for(router, plan->num_tokens);
    params.phase = PROFILE_PHASE_MEASURES;
    record_kernel(router, STAGE_PROFILE, 0, &params, groups);
    record_compute_barrier(router);
    params.phase = PROFILE_PHASE_HISTOGRAMS;
    record_kernel(router, STAGE_PROFILE, 0, &params, groups);
    record_compute_barrier(router);
}

static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (!profile_mode(info)) return;
    uint64_t E = info->num_experts, pairs = profile_counts_pairs(info) ? E * E : 0;
    raise_size(&sizes[BINDING_PROFILE_MEASURES], (uint64_t)info->max_tokens * PROFILE_MEASURES * 4);
    raise_size(&sizes[BINDING_PROFILE], (PROFILE_PAIRS + pairs) * 4);
}

const stage_module profile_stage = {.name = "profile",
                                    .kernels = {&PROFILE_KERNEL},
                                    .kernel_count = 1,
                                    .size_buffers = size_buffers,
                                    .needed = needed,
                                    .runs = runs,
                                    .record = record,
                                    .after = TIMESTAMP_COUNT};
