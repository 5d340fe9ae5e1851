/* moevk_router_losses: the balancing losses of the last route and dL/dlogits, computed on the
 * device by shaders/losses.comp; the host turns the device's sums into the loss values. */
#include <math.h>
#include <string.h>

#include "stage.h"

#include "losses.h"
#include "losses.spv.h"

DEFINE_STAGE_PARAMS(losses_params, LOSSES_PARAMS)

static const stage_kernel LOSSES_KERNEL = {.name = "losses",
                                           .shaders = {[VARIANT_PLAIN] = SPIRV(losses)},
                                           KERNEL_INTERFACE(LOSSES_BUFFERS, losses_params)};

/* The losses cover the TOKEN mode, within the descriptors' range. */
static int needed(const moevk_router *router) {
    return router->info.losses && !router->use_addresses && router->info.mode == MOEVK_MODE_TOKEN;
}

/* Not part of the route: moevk_router_losses records it. */
const stage_module losses_stage = {.name = "losses",
                                   .kernels = {&LOSSES_KERNEL},
                                   .kernel_count = 1,
                                   .needed = needed,
                                   .after = TIMESTAMP_COUNT};

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

static moevk_result check_losses(const moevk_router *router, const moevk_loss_info *info,
                                 moevk_buffer *grad_logits_buffer) {
    moevk_context *context = router->context;
    const route_plan *last = &router->last;
    if (!info) REJECT("info must not be NULL");
    if (!router->info.losses) REJECT("the router was created without `losses`");
    if (router->info.mode != MOEVK_MODE_TOKEN)
        REJECT("losses and their gradients cover the TOKEN mode only");
    if (router->use_addresses)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "losses need the router's buffers within maxStorageBufferRange");
    if (router->route != ROUTE_RUN) REJECT("losses need a route run by moevk_route first");
    const float coefs[6] = {info->aux_coef,  info->z_coef,       info->importance_coef,
                            info->load_coef, info->entropy_coef, info->sequence_coef};
    for (int i = 0; i < 6; ++i)
        if (!isfinite(coefs[i])) REJECT("loss coefficients must be finite");
    if (info->load_coef != 0.0f &&
        (last->noise_kind != MOEVK_NOISE_GAUSSIAN || !router->last_noise_std_positive))
        REJECT("the load loss needs the route's Gaussian noise with a std > 0 (every expert's "
               "noise_std > 0; a learned std's noise_epsilon > 0)");
    uint64_t T = last->num_tokens, E = router->info.num_experts, k = router->info.top_k;
    if (info->sequence_coef != 0.0f &&
        (info->sequence_length == 0 || T % info->sequence_length != 0))
        REJECT("sequence_length is %u; T = %llu must be a positive multiple of it",
               info->sequence_length, (unsigned long long)T);
    if (info->grad_weights && info->grad_weights_buffer)
        REJECT("give grad_weights or grad_weights_buffer, not both");
    if (info->grad_weights_buffer && info->grad_weights_buffer->size < T * k * 4)
        REJECT("grad_weights_buffer holds %llu bytes; [T, k] f32 needs %llu",
               (unsigned long long)info->grad_weights_buffer->size,
               (unsigned long long)(T * k * 4));
    int grad_combined = info->grad_combined || info->grad_combined_buffer;
    if (grad_combined && router->combine != COMBINE_RUN)
        REJECT("grad_combined needs moevk_combine (or moevk_combine_buffers) after the route");
    uint64_t combined_bytes = T * router->info.hidden_size * dtype_bytes(router->info.hidden_type);
    if (info->grad_combined && info->grad_combined_buffer)
        REJECT("give grad_combined or grad_combined_buffer, not both");
    if (info->grad_combined_buffer && info->grad_combined_buffer->size < combined_bytes)
        REJECT("grad_combined_buffer holds %llu bytes; [T, d] needs %llu",
               (unsigned long long)info->grad_combined_buffer->size,
               (unsigned long long)combined_bytes);
    if (info->grad_noise_std && !(last->flags & FLAG_NOISE_STD_PER_EXPERT))
        REJECT("grad_noise_std needs a route given noise_std (Gaussian noise per expert)");
    if (info->grad_noise_weights && !(last->flags & FLAG_NOISE_STD_LEARNED))
        REJECT("grad_noise_weights needs a route with learned_noise");
    if (grad_logits_buffer && grad_logits_buffer->size < T * E * 4)
        REJECT("grad_logits_buffer holds %llu bytes; [T, E] f32 needs %llu",
               (unsigned long long)grad_logits_buffer->size, (unsigned long long)(T * E * 4));
    return MOEVK_SUCCESS;
}

