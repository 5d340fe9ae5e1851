/* Routers: options checked once, every buffer and pipeline made at creation for max_tokens,
 * so that a route call allocates nothing. Also the per-call plan (capacity, block partition). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "stage.h"

/* Bucketing partitions its work into at most this many blocks, so that its per-block table has
 * a fixed size; the statistics into about as many, unless a block's rows would pass the loop
 * budget (stat_block_rows_limit). */
#define STAT_BLOCKS 1024u
#define MIN_BUCKET_BLOCK 256u
#define MIN_STAT_BLOCK 64u

/* The most rows of a statistics block: the partial sums of stats, expert_loss and losses give
 * each invocation ceil(E / 64) experts, each over the block's rows and their choices (one in
 * expert choice, whose columns are the experts), which must keep within LOOP_BUDGET. */
static uint32_t stat_block_rows_limit(const moevk_router_info *info) {
    uint32_t choices = info->mode == MOEVK_MODE_EXPERT_CHOICE ? 1 : info->top_k;
    uint32_t per_row = div_ceil_u32(info->num_experts, WORKGROUP_SIZE) * (choices + 1);
    uint32_t limit = LOOP_BUDGET / per_row;
    return limit > 1 ? limit : 1;
}

uint32_t router_stat_block_rows(const moevk_router_info *info, uint32_t num_tokens) {
    uint32_t rows = div_ceil_u32(num_tokens, STAT_BLOCKS);
    if (rows < MIN_STAT_BLOCK) rows = MIN_STAT_BLOCK;
    return rows < stat_block_rows_limit(info) ? rows : stat_block_rows_limit(info);
}

uint64_t router_max_stat_blocks(const moevk_router_info *info) {
    uint64_t limited =
        (info->max_tokens + stat_block_rows_limit(info) - 1) / stat_block_rows_limit(info);
    return limited > STAT_BLOCKS ? limited : STAT_BLOCKS;
}

void moevk_router_info_defaults(moevk_router_info *info, size_t size) {
    if (!info || size < sizeof(uint32_t)) return;
    moevk_router_info defaults;
    memset(&defaults, 0, sizeof defaults);
    defaults.temperature = 1.0f;
    defaults.scale = 1.0f;
    defaults.capacity_factor = 1.25f;
    defaults.min_capacity = 4;
    defaults.noise_epsilon = 1e-2f;
    /* A newer program's fields past this library's stay zero: their defaults. */
    memset(info, 0, size);
    memcpy(info, &defaults, size < sizeof defaults ? size : sizeof defaults);
    info->struct_size = (uint32_t)size;
}

float moevk_schedule_value(const moevk_schedule *schedule, uint32_t step) {
    if (!schedule) return 0.0f;
    double start = schedule->start, end = schedule->end;
    if (schedule->steps == 0 || schedule->kind == MOEVK_SCHEDULE_CONSTANT) return (float)start;
    double progress = (double)(step < schedule->steps ? step : schedule->steps) / schedule->steps;
    if (schedule->kind == MOEVK_SCHEDULE_LINEAR) return (float)(start + (end - start) * progress);
    return (float)(end + (start - end) * (1.0 + cos(3.14159265358979323846 * progress)) / 2.0);
}

/* An option's value at a step: its schedule's where one is set, else the plain value. */
static float scheduled(const moevk_schedule *schedule, float plain, uint32_t step) {
    return schedule->steps ? moevk_schedule_value(schedule, step) : plain;
}

static int schedule_ok(const moevk_schedule *schedule, float low, int low_inclusive, float high) {
    if (schedule->steps == 0) return 1;
    if ((unsigned)schedule->kind > MOEVK_SCHEDULE_COSINE) return 0;
    float ends[2] = {schedule->start, schedule->end};
    for (int i = 0; i < 2; ++i)
        if (!isfinite(ends[i]) || ends[i] < low || (!low_inclusive && ends[i] == low) ||
            ends[i] >= high)
            return 0;
    return 1;
}

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

