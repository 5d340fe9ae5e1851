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

/* The losses' scratch and gradients, for routers made with `losses`. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (!info->losses) return;
    uint64_t T = info->max_tokens, E = info->num_experts, k = router_choices(info);
    uint64_t d = info->hidden_size;
    raise_size(&sizes[BINDING_LOSS_ROWS], T * 16);
    raise_size(&sizes[BINDING_LOSS_PARTIALS], router_max_stat_blocks(info) * 2 * E * 4);
    raise_size(&sizes[BINDING_LOSS_TOTALS], (LOSS_TOTAL_SEQUENCES * E + 2 * T + 2) * 4);
    raise_size(&sizes[BINDING_SEQ_COUNTS], T * E * 4); /* sequences of length 1 at most */
    raise_size(&sizes[BINDING_GRAD_WEIGHTS], T * k * 4);
    raise_size(&sizes[BINDING_GRAD_LOGITS], T * E * 4);
    raise_size(&sizes[BINDING_GRAD_COMBINED], T * d * dtype_bytes(info->hidden_type));
    /* dL/dstd [T, E] after the results ([E], or [d, E] for a learned std). */
    if (info->noise == MOEVK_NOISE_GAUSSIAN)
        raise_size(&sizes[BINDING_GRAD_NOISE], ((info->learned_noise ? d * E : E) + T * E) * 4);
}

/* Not part of the route: moevk_router_losses records it. */
const stage_module losses_stage = {.name = "losses",
                                   .kernels = {&LOSSES_KERNEL},
                                   .kernel_count = 1,
                                   .size_buffers = size_buffers,
                                   .needed = needed,
                                   .after = TIMESTAMP_COUNT};

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

#define LOSS_KINDS (TENSOR_NONE | TENSOR_HOST | TENSOR_BUFFER)
#define RECORD_KINDS (TENSOR_NONE | TENSOR_VULKAN)

static moevk_result check_losses(const moevk_router *router, const moevk_loss_info *info,
                                 const moevk_tensor *grad_logits, int recording) {
    moevk_context *context = router->context;
    const route_plan *last = &router->last;
    if (!router->info.losses) REJECT("the router was created without `losses`");
    if (router->info.mode != MOEVK_MODE_TOKEN)
        REJECT("losses and their gradients cover the TOKEN mode only");
    if (router->use_addresses)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "losses need the router's buffers within maxStorageBufferRange");
    if (!recording && router->route != ROUTE_RUN)
        REJECT("losses need a route run by moevk_route first (moevk_router_losses_record follows "
               "a recorded one)");
    if (recording && router->route != ROUTE_RECORDED)
        REJECT("recorded losses need a route recorded by moevk_route_record first");
    const float coefs[6] = {info->aux_coef,  info->z_coef,       info->importance_coef,
                            info->load_coef, info->entropy_coef, info->sequence_coef};
    for (int i = 0; i < 6; ++i)
        if (!isfinite(coefs[i])) REJECT("loss coefficients must be finite");
    if (info->load_coef != 0.0f && router->info.bias_on_scores)
        REJECT("the load loss compares noisy logits with logit-space keys: not with "
               "bias_on_scores");
    if (info->load_coef != 0.0f &&
        (last->noise_kind != MOEVK_NOISE_GAUSSIAN || !router->last_noise_std_positive))
        REJECT("the load loss needs the route's Gaussian noise with a std > 0 (every expert's "
               "noise_std > 0; a learned std's noise_epsilon > 0)");
    uint64_t T = last->num_tokens, E = router->info.num_experts, k = router->info.top_k;
    uint64_t d = router->info.hidden_size;
    if (info->sequence_coef != 0.0f &&
        (info->sequence_length == 0 || T % info->sequence_length != 0))
        REJECT("sequence_length is %u; T = %llu must be a positive multiple of it",
               info->sequence_length, (unsigned long long)T);
    const struct {
        const char *name;
        const moevk_tensor *tensor;
        uint64_t bytes;
    } tensors[] = {
        {"grad_weights", &info->grad_weights, T * k * 4},
        {"grad_combined", &info->grad_combined, T * d * dtype_bytes(router->info.hidden_type)},
        {"grad_noise_std", &info->grad_noise_std, E * 4},
        {"grad_noise_weights", &info->grad_noise_weights, d * E * 4},
        {"grad_logits", grad_logits, T * E * 4},
    };
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; ++i) {
        moevk_result r = tensor_check(context, tensors[i].name, tensors[i].tensor,
                                      recording ? RECORD_KINDS : LOSS_KINDS, tensors[i].bytes);
        if (r != MOEVK_SUCCESS) return r;
    }
    if (tensor_given(&info->grad_combined) &&
        router->combine != (recording ? COMBINE_RECORDED : COMBINE_RUN))
        REJECT("grad_combined needs the route's combine (moevk_combine, or "
               "moevk_combine_record before recorded losses)");
    if (tensor_given(&info->grad_noise_std) && !(last->flags & FLAG_NOISE_STD_PER_EXPERT))
        REJECT("grad_noise_std needs a route given noise_std (Gaussian noise per expert)");
    if (tensor_given(&info->grad_noise_weights) && !(last->flags & FLAG_NOISE_STD_LEARNED))
        REJECT("grad_noise_weights needs a route with learned_noise");
    return MOEVK_SUCCESS;
}