/* cv2(v) = var(v) / (mean(v)^2 + 1e-10), population variance, in double. */
static double cv2(const float *values, uint32_t n) {
    double mean = 0.0, variance = 0.0;
    for (uint32_t i = 0; i < n; ++i) mean += values[i];
    mean /= n;
    for (uint32_t i = 0; i < n; ++i) variance += (values[i] - mean) * (values[i] - mean);
    variance /= n;
    return variance / (mean * mean + 1e-10);
}

static void fill_losses(const moevk_router *router, const moevk_loss_info *info,
                        const float *loss_totals, const uint32_t *expert_info,
                        const float *stat_totals, moevk_losses *losses) {
    const route_plan *last = &router->last;
    uint32_t E = router->info.num_experts, k = router->info.top_k;
    moevk_route_stats stats;
    route_fill_stats(router, last, expert_info, stat_totals, NULL, &stats);
    memset(losses, 0, sizeof *losses);
    losses->aux = stats.aux_loss;
    losses->z = stats.z_loss;
    losses->entropy = stats.entropy;
    if (router->last_valid_rows > 0) {
        losses->importance = cv2(loss_totals + LOSS_TOTAL_IMPORTANCE * E, E);
        if (info->load_coef != 0.0f) losses->load = cv2(loss_totals + LOSS_TOTAL_LOAD * E, E);
    }
    if (info->sequence_coef != 0.0f && last->num_tokens > 0) {
        uint32_t S = info->sequence_length, sequences = last->num_tokens / S;
        double sum = 0.0;
        for (uint32_t b = 0; b < sequences; ++b) sum += loss_totals[LOSS_TOTAL_SEQUENCES * E + b];
        losses->sequence = sum * E / ((double)k * S * S * sequences);
    }
    losses->total = info->aux_coef * losses->aux + info->z_coef * losses->z +
                    info->importance_coef * losses->importance + info->load_coef * losses->load +
                    info->entropy_coef * losses->entropy + info->sequence_coef * losses->sequence;
}

moevk_result moevk_router_losses(moevk_router *router, const moevk_loss_info *info,
                                 moevk_losses *losses, float *grad_logits,
                                 moevk_buffer *grad_logits_buffer) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_result r = router_settle(router);
    if (r != MOEVK_SUCCESS) return r;
    r = check_losses(router, info, grad_logits_buffer);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_router_info *options = &router->info;
    uint64_t E = options->num_experts, k = options->top_k;
    route_plan params = router->last;
    uint64_t T = params.num_tokens;
    params.aux_coef = info->aux_coef;
    params.z_coef = info->z_coef;
    params.importance_coef = info->importance_coef;
    params.load_coef = info->load_coef;
    params.entropy_coef = info->entropy_coef;
    params.sequence_coef = info->sequence_coef;
    params.sequence_length = info->sequence_coef != 0.0f ? info->sequence_length : 1;
    params.valid_rows = router->last_valid_rows;
    params.assignments = (uint32_t)router->last_assignments;
    int grad_weights = info->grad_weights || info->grad_weights_buffer;
    int grad_combined = info->grad_combined || info->grad_combined_buffer;
    if (grad_weights) params.flags |= FLAG_GRAD_WEIGHTS;
    if (grad_combined) params.flags |= FLAG_GRAD_COMBINED;
    int grad_noise = info->grad_noise_std || info->grad_noise_weights;
    if (grad_noise) params.flags |= FLAG_GRAD_NOISE;
    int logits_backward = grad_logits || grad_logits_buffer || grad_noise;
    loss_phases phases = {.thresholds = info->load_coef != 0.0f,
                          .cv2_slopes = logits_backward &&
                                        (info->importance_coef != 0.0f || info->load_coef != 0.0f),
                          .sequences = info->sequence_coef != 0.0f,
                          .weights_backward = grad_combined,
                          .logits_backward = logits_backward,
                          .noise_slope = info->grad_noise_weights != NULL,
                          .noise_reduce = grad_noise};

    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    if (info->grad_weights_buffer)
        transfer_device_copy(plan, BINDING_GRAD_WEIGHTS, info->grad_weights_buffer, T * k * 4, 1);
    else if (info->grad_weights)
        transfer_upload(plan, BINDING_GRAD_WEIGHTS, info->grad_weights, T * k * 4);
    uint64_t combined_bytes = T * options->hidden_size * dtype_bytes(options->hidden_type);
    if (info->grad_combined_buffer)
        transfer_device_copy(plan, BINDING_COMBINED, info->grad_combined_buffer, combined_bytes, 1);
    else if (info->grad_combined)
        transfer_upload(plan, BINDING_COMBINED, info->grad_combined, combined_bytes);
    transfer_uploads_done(plan);
    record_losses(router, &params, &phases);
    if (grad_logits_buffer)
        transfer_copy_out(plan, BINDING_GRAD_LOGITS, grad_logits_buffer, T * E * 4);
    if (grad_logits) transfer_download(plan, BINDING_GRAD_LOGITS, grad_logits, T * E * 4);
    transfer_download(plan, BINDING_LOSS_TOTALS, NULL, (LOSS_TOTAL_SEQUENCES * E + T) * 4);
    transfer_download(plan, BINDING_EXPERT_INFO, NULL, (3 * E + 1) * 4);
    transfer_download(plan, BINDING_STAT_TOTALS, NULL, (E + STAT_SCALARS) * 4);
    if (info->grad_noise_std)
        transfer_download(plan, BINDING_GRAD_NOISE, info->grad_noise_std, E * 4);
    if (info->grad_noise_weights)
        transfer_download(plan, BINDING_GRAD_NOISE, info->grad_noise_weights,
                          options->hidden_size * E * 4);
    /* The combined rows now hold dL/dcombined: a later combine recomputes them anyway. */
    r = transfer_submit(plan);
    if (r == MOEVK_SUCCESS) r = transfer_complete(plan, UINT64_MAX);
    if (r != MOEVK_SUCCESS) return r;
    if (T == 0) { /* no token: no phase ran, and the std's gradient is zero */
        if (info->grad_noise_std) memset(info->grad_noise_std, 0, E * 4);
        if (info->grad_noise_weights)
            memset(info->grad_noise_weights, 0, options->hidden_size * E * 4);
    }
    if (losses)
        fill_losses(router, info, transfer_downloaded(plan, BINDING_LOSS_TOTALS),
                    transfer_downloaded(plan, BINDING_EXPERT_INFO),
                    transfer_downloaded(plan, BINDING_STAT_TOTALS), losses);
    return MOEVK_SUCCESS;
}