moevk_result router_check_info(moevk_context *context, const moevk_router_info *info) {
    if (info->num_experts < 1 || info->num_experts > MOEVK_MAX_EXPERTS)
        REJECT("num_experts is %u; it must be 1 to %u", info->num_experts, MOEVK_MAX_EXPERTS);
    if (info->top_k < 1 || info->top_k > info->num_experts || info->top_k > MOEVK_MAX_TOP_K)
        REJECT("top_k is %u; it must be 1 to min(num_experts = %u, %u)", info->top_k,
               info->num_experts, MOEVK_MAX_TOP_K);
    if (info->logits_type != MOEVK_DTYPE_F32 && info->logits_type != MOEVK_DTYPE_F16)
        REJECT("logits_type must be F32 or F16");
    if ((unsigned)info->hidden_type > MOEVK_DTYPE_BF16) REJECT("hidden_type is not a moevk_dtype");
    if ((unsigned)info->score > MOEVK_SCORE_SIGMOID) REJECT("score is not a moevk_score_func");
    if (!isfinite(info->temperature) || info->temperature <= 0.0f)
        REJECT("temperature is %g; it must be finite and > 0", (double)info->temperature);
    if (!isfinite(info->scale)) REJECT("scale must be finite");
    if ((unsigned)info->capacity_mode > MOEVK_CAPACITY_DROPLESS)
        REJECT("capacity_mode is not a moevk_capacity_mode");
    if (!isfinite(info->capacity_factor) || info->capacity_factor < 0.0f)
        REJECT("capacity_factor is %g; it must be finite and >= 0", (double)info->capacity_factor);
    if (info->min_capacity < 0) REJECT("min_capacity is %d; it must be >= 0", info->min_capacity);
    if (info->capacity_mode == MOEVK_CAPACITY_FIXED && info->capacity < 0)
        REJECT("capacity is %d; it must be >= 0", info->capacity);
    if ((unsigned)info->drop_policy > MOEVK_DROP_SCORE)
        REJECT("drop_policy is not a moevk_drop_policy");
    if ((unsigned)info->noise > MOEVK_NOISE_GUMBEL) REJECT("noise is not a moevk_noise_kind");
    if (info->noise != MOEVK_NOISE_NONE &&
        (!isfinite(info->noise_amount) || info->noise_amount < 0.0f ||
         (info->noise == MOEVK_NOISE_JITTER && info->noise_amount >= 1.0f)))
        REJECT("noise_amount is %g; it must be finite, >= 0, and below 1 for jitter",
               (double)info->noise_amount);
    float noise_high = info->noise == MOEVK_NOISE_JITTER ? 1.0f : INFINITY;
    if (!schedule_ok(&info->noise_schedule, 0.0f, 1, noise_high))
        REJECT("noise_schedule: a kind, and ends finite, >= 0 (below 1 for jitter), are needed");
    if (!schedule_ok(&info->temperature_schedule, 0.0f, 0, INFINITY))
        REJECT("temperature_schedule: a kind, and ends finite and > 0, are needed");
    if (info->num_groups > 1) {
        uint32_t G = info->num_groups;
        if (G > MAX_GROUPS || info->num_experts % G != 0)
            REJECT("num_groups is %u; it must divide num_experts = %u and be at most %u", G,
                   info->num_experts, MAX_GROUPS);
        if (info->topk_groups < 1 || info->topk_groups > G)
            REJECT("topk_groups is %u; it must be 1 to num_groups = %u", info->topk_groups, G);
        if (info->top_k > info->topk_groups * (info->num_experts / G))
            REJECT("top_k = %u is more than the %u experts of %u kept groups", info->top_k,
                   info->topk_groups * (info->num_experts / G), info->topk_groups);
    }
    if (!isfinite(info->eval_capacity_factor) || info->eval_capacity_factor < 0.0f)
        REJECT("eval_capacity_factor is %g; it must be finite and >= 0",
               (double)info->eval_capacity_factor);
    if (!schedule_ok(&info->capacity_factor_schedule, 0.0f, 1, INFINITY))
        REJECT("capacity_factor_schedule: a kind, and ends finite and >= 0, are needed");
    if ((unsigned)info->mode > MOEVK_MODE_EXPERT_CHOICE) REJECT("mode is not a moevk_routing_mode");
    if (info->mode == MOEVK_MODE_EXPERT_CHOICE) {
        if (info->capacity_mode == MOEVK_CAPACITY_DROPLESS)
            REJECT("EXPERT_CHOICE needs a capacity: DROPLESS is refused");
        if (info->drop_policy == MOEVK_DROP_SCORE)
            REJECT("EXPERT_CHOICE drops nothing: the SCORE drop policy is refused");
        if (info->renormalize)
            REJECT("EXPERT_CHOICE weights are the scores: renormalize is refused");
    }
    if (info->mode != MOEVK_MODE_TOKEN && info->num_groups > 1)
        REJECT("group-limited routing needs the TOKEN mode");
    if (info->mode == MOEVK_MODE_SEQUENCE &&
        (info->sequence_length < 1 || info->sequence_length > (1u << 30)))
        REJECT("sequence_length is %u; SEQUENCE mode needs 1 to 2^30", info->sequence_length);
    if (info->sinkhorn_iterations > 10000)
        REJECT("sinkhorn_iterations is %u; at most 10000 (three dispatches are recorded for each)",
               info->sinkhorn_iterations);
    if (info->learned_noise) {
        if (info->noise != MOEVK_NOISE_GAUSSIAN) REJECT("learned_noise needs GAUSSIAN noise");
        if (info->hidden_size == 0) REJECT("learned_noise needs hidden_size > 0");
        if (info->mode == MOEVK_MODE_SEQUENCE || info->mode == MOEVK_MODE_BATCH)
            REJECT("learned_noise draws a std per token: not in SEQUENCE or BATCH mode");
        if (!isfinite(info->noise_epsilon) || info->noise_epsilon < 0.0f)
            REJECT("noise_epsilon is %g; it must be finite and >= 0", (double)info->noise_epsilon);
    }
    if (info->router_projection && (info->hidden_size == 0 || info->logits_type != MOEVK_DTYPE_F32))
        REJECT("router_projection needs hidden_size > 0 and F32 logits");
    if (info->bias_on_scores &&
        (info->score != MOEVK_SCORE_SIGMOID || info->mode != MOEVK_MODE_TOKEN))
        REJECT("bias_on_scores needs SIGMOID scores and the TOKEN mode (DeepSeek-V3's routing)");
    if ((unsigned)info->selection_kernel > MOEVK_SELECTION_SUBGROUP)
        REJECT("selection_kernel is not a moevk_selection_kernel");
    if (info->selection_kernel == MOEVK_SELECTION_SUBGROUP && context->info.selection_lanes == 0)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "selection_kernel SUBGROUP: this device does not offer subgroup "
                            "shuffles with subgroup size control (moevk_device_info."
                            "selection_lanes is 0)");
    if (info->choice_block_tokens > CHOICE_MAX_BLOCK_TOKENS)
        REJECT("choice_block_tokens is %u; it must be 0 (moevk's choice) to %u",
               info->choice_block_tokens, CHOICE_MAX_BLOCK_TOKENS);
    if (info->reserved_0_7 != 0) REJECT("reserved_0_7 must be zero");
    if (info->max_tokens > (1u << 30) && info->mode != MOEVK_MODE_TOKEN)
        REJECT("max_tokens is %u; the routing modes take at most 2^30 tokens", info->max_tokens);
    return MOEVK_SUCCESS;
}

static uint64_t capacity_for(const moevk_router_info *info, uint32_t num_tokens, float factor) {
    switch (info->capacity_mode) {
    case MOEVK_CAPACITY_FIXED: return (uint64_t)info->capacity;
    case MOEVK_CAPACITY_DROPLESS: return 0;
    case MOEVK_CAPACITY_FACTOR: break;
    }
    /* In double: exact for every factor a float holds and every T * k below 2^53. Experts that
     * choose share out T tokens, not T * k choices. */
    uint32_t k = info->mode == MOEVK_MODE_EXPERT_CHOICE ? 1 : info->top_k;
    double wanted = ceil((double)factor * num_tokens * k / info->num_experts);
    /* Saturate far past anything a router accepts (it refuses rows past 2^31 with TOO_LARGE);
     * a huge factor must not overflow the conversion. */
    uint64_t capacity = wanted < 1e12 ? (uint64_t)wanted : (uint64_t)1e12;
    return capacity > (uint64_t)info->min_capacity ? capacity : (uint64_t)info->min_capacity;
}