double losses_cv2(const float *values, uint32_t n) {
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
    moevk_losses_init(losses);
    losses->aux = stats.aux_loss;
    losses->z = stats.z_loss;
    losses->entropy = stats.entropy;
    if (last->num_tokens > stats.nonfinite_rows + stats.masked_rows) { /* valid rows */
        losses->importance = losses_cv2(loss_totals + LOSS_TOTAL_IMPORTANCE * E, E);
        if (info->load_coef != 0.0f)
            losses->load = losses_cv2(loss_totals + LOSS_TOTAL_LOAD * E, E);
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

/* One losses call, planned: the caller's info as this library's struct, the push constants'
 * plan and the phases to record. */
typedef struct losses_call {
    moevk_loss_info info;
    moevk_tensor grad_logits;
    route_plan params;
    loss_phases phases;
} losses_call;

static moevk_result plan_losses(moevk_router *router, const moevk_loss_info *caller_info,
                                moevk_tensor grad_logits, int recording, losses_call *call) {
    moevk_context *context = router->context;
    moevk_result r = router_settle(router);
    if (r != MOEVK_SUCCESS) return r;
    if (!caller_info) REJECT("info must not be NULL");
    moevk_loss_info_init(&call->info);
    r = SIZED_READ(context, moevk_loss_info, caller_info, &call->info);
    if (r == MOEVK_SUCCESS) r = check_losses(router, &call->info, &grad_logits, recording);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_loss_info *info = &call->info;
    call->grad_logits = grad_logits;
    route_plan *params = &call->params;
    *params = router->last;
    params->aux_coef = info->aux_coef;
    params->z_coef = info->z_coef;
    params->importance_coef = info->importance_coef;
    params->load_coef = info->load_coef;
    params->entropy_coef = info->entropy_coef;
    params->sequence_coef = info->sequence_coef;
    params->sequence_length = info->sequence_coef != 0.0f ? info->sequence_length : 1;
    params->batch_sequences = params->num_tokens / params->sequence_length;
    params->valid_rows = router->last_valid_rows;
    params->assignments = (uint32_t)router->last_assignments;
    params->token_chunk = 0;
    /* A recorded route's statistics are on the device alone: the losses read them there. */
    if (recording) params->flags |= FLAG_COUNTS_ON_DEVICE;
    int grad_combined = tensor_given(&info->grad_combined);
    if (tensor_given(&info->grad_weights)) params->flags |= FLAG_GRAD_WEIGHTS;
    if (grad_combined) params->flags |= FLAG_GRAD_COMBINED;
    int grad_noise = tensor_given(&info->grad_noise_std) || tensor_given(&info->grad_noise_weights);
    if (grad_noise) params->flags |= FLAG_GRAD_NOISE;
    int logits_backward = tensor_given(&grad_logits) || grad_noise;
    call->phases = (loss_phases){
        .counts = recording,
        .thresholds = info->load_coef != 0.0f,
        .cv2_slopes = logits_backward && (info->importance_coef != 0.0f || info->load_coef != 0.0f),
        .sequences = info->sequence_coef != 0.0f,
        .weights_backward = grad_combined,
        .logits_backward = logits_backward,
        .noise_slope = tensor_given(&info->grad_noise_weights),
        .noise_reduce = grad_noise};
    return MOEVK_SUCCESS;
}

/* The phases, and the std's zero gradient when no phase runs. */
static void record_call(moevk_router *router, const losses_call *call) {
    record_losses(router, &call->params, &call->phases);
    int grad_noise =
        tensor_given(&call->info.grad_noise_std) || tensor_given(&call->info.grad_noise_weights);
    if (call->params.num_tokens == 0 && grad_noise) {
        router->context->vk.vkCmdFillBuffer(
            router->recording, router->buffers[BINDING_GRAD_NOISE].buffer, 0, VK_WHOLE_SIZE, 0);
        record_barrier(router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                       VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                       VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_SHADER_READ_BIT);
    }
}

moevk_result moevk_router_losses_submit(moevk_router *router, const moevk_loss_info *caller_info,
                                        moevk_losses *caller_losses, moevk_tensor grad_logits) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    losses_call call;
    moevk_result r = plan_losses(router, caller_info, grad_logits, 0, &call);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_loss_info *info = &call.info;
    const moevk_router_info *options = &router->info;
    uint64_t E = options->num_experts, k = options->top_k, d = options->hidden_size;
    uint64_t T = call.params.num_tokens;
    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    tensor_upload(plan, BINDING_GRAD_WEIGHTS, &info->grad_weights, T * k * 4);
    tensor_upload(plan, BINDING_GRAD_COMBINED, &info->grad_combined,
                  T * d * dtype_bytes(options->hidden_type));
    transfer_uploads_done(plan);
    record_call(router, &call);
    /* Device outputs first, copied on the device; then the host's, copied out at the wait. */
    const struct {
        int binding;
        const moevk_tensor *tensor;
        uint64_t bytes;
    } outputs[] = {{BINDING_GRAD_LOGITS, &call.grad_logits, T * E * 4},
                   {BINDING_GRAD_NOISE, &info->grad_noise_std, E * 4},
                   {BINDING_GRAD_NOISE, &info->grad_noise_weights, d * E * 4}};
    for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; ++i)
        if (outputs[i].tensor->kind == MOEVK_TENSOR_BUFFER)
            tensor_download(plan, outputs[i].binding, 0, outputs[i].tensor, outputs[i].bytes);
    for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; ++i)
        if (outputs[i].tensor->kind == MOEVK_TENSOR_HOST)
            tensor_download(plan, outputs[i].binding, 0, outputs[i].tensor, outputs[i].bytes);
    transfer_download(plan, BINDING_LOSS_TOTALS, NULL, (LOSS_TOTAL_SEQUENCES * E + T) * 4);
    transfer_download(plan, BINDING_EXPERT_INFO, NULL, (3 * E + 1) * 4);
    transfer_download(plan, BINDING_STAT_TOTALS, NULL, (E + STAT_SCALARS) * 4);
    r = transfer_submit(plan);
    if (r != MOEVK_SUCCESS) return r;
    router->pending = PENDING_LOSSES;
    router->pending_losses = caller_losses;
    router->losses_info = call.info;
    return MOEVK_SUCCESS;
}