/* The call's phases of the losses stage, each with its grid; a barrier between any two. */
void record_losses(moevk_router *router, const route_plan *params, const loss_phases *phases) {
    if (params->num_tokens == 0) return;
    uint32_t sequences = params->num_tokens / params->sequence_length;
    uint32_t sequence_groups = groups_for(sequences);
    /* Each phase that runs, with its grid and how many dispatches (the noise's reduction walks
     * TOKEN_CHUNK tokens in each); a barrier between any two. */
    const struct {
        int runs;
        uint32_t phase, groups, dispatches;
    } plan[] = {
        {phases->thresholds, LOSS_PHASE_THRESHOLDS, grid_for(router, params->num_tokens), 1},
        {1, LOSS_PHASE_PARTIALS, params->stat_blocks, 1},
        {1, LOSS_PHASE_COLUMNS, 2 * params->num_experts, 1},
        {phases->cv2_slopes, LOSS_PHASE_CV2_SLOPES, 1, 1},
        {phases->sequences, LOSS_PHASE_SEQUENCES, sequence_groups, 1},
        {phases->sequences, LOSS_PHASE_SEQUENCE_TOKENS, grid_for(router, params->num_tokens), 1},
        {phases->sequences, LOSS_PHASE_SEQUENCE_TOTALS, sequence_groups, 1},
        {phases->weights_backward, LOSS_PHASE_WEIGHTS_BACKWARD,
         grid_for(router, (uint64_t)params->num_tokens * params->choices), 1},
        {phases->logits_backward, LOSS_PHASE_LOGITS_BACKWARD, grid_for(router, params->num_tokens),
         1},
        {phases->noise_slope, LOSS_PHASE_NOISE_SLOPE,
         grid_for(router, (uint64_t)params->num_tokens * params->num_experts), 1},
        {phases->noise_reduce, LOSS_PHASE_NOISE_REDUCE,
         grid_for(router, (uint64_t)params->hidden_size * params->num_experts),
         div_ceil_u32(params->num_tokens, TOKEN_CHUNK)},
    };
    losses_params phase = losses_params_from(params);
    int first = 1;
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; ++i) {
        if (!plan[i].runs) continue;
        for (uint32_t c = 0; c < plan[i].dispatches; ++c) {
            if (!first) record_compute_barrier(router);
            first = 0;
            phase.phase = plan[i].phase;
            phase.token_chunk = c;
            record_kernel(router, STAGE_LOSSES, 0, &phase, plan[i].groups);
        }
    }
}