uint32_t moevk_router_capacity(const moevk_router *router, uint32_t num_tokens, uint32_t step) {
    if (!router) return 0;
    const moevk_router_info *info = &router->info;
    uint64_t capacity = capacity_for(
        info, num_tokens, scheduled(&info->capacity_factor_schedule, info->capacity_factor, step));
    return capacity > UINT32_MAX ? UINT32_MAX : (uint32_t)capacity;
}

static uint64_t max_dispatched_rows(const moevk_router_info *info) {
    if (info->capacity_mode == MOEVK_CAPACITY_DROPLESS) {
        uint64_t pad = info->pad_multiple > 1 ? info->pad_multiple : 1;
        return (uint64_t)info->max_tokens * info->top_k + (uint64_t)info->num_experts * (pad - 1);
    }
    float factor = info->capacity_factor;
    const moevk_schedule *schedule = &info->capacity_factor_schedule;
    if (schedule->steps) factor = schedule->start > schedule->end ? schedule->start : schedule->end;
    if (info->eval_capacity_factor > factor) factor = info->eval_capacity_factor;
    return capacity_for(info, info->max_tokens, factor) * info->num_experts;
}

void moevk_balancing_bias_update(float *bias, const uint32_t *counts_before, uint32_t num_experts,
                                 float rate) {
    if (!bias || !counts_before || num_experts == 0) return;
    if (rate == 0.0f) rate = 1e-3f;
    double mean = 0.0;
    for (uint32_t e = 0; e < num_experts; ++e) mean += counts_before[e];
    mean /= num_experts;
    for (uint32_t e = 0; e < num_experts; ++e) {
        double load = counts_before[e];
        bias[e] += load < mean ? rate : load > mean ? -rate : 0.0f;
    }
}

uint32_t moevk_router_choices(const moevk_router *router) {
    return router ? router_choices(&router->info) : 0;
}

uint64_t moevk_router_max_dispatched_rows(const moevk_router *router) {
    return router ? router->max_dispatched_rows : 0;
}

uint32_t moevk_router_selection_lanes(const moevk_router *router) {
    return router ? router->selection_lanes : 0;
}

void router_plan_noise(const moevk_router *router, const moevk_route_input *input,
                       route_plan *params) {
    uint32_t step = input->step, layer = input->layer;
    int inference = input->inference;
    const moevk_router_info *info = &router->info;
    /* Sinkhorn balances a training batch; inference routes each token by its own top-k, as
     * Megatron-LM does. */
    if (inference) params->flags &= ~FLAG_SINKHORN;
    if (inference || info->noise == MOEVK_NOISE_NONE) return; /* router_plan left noise off */
    params->noise_kind = (uint32_t)info->noise;
    params->noise_amount = scheduled(&info->noise_schedule, info->noise_amount, step);
    if (info->learned_noise) { /* noise_std.comp reads epsilon where the std would be */
        params->flags |= FLAG_NOISE_STD_LEARNED;
        params->noise_amount = info->noise_epsilon;
    }
    params->noise_seed_low = (uint32_t)info->noise_seed;
    params->noise_seed_high = (uint32_t)(info->noise_seed >> 32);
    params->noise_step = step;
    params->noise_layer = layer;
    params->noise_row_offset = input->noise_row_offset;
    if (info->noisy_scores) params->flags |= FLAG_NOISY_SCORES;
}

void noise_state_words(const route_plan *params, uint32_t words[NOISE_STATE_WORDS]) {
    memset(words, 0, NOISE_STATE_WORDS * sizeof words[0]);
    words[NOISE_STATE_ROW_OFFSET] = params->noise_row_offset;
    words[NOISE_STATE_STEP] = params->noise_step;
    words[NOISE_STATE_LAYER] = params->noise_layer;
    words[NOISE_STATE_SEED_LOW] = params->noise_seed_low;
    words[NOISE_STATE_SEED_HIGH] = params->noise_seed_high;
    memcpy(&words[NOISE_STATE_AMOUNT], &params->noise_amount, sizeof(float));
}

/* The capacity factor of one call: its own, else the router's for inference or training. */
static float call_capacity_factor(const moevk_router_info *info, const moevk_route_input *input) {
    if (input->capacity_factor > 0.0f) return input->capacity_factor;
    if (input->inference && info->eval_capacity_factor > 0.0f) return info->eval_capacity_factor;
    return scheduled(&info->capacity_factor_schedule, info->capacity_factor, input->step);
}

uint32_t router_call_capacity(const moevk_router_info *info, const moevk_route_input *input) {
    if (info->capacity_mode == MOEVK_CAPACITY_DROPLESS) return UINT32_MAX;
    uint64_t capacity = capacity_for(info, input->num_tokens, call_capacity_factor(info, input));
    return capacity > UINT32_MAX ? UINT32_MAX : (uint32_t)capacity;
}

moevk_result router_check_call(const moevk_router *router, const moevk_route_input *input) {
    moevk_context *context = router->context;
    const moevk_router_info *info = &router->info;
    uint64_t rows = input->num_tokens;
    if (info->mode == MOEVK_MODE_SEQUENCE && info->sequence_length > 0)
        rows = (rows + info->sequence_length - 1) / info->sequence_length;
    if (input->noise_row_offset + rows > (uint64_t)UINT32_MAX + 1)
        REJECT("noise_row_offset %u: the call's last noise row passes 32 bits",
               input->noise_row_offset);
    if (!isfinite(input->capacity_factor) || input->capacity_factor < 0.0f)
        REJECT("capacity_factor is %g; it must be finite and >= 0", (double)input->capacity_factor);
    if (info->capacity_mode != MOEVK_CAPACITY_FACTOR || input->capacity_factor == 0.0f)
        return MOEVK_SUCCESS;
    uint64_t capacity = capacity_for(info, input->num_tokens, input->capacity_factor);
    if (capacity * info->num_experts > router->max_dispatched_rows)
        REJECT("capacity_factor %g gives C = %llu, past the C = %llu the router's buffers were "
               "made for (raise the router's capacity_factor or eval_capacity_factor)",
               (double)input->capacity_factor, (unsigned long long)capacity,
               (unsigned long long)(router->max_dispatched_rows / info->num_experts));
    return MOEVK_SUCCESS;
}