moevk_result losses_plan_for_layer(moevk_router *router, const moevk_loss_info *caller_info,
                                   route_plan *params, loss_phases *phases, moevk_loss_info *info) {
    moevk_context *context = router->context;
    losses_call call;
    moevk_result r = plan_losses(router, caller_info, (moevk_tensor){0}, 0, &call);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_loss_info *given = &call.info;
    if (tensor_given(&given->grad_weights) || tensor_given(&given->grad_combined) ||
        tensor_given(&given->grad_noise_std) || tensor_given(&given->grad_noise_weights))
        REJECT("a layer's backward gives the losses their dL/dweights: their tensors must be NONE");
    *params = call.params;
    params->flags |= FLAG_GRAD_WEIGHTS; /* written on the device by the combine's backward */
    *phases = call.phases;
    phases->logits_backward = 1;
    phases->cv2_slopes = given->importance_coef != 0.0f || given->load_coef != 0.0f;
    *info = call.info;
    return MOEVK_SUCCESS;
}

void losses_download(transfer_plan *plan, const moevk_router *router) {
    uint64_t E = router->info.num_experts, T = router->last.num_tokens;
    transfer_download(plan, BINDING_LOSS_TOTALS, NULL, (LOSS_TOTAL_SEQUENCES * E + T) * 4);
    transfer_download(plan, BINDING_EXPERT_INFO, NULL, (3 * E + 1) * 4);
    transfer_download(plan, BINDING_STAT_TOTALS, NULL, (E + STAT_SCALARS) * 4);
}

void losses_values(const moevk_router *router, const moevk_loss_info *info,
                   const transfer_plan *plan, moevk_losses *caller_losses) {
    moevk_losses losses;
    fill_losses(router, info, transfer_downloaded(plan, BINDING_LOSS_TOTALS),
                transfer_downloaded(plan, BINDING_EXPERT_INFO),
                transfer_downloaded(plan, BINDING_STAT_TOTALS), &losses);
    SIZED_WRITE(moevk_losses, caller_losses, &losses);
}