void router_plan_ffn_form(route_plan *params, uint32_t ffn_tokens) {
    params->flags &= ~(uint32_t)FLAG_FFN_MATVEC;
    if (ffn_tokens <= MATVEC_ROWS) params->flags |= FLAG_FFN_MATVEC; /* decode */
}

/* A CPU runs each workgroup on one thread, with a cost per workgroup a GPU does not have: its
 * blocks are larger (bench/RESULTS.md). */
uint32_t router_choice_block_tokens(const moevk_router *router) {
    if (router->info.choice_block_tokens > 0) return router->info.choice_block_tokens;
    return router->context->info.type == VK_PHYSICAL_DEVICE_TYPE_CPU ? CHOICE_CPU_BLOCK_TOKENS
                                                                     : CHOICE_GPU_BLOCK_TOKENS;
}

void router_plan(const moevk_router *router, const moevk_route_input *input, route_plan *params) {
    const moevk_router_info *info = &router->info;
    uint32_t num_tokens = input->num_tokens, step = input->step;
    memset(params, 0, sizeof *params);
    params->num_tokens = num_tokens;
    params->num_experts = info->num_experts;
    params->choices = router_choices(info);
    params->hidden_size = info->hidden_size;
    params->temperature = scheduled(&info->temperature_schedule, info->temperature, step);
    params->scale = info->scale;
    params->pad_multiple = info->pad_multiple > 1 ? info->pad_multiple : 1;
    params->flags = (info->renormalize ? FLAG_RENORMALIZE : 0) |
                    (info->score == MOEVK_SCORE_SIGMOID ? FLAG_SIGMOID : 0) |
                    (info->bias_on_scores ? FLAG_BIAS_ON_SCORES : 0);
    if (info->mode == MOEVK_MODE_SEQUENCE || info->mode == MOEVK_MODE_BATCH) {
        params->flags |= FLAG_SEQUENCE_DECISIONS;
        params->mode_param = info->mode == MOEVK_MODE_BATCH ? (num_tokens > 0 ? num_tokens : 1)
                                                            : info->sequence_length;
    }
    if (info->mode == MOEVK_MODE_EXPERT_CHOICE) {
        params->flags |= FLAG_EXPERT_CHOICE;
        params->choice_block_tokens = router_choice_block_tokens(router);
    }
    if (info->mode == MOEVK_MODE_SINKHORN) {
        params->flags |= FLAG_SINKHORN;
        params->mode_param = info->sinkhorn_iterations ? info->sinkhorn_iterations : 100;
    }
    if (info->capacity_mode == MOEVK_CAPACITY_DROPLESS) {
        params->flags |= FLAG_DROPLESS;
        params->capacity = UINT32_MAX;
        params->dispatched_rows = (uint32_t)router->max_dispatched_rows;
    } else {
        params->capacity = router_call_capacity(info, input);
        params->dispatched_rows = params->capacity * info->num_experts;
        if (info->drop_policy == MOEVK_DROP_SCORE) params->flags |= FLAG_DROP_BY_SCORE;
    }
    uint32_t assignments = num_tokens * params->choices;
    uint32_t block = div_ceil_u32(assignments, MAX_BUCKET_BLOCKS);
    block = div_ceil_u32(block, WORKGROUP_SIZE) * WORKGROUP_SIZE;
    params->block_size = block > MIN_BUCKET_BLOCK ? block : MIN_BUCKET_BLOCK;
    params->num_blocks = div_ceil_u32(assignments, params->block_size);
    /* Few blocks: top-k counts them, the assignment scans them (FUSED_FRONT_END_WORK). */
    uint64_t scan_work = (uint64_t)params->num_blocks * params->num_blocks * info->num_experts;
    if (num_tokens > 0 && !(params->flags & FLAG_EXPERT_CHOICE) &&
        scan_work <= FUSED_FRONT_END_WORK)
        params->flags |= FLAG_FUSED_FRONT_END;
    params->rows_per_stat_block = router_stat_block_rows(info, num_tokens);
    params->stat_blocks = div_ceil_u32(num_tokens, params->rows_per_stat_block);
    const layer_shape *layer = &router->layer;
    if (layer->active) {
        params->intermediate_size = layer->intermediate_size;
        params->shared_intermediate_size = layer->shared_intermediate_size;
        params->flags |= (layer->biases ? FLAG_FFN_BIASES : 0) |
                         (layer->shared_intermediate_size ? FLAG_SHARED_EXPERT : 0) |
                         (layer->shared_gate ? FLAG_SHARED_GATE : 0) |
                         (layer->trainable ? FLAG_KEEP_PRE : 0);
        router_plan_ffn_form(params, num_tokens);
        /* Where the gate's pre-activations start in the backward's buffers. */
        params->grad_pre_stride =
            (uint32_t)(router->max_dispatched_rows * layer->intermediate_size);
        params->shared_pre_stride = info->max_tokens * layer->shared_intermediate_size;
    }
    if (router->use_addresses) {
        params->logits_address = router->buffers[BINDING_LOGITS].address;
        params->hidden_address = router->buffers[BINDING_HIDDEN].address;
        params->dispatched_address = router->buffers[BINDING_DISPATCHED].address;
        params->expert_out_address = router->buffers[BINDING_EXPERT_OUT].address;
        params->combined_address = router->buffers[BINDING_COMBINED].address;
    }
}

/* Bytes of each binding for max_tokens; 0 where the router has no use for it (a minimal buffer
 * is bound there). Here the buffers a route's stages share; each stage module sizes the ones it
 * owns (stage_module.size_buffers). */
static void binding_sizes(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    uint64_t T = info->max_tokens, E = info->num_experts, k = router_choices(info);
    uint64_t d = info->hidden_size, eb = dtype_bytes(info->hidden_type);
    uint64_t rows = router->max_dispatched_rows;
    for (int i = 0; i < BINDING_COUNT; ++i) sizes[i] = 0;
    sizes[BINDING_LOGITS] = T * E * dtype_bytes(info->logits_type);
    sizes[BINDING_BIAS] = E * 4;
    sizes[BINDING_EXPERT_IDS] = sizes[BINDING_WEIGHTS] = T * k * 4;
    sizes[BINDING_SLOTS] = sizes[BINDING_ROWS] = T * k * 4;
    sizes[BINDING_ROW_STATS] = sizes[BINDING_ROW_MEASURES] = T * 16;
    sizes[BINDING_ROW_FLAGS] = T * 4;
    sizes[BINDING_EXPERT_INFO] = (3 * E + 1) * 4;
    sizes[BINDING_ROW_TOKEN] = rows * 4;
    sizes[BINDING_HIDDEN] = sizes[BINDING_COMBINED] = T * d * eb;
    sizes[BINDING_DISPATCHED] = sizes[BINDING_EXPERT_OUT] = rows * d * eb;
    /* The modes' scratch starts with its header, which every Sinkhorn route downloads. */
    sizes[BINDING_DECISIONS] = DECISION_HEADER * 4;
    sizes[BINDING_NOISE_STD] = info->noise == MOEVK_NOISE_GAUSSIAN ? E * 4 : 0;
    sizes[BINDING_NOISE_STATE] = NOISE_STATE_WORDS * 4;
    for (int s = 0; s < STAGE_COUNT; ++s)
        if (STAGE_MODULES[s]->size_buffers) STAGE_MODULES[s]->size_buffers(router, sizes);
}

static const char *const BINDING_NAMES[BINDING_COUNT] = {
    "logits",
    "bias",
    "expert ids",
    "weights",
    "row stats",
    "row flags",
    "block counts",
    "expert info",
    "slots",
    "rows",
    "row tokens",
    "order",
    "hidden states",
    "dispatched rows",
    "expert outputs",
    "combined outputs",
    "stat partials",
    "stat totals",
    "loss rows",
    "loss partials",
    "loss totals",
    "sequence counts",
    "dL/dweights",
    "dL/dlogits",
    "routing decisions",
    "noise std",
    "noise weights",
    "per-expert loss",
    "dL/dstd",
    "compacted rows",
    "router weights",
    "dL/dcombined",
    "experts' gate weights",
    "experts' up weights",
    "experts' down weights",
    "experts' biases",
    "experts' activations",
    "expert tiles",
    "shared experts' gate weights",
    "shared experts' up weights",
    "shared experts' down weights",
    "shared experts' biases",
    "shared experts' activations",
    "shared experts' outputs",
    "shared expert gate",
    "shared expert scales",
    "token scores",
    "profile measures",
    "profile counts",
    "row measures",
    "dL/doutput",
    "dL/d(expert outputs)",
    "pre-activations and their gradients",
    "dL/d(dispatched rows)",
    "dL/dhidden",
    "dL/d(experts' gate weights)",
    "dL/d(experts' up weights)",
    "dL/d(experts' down weights)",
    "dL/d(experts' biases)",
    "dL/drouter weights",
    "master weights",
    "first moments",
    "second moments",
    "gradient norm partials",
    "shared pre-activations and their gradients",
    "dL/d(shared experts' gate weights)",
    "dL/d(shared experts' up weights)",
    "dL/d(shared experts' down weights)",
    "dL/d(shared experts' biases)",
    "dL/d(shared expert gate)",
    "dL/dz of the shared expert gate",
    "noise state"};

/* The buffers that grow with d or E: reachable through device addresses past the range limit. */
static int is_large_binding(int binding) {
    return binding == BINDING_LOGITS || binding == BINDING_HIDDEN ||
           binding == BINDING_DISPATCHED || binding == BINDING_EXPERT_OUT ||
           binding == BINDING_COMBINED;
}

/* Shaders index the large buffers by element in 32 bits: at most 2^32 elements each (16 GiB of
 * f32, 8 GiB of 16-bit values). */
static uint64_t max_addressed_bytes(const moevk_router_info *info, int binding) {
    moevk_dtype type = binding == BINDING_LOGITS ? info->logits_type : info->hidden_type;
    return ((uint64_t)1 << 32) * dtype_bytes(type);
}

static moevk_result check_sizes(moevk_context *context, moevk_router *router,
                                const uint64_t sizes[BINDING_COUNT]) {
    uint64_t range = context->limits.maxStorageBufferRange;
    uint64_t binding_limit =
        router->info.max_binding_bytes && router->info.max_binding_bytes < range
            ? router->info.max_binding_bytes
            : range;
    router->use_addresses = 0;
    for (int i = 0; i < BINDING_COUNT; ++i)
        if (is_large_binding(i) && sizes[i] > binding_limit) router->use_addresses = 1;
    if (router->use_addresses && !context->info.buffer_device_address)
        router->use_addresses = 0; /* then the sizes below are refused with a clear message */
    for (int i = 0; i < BINDING_COUNT; ++i) {
        if (is_large_binding(i) && sizes[i] > max_addressed_bytes(&router->info, i))
            return context_fail(context, MOEVK_ERROR_TOO_LARGE,
                                "the %s buffer needs %llu bytes; moevk indexes at most 2^32 "
                                "elements (%llu bytes)",
                                BINDING_NAMES[i], (unsigned long long)sizes[i],
                                (unsigned long long)max_addressed_bytes(&router->info, i));
        if (router->use_addresses && is_large_binding(i)) continue;
        if (sizes[i] <= range) continue;
        uint64_t per_token = sizes[i] / (router->info.max_tokens ? router->info.max_tokens : 1);
        uint64_t fits = per_token ? range / per_token : 0;
        return context_fail(
            context, MOEVK_ERROR_TOO_LARGE,
            "the %s buffer needs %llu bytes, past this device's "
            "maxStorageBufferRange of %llu%s; max_tokens up to about %llu fits",
            BINDING_NAMES[i], (unsigned long long)sizes[i], (unsigned long long)range,
            is_large_binding(i) ? " (and the device has no buffer device address)" : "",
            (unsigned long long)fits);
    }
    return MOEVK_SUCCESS;
}