void losses_complete(moevk_router *router) {
    const transfer_plan *plan = &router->pending_plan;
    if (!router->pending_losses) return;
    moevk_losses losses;
    fill_losses(router, &router->losses_info, transfer_downloaded(plan, BINDING_LOSS_TOTALS),
                transfer_downloaded(plan, BINDING_EXPERT_INFO),
                transfer_downloaded(plan, BINDING_STAT_TOTALS), &losses);
    SIZED_WRITE(moevk_losses, router->pending_losses, &losses);
}

moevk_result moevk_router_losses(moevk_router *router, const moevk_loss_info *info,
                                 moevk_losses *losses, moevk_tensor grad_logits) {
    moevk_result r = moevk_router_losses_submit(router, info, losses, grad_logits);
    return r == MOEVK_SUCCESS ? moevk_router_wait(router, UINT64_MAX) : r;
}

moevk_result moevk_router_losses_record(moevk_router *router, VkCommandBuffer command_buffer,
                                        const moevk_loss_info *caller_info,
                                        moevk_tensor grad_logits) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (!command_buffer) REJECT("command_buffer must not be NULL");
    losses_call call;
    moevk_result r = plan_losses(router, caller_info, grad_logits, 1, &call);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_loss_info *info = &call.info;
    if (tensor_given(&info->grad_noise_std) || tensor_given(&info->grad_noise_weights))
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "the std's gradient needs a std a recorded route cannot take (per "
                            "expert, or learned): use moevk_router_losses");
    const moevk_router_info *options = &router->info;
    uint64_t T = call.params.num_tokens, E = options->num_experts, k = options->top_k;
    uint64_t d = options->hidden_size;
    external_binding bindings[] = {
        {BINDING_GRAD_WEIGHTS, &info->grad_weights, T * k * 4, "grad_weights"},
        {BINDING_GRAD_COMBINED, &info->grad_combined, T * d * dtype_bytes(options->hidden_type),
         "grad_combined"},
        {BINDING_GRAD_LOGITS, &call.grad_logits, T * E * 4, "grad_logits"},
    };
    r = external_begin(router, command_buffer, bindings, 3);
    if (r != MOEVK_SUCCESS) return r;
    record_call(router, &call);
    router->losses_info = call.info;
    router->losses_recorded = 1;
    return MOEVK_SUCCESS;
}

moevk_result moevk_router_losses_read(moevk_router *router, moevk_losses *caller_losses) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (!caller_losses) REJECT("losses must not be NULL");
    moevk_result r = router_settle(router);
    if (r != MOEVK_SUCCESS) return r;
    if (!router->losses_recorded) REJECT("no losses have been recorded since the last route");
    uint32_t E = router->info.num_experts, T = router->last.num_tokens;
    /* Sized for the largest router moevk takes: T up to max_tokens is read from the buffer. */
    uint32_t expert_info[3 * MOEVK_MAX_EXPERTS + 1];
    float stat_totals[MOEVK_MAX_EXPERTS + STAT_SCALARS];
    uint64_t totals_bytes = ((uint64_t)LOSS_TOTAL_SEQUENCES * E + T) * 4;
    float *loss_totals = context_alloc(context, totals_bytes);
    if (!loss_totals) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "loss totals");
    r = gpu_buffer_host_copy(context, &router->buffers[BINDING_LOSS_TOTALS], 0, loss_totals,
                             totals_bytes, 0);
    if (r == MOEVK_SUCCESS)
        r = gpu_buffer_host_copy(context, &router->buffers[BINDING_EXPERT_INFO], 0, expert_info,
                                 (3 * (uint64_t)E + 1) * 4, 0);
    if (r == MOEVK_SUCCESS)
        r = gpu_buffer_host_copy(context, &router->buffers[BINDING_STAT_TOTALS], 0, stat_totals,
                                 ((uint64_t)E + STAT_SCALARS) * 4, 0);
    if (r == MOEVK_SUCCESS) {
        moevk_losses losses;
        fill_losses(router, &router->losses_info, loss_totals, expert_info, stat_totals, &losses);
        SIZED_WRITE(moevk_losses, caller_losses, &losses);
    }
    host_free(context->allocator, loss_totals);
    return r;
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
        {phases->counts, LOSS_PHASE_COUNTS, 1, 1},
        {phases->thresholds, LOSS_PHASE_THRESHOLDS, grid_for(router, params->num_tokens), 1},
        {phases->load_terms, LOSS_PHASE_LOAD_TERMS,
         grid_for(router, (uint64_t)params->num_tokens * params->num_experts), 1},
        {!phases->totals_given, LOSS_PHASE_PARTIALS, params->stat_blocks, 1},
        {!phases->totals_given, LOSS_PHASE_COLUMNS, 2 * params->num_experts, 1},
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