static moevk_result create_buffers(moevk_router *router, const uint64_t sizes[BINDING_COUNT]) {
    moevk_context *context = router->context;
    for (int i = 0; i < BINDING_COUNT; ++i) {
        int addressable = router->use_addresses && is_large_binding(i);
        int weights = i == BINDING_EXPERT_GATE || i == BINDING_EXPERT_UP ||
                      i == BINDING_EXPERT_DOWN || i == BINDING_SHARED_GATE ||
                      i == BINDING_SHARED_UP || i == BINDING_SHARED_DOWN;
        int offloaded = router->layer.host_weights && weights;
        moevk_result r =
            gpu_buffer_create(context, sizes[i], offloaded ? BUFFER_HOST_RESIDENT : BUFFER_DEVICE,
                              addressable, &router->buffers[i]);
        if (r != MOEVK_SUCCESS) return r;
    }
    if (context->info.host_visible_device_memory) return MOEVK_SUCCESS;
        /* Staging holds the largest upload or download of one call; transfer.c places each
         * region at a 16-byte boundary. */
#define A16(bytes) (((bytes) + 15) & ~(uint64_t)15)
    uint64_t route_up = A16(sizes[BINDING_LOGITS]) + A16(sizes[BINDING_BIAS]) +
                        A16(sizes[BINDING_HIDDEN]) + A16(sizes[BINDING_NOISE_STD]) +
                        A16(sizes[BINDING_NOISE_WEIGHTS]) + A16(sizes[BINDING_ROUTER_WEIGHTS]) +
                        A16(PROFILE_HEADER_WORDS * 4) + A16(NOISE_STATE_WORDS * 4);
    uint64_t combine_up = A16(sizes[BINDING_EXPERT_OUT]);
    /* An expert-parallel layer's halves (layer_parts.c): the rows coming back and their map up,
     * or the rows given, their tokens and counts up and the experts' rows down. */
    uint64_t parts_up = 0, parts_down = 0;
    if (router->layer.parts == PARTS_HOME) {
        parts_up = A16(sizes[BINDING_EXPERT_OUT]) + A16(sizes[BINDING_ROWS]);
        parts_down = A16(sizes[BINDING_COMBINED]) + A16(sizes[BINDING_STAT_TOTALS]);
    } else if (router->layer.parts == PARTS_EXPERTS) {
        parts_up = A16(sizes[BINDING_HIDDEN]) + A16(sizes[BINDING_ROW_TOKEN]) +
                   A16(sizes[BINDING_EXPERT_INFO]);
        parts_down = A16(sizes[BINDING_EXPERT_OUT]);
    }
    /* Their backwards (layer_parts_backward.c): the home's dL/doutput up, the rows' shares and
     * dL/dweights down, then the rows' gradients up and dL/dx down; the experts' rows' shares
     * up and their gradients down. */
#define RAISE(to, bytes) ((to) = (to) < (bytes) ? (bytes) : (to))
    if (router->layer.trainable && router->layer.parts == PARTS_HOME) {
        RAISE(parts_up, A16(sizes[BINDING_GRAD_OUTPUT]));
        RAISE(parts_up, A16(sizes[BINDING_GRAD_ROWS]));
        RAISE(parts_down, A16(sizes[BINDING_GRAD_EXPERT_OUT]) + A16(sizes[BINDING_GRAD_WEIGHTS]));
        RAISE(parts_down, A16(sizes[BINDING_GRAD_HIDDEN]));
    } else if (router->layer.trainable && router->layer.parts == PARTS_EXPERTS) {
        RAISE(parts_up, A16(sizes[BINDING_GRAD_EXPERT_OUT]));
        RAISE(parts_down, A16(sizes[BINDING_GRAD_ROWS]));
    }
#undef RAISE
    if (combine_up < parts_up) combine_up = parts_up;
    uint64_t route_down = A16(sizes[BINDING_EXPERT_IDS]) + A16(sizes[BINDING_WEIGHTS]) +
                          A16(sizes[BINDING_SLOTS]) + A16(sizes[BINDING_EXPERT_INFO]) +
                          A16(sizes[BINDING_STAT_TOTALS]) + A16(sizes[BINDING_DISPATCHED]) +
                          A16(DECISION_HEADER * 4) + A16(sizes[BINDING_TOKEN_SCORES]) +
                          A16(sizes[BINDING_PROFILE]);
    uint64_t combine_down = A16(sizes[BINDING_COMBINED]);
    if (combine_down < parts_down) combine_down = parts_down;
    /* A layer's forward downloads its output and logits beside the route's. */
    if (router->layer.active)
        route_down += A16(sizes[BINDING_COMBINED]) + A16(sizes[BINDING_LOGITS]);
    uint64_t losses_up = A16(sizes[BINDING_GRAD_WEIGHTS]) + A16(sizes[BINDING_GRAD_COMBINED]);
    uint64_t losses_down = A16(sizes[BINDING_GRAD_LOGITS]) + A16(sizes[BINDING_LOSS_TOTALS]) +
                           A16(sizes[BINDING_STAT_TOTALS]) + A16(sizes[BINDING_EXPERT_INFO]) +
                           A16(sizes[BINDING_GRAD_NOISE]);
    /* moevk_router_expert_loss: the token loss up, its sums and the counts down. */
    uint64_t T = router->info.max_tokens, E = router->info.num_experts;
    uint64_t expert_loss_up = A16(T * 4);
    uint64_t expert_loss_down = A16((T + E) * 4) + A16(sizes[BINDING_EXPERT_INFO]);
    if (losses_up < expert_loss_up) losses_up = expert_loss_up;
    if (losses_down < expert_loss_down) losses_down = expert_loss_down;
    /* moevk_layer_backward: dL/doutput up, dL/dx and dL/dweights down. */
    uint64_t backward_up = A16(sizes[BINDING_GRAD_OUTPUT]);
    uint64_t backward_down = A16(sizes[BINDING_GRAD_HIDDEN]) + A16(sizes[BINDING_GRAD_WEIGHTS]) +
                             A16(sizes[BINDING_LOSS_TOTALS]) + A16(sizes[BINDING_EXPERT_INFO]) +
                             A16(sizes[BINDING_STAT_TOTALS]); /* with the losses' values */
    if (backward_down < A16(sizes[BINDING_OPT_PARTIALS]))     /* the optimizer's norm */
        backward_down = A16(sizes[BINDING_OPT_PARTIALS]);
    if (losses_up < backward_up) losses_up = backward_up;
    if (losses_down < backward_down) losses_down = backward_down;
#undef A16
#define MAX3(a, b, c) ((a) > (b) ? ((a) > (c) ? (a) : (c)) : ((b) > (c) ? (b) : (c)))
    moevk_result r = gpu_buffer_create(context, MAX3(route_up, combine_up, losses_up),
                                       BUFFER_UPLOAD, 0, &router->upload);
    if (r != MOEVK_SUCCESS) return r;
    return gpu_buffer_create(context, MAX3(route_down, combine_down, losses_down), BUFFER_READBACK,
                             0, &router->readback);
#undef MAX3
}

static moevk_result create_commands(moevk_router *router) {
    moevk_context *context = router->context;
    const struct VolkDeviceTable *vk = &context->vk;
    VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                         .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                         .queueFamilyIndex = context->queue_family};
    VkResult vr = vk->vkCreateCommandPool(context->device, &pool_info, context->allocator,
                                          &router->command_pool);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo buffer_info = {.sType =
                                                   VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                               .commandPool = router->command_pool,
                                               .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                               .commandBufferCount = 2};
    VkCommandBuffer buffers[2];
    vr = vk->vkAllocateCommandBuffers(context->device, &buffer_info, buffers);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkAllocateCommandBuffers");
    router->command_buffer = buffers[0];
    router->route_commands = buffers[1];
    if (router->info.profile && context->timestamp_valid_bits > 0) {
        VkQueryPoolCreateInfo query_info = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                            .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                            .queryCount = TIMESTAMP_COUNT};
        vr = vk->vkCreateQueryPool(context->device, &query_info, context->allocator,
                                   &router->timestamps);
        if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateQueryPool");
    }
    VkFenceCreateInfo fence_info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vr = vk->vkCreateFence(context->device, &fence_info, context->allocator, &router->fence);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateFence");
    return MOEVK_SUCCESS;
}

/* A layer's weights, activations and tiles: each within the device's range and the dispatch
 * limits (messages that name them, before the generic check's). */
static moevk_result layer_check_sizes(moevk_router *router, const uint64_t sizes[BINDING_COUNT]) {
    moevk_context *context = router->context;
    uint64_t range = context->limits.maxStorageBufferRange;
    for (int i = BINDING_EXPERT_GATE; i <= BINDING_SHARED_SCALE; ++i)
        if (sizes[i] > range)
            return context_fail(context, MOEVK_ERROR_TOO_LARGE,
                                "the layer's %s need %llu bytes, past this device's "
                                "maxStorageBufferRange of %llu",
                                BINDING_NAMES[i], (unsigned long long)sizes[i],
                                (unsigned long long)range);
    uint64_t widest = router->info.hidden_size;
    if (router->layer.intermediate_size > widest) widest = router->layer.intermediate_size;
    if (router->layer.shared_intermediate_size > widest)
        widest = router->layer.shared_intermediate_size;
    if (div_ceil_u32((uint32_t)widest, MATVEC_COLUMNS) > MAX_TILES)
        return context_fail(context, MOEVK_ERROR_TOO_LARGE,
                            "a layer width of %llu makes more than %u column tiles of %u",
                            (unsigned long long)widest, MAX_TILES, MATVEC_COLUMNS);
    if (layer_max_tiles(router) > MAX_TILES ||
        div_ceil_u32(router->info.max_tokens, TILE_ROWS) > MAX_TILES)
        return context_fail(context, MOEVK_ERROR_TOO_LARGE,
                            "max_tokens %u makes more than %u tiles of %u rows for one dispatch",
                            router->info.max_tokens, MAX_TILES, TILE_ROWS);
    return MOEVK_SUCCESS;
}

/* Whether the router's sizes fit the device and moevk's indices: everything creation checks
 * before it allocates. Fills sizes. */
static moevk_result check_router_sizes(moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    router->max_dispatched_rows = max_dispatched_rows(&router->info);
    if (router->max_dispatched_rows > UINT32_MAX / 2)
        return context_fail(router->context, MOEVK_ERROR_TOO_LARGE,
                            "%llu dispatched rows pass moevk's 32-bit row indices",
                            (unsigned long long)router->max_dispatched_rows);
    binding_sizes(router, sizes);
    moevk_result r = router->layer.active ? layer_check_sizes(router, sizes) : MOEVK_SUCCESS;
    if (r == MOEVK_SUCCESS) r = check_sizes(router->context, router, sizes);
    if (r == MOEVK_SUCCESS && router->layer.active && router->use_addresses)
        r = context_fail(router->context, MOEVK_ERROR_TOO_LARGE,
                         "a layer's rows pass this device's maxStorageBufferRange of %llu bytes "
                         "(moevk's layer does not reach buffers through device addresses yet): "
                         "lower max_tokens",
                         (unsigned long long)router->context->limits.maxStorageBufferRange);
    if (r == MOEVK_SUCCESS) r = router_check_loop_budget(router->context, &router->info);
    return r;
}

/* The subgroup size scores and top-k run at, 0 for an invocation per token: a subgroup's lanes
 * share a token's experts on a GPU that offers it, where there are enough experts to share.
 * A CPU device runs its SIMD lanes as the subgroup: the per-token kernel measured faster there
 * (bench/RESULTS.md). */
static uint32_t selection_lanes(const moevk_router *router) {
    const moevk_device_info *device = &router->context->info;
    switch (router->info.selection_kernel) {
    case MOEVK_SELECTION_PER_TOKEN: return 0;
    case MOEVK_SELECTION_SUBGROUP: return device->selection_lanes;
    case MOEVK_SELECTION_AUTO: break;
    }
    if (device->type == VK_PHYSICAL_DEVICE_TYPE_CPU || router->info.num_experts < 32) return 0;
    return device->selection_lanes;
}

static moevk_result build_router(moevk_router *router) {
    router->selection_lanes = selection_lanes(router);
    uint64_t sizes[BINDING_COUNT];
    moevk_result r = check_router_sizes(router, sizes);
    if (r == MOEVK_SUCCESS) r = create_buffers(router, sizes);
    if (r == MOEVK_SUCCESS) r = stages_create(router);
    if (r == MOEVK_SUCCESS) r = create_commands(router);
    return r;
}

moevk_result router_read_info(moevk_context *context, const moevk_router_info *given,
                              moevk_router_info *full) {
    if (!given) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "info is NULL");
    moevk_router_info_init(full);
    return SIZED_READ(context, moevk_router_info, given, full);
}

moevk_result moevk_router_create(moevk_context *context, const moevk_router_info *caller_info,
                                 moevk_router **out) {
    if (!out) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!context) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router_info full;
    moevk_result r = router_read_info(context, caller_info, &full);
    if (r != MOEVK_SUCCESS) return r;
    return router_create(context, &full, NULL, out);
}

moevk_result router_create(moevk_context *context, const moevk_router_info *info,
                           const layer_shape *layer, moevk_router **out) {
    *out = NULL;
    moevk_result r = context_check_alive(context);
    if (r != MOEVK_SUCCESS) return r;
    r = router_check_info(context, info);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = context_calloc(context, 1, sizeof *router);
    if (!router) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "router");
    router->context = context;
    router->info = *info;
    if (layer) router->layer = *layer;
    r = build_router(router);
    if (r != MOEVK_SUCCESS) {
        moevk_router_destroy(router);
        return r;
    }
    *out = router;
    return MOEVK_SUCCESS;
}

void moevk_router_destroy(moevk_router *router) {
    if (!router) return;
    moevk_context *context = router->context;
    const struct VolkDeviceTable *vk = &context->vk;
    /* A submitted route may still run: wait for it (its results are dropped). */
    if (router->pending != PENDING_NONE)
        vk->vkWaitForFences(context->device, 1, &router->fence, VK_TRUE, UINT64_MAX);
    if (router->fence) vk->vkDestroyFence(context->device, router->fence, context->allocator);
    if (router->timestamps)
        vk->vkDestroyQueryPool(context->device, router->timestamps, context->allocator);
    if (router->command_pool)
        vk->vkDestroyCommandPool(context->device, router->command_pool, context->allocator);
    stages_destroy(router);
    for (int i = 0; i < BINDING_COUNT; ++i) gpu_buffer_destroy(context, &router->buffers[i]);
    gpu_buffer_destroy(context, &router->upload);
    gpu_buffer_destroy(context, &router->readback);
    host_free(context->allocator, router);
}

/* Whether a router of these options would pass every check creation makes before allocating. */
static int router_fits(moevk_context *context, const moevk_router_info *info) {
    if (router_check_info(context, info) != MOEVK_SUCCESS) return 0;
    moevk_router probe;
    memset(&probe, 0, sizeof probe);
    probe.context = context;
    probe.info = *info;
    uint64_t sizes[BINDING_COUNT];
    return check_router_sizes(&probe, sizes) == MOEVK_SUCCESS;
}

/* The largest value in [low, high] that fits, for options that fit less as it grows (`low`
 * fits or nothing does: then 0). */
static uint32_t largest_fitting(moevk_context *context, moevk_router_info *info, uint32_t *field,
                                uint32_t low, uint32_t high, uint32_t step) {
    *field = low;
    if (!router_fits(context, info)) return 0;
    uint64_t good = low / step, bad = (uint64_t)high / step + 1; /* in units of step */
    while (good + 1 < bad) {
        uint64_t mid = good + (bad - good) / 2;
        *field = (uint32_t)(mid * step);
        if (router_fits(context, info))
            good = mid;
        else
            bad = mid;
    }
    return (uint32_t)(good * step);
}

moevk_result moevk_router_bounds_query(moevk_context *context, const moevk_router_info *caller_info,
                                       moevk_router_bounds *caller_bounds) {
    if (!context) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (!caller_bounds)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "bounds must not be NULL");
    moevk_router_info given;
    moevk_result r = router_read_info(context, caller_info, &given);
    if (r != MOEVK_SUCCESS) return r;
    /* The probes' refusals are not the caller's errors. */
    char last_error[sizeof context->last_error];
    memcpy(last_error, context->last_error, sizeof last_error);
    moevk_router_bounds bounds;
    moevk_router_bounds_init(&bounds);
    moevk_router_info probe = given;
    uint32_t groups = given.num_groups > 1 ? given.num_groups : 1;
    uint32_t least_experts = groups > given.top_k ? groups : given.top_k;
    least_experts = (least_experts + groups - 1) / groups * groups;
    bounds.max_experts = largest_fitting(context, &probe, &probe.num_experts, least_experts,
                                         MOEVK_MAX_EXPERTS, groups);
    probe = given;
    for (uint32_t k = MOEVK_MAX_TOP_K; k >= 1 && !bounds.max_top_k; --k) {
        probe.top_k = k;
        if (router_fits(context, &probe)) bounds.max_top_k = k;
    }
    probe = given;
    bounds.max_tokens = largest_fitting(context, &probe, &probe.max_tokens, 1, UINT32_MAX, 1);
    probe = given;
    bounds.max_hidden_size = largest_fitting(context, &probe, &probe.hidden_size,
                                             given.learned_noise ? 1 : 0, UINT32_MAX, 1);
    memcpy(context->last_error, last_error, sizeof last_error);
    SIZED_WRITE(moevk_router_bounds, caller_bounds, &bounds);
    return MOEVK_SUCCESS;
}
