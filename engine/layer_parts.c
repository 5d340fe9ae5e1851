/* A layer's forward in two halves (moevk_parts.h), for libmoevk_mpi: the home half is the
 * forward with its routed experts and combine left out (route.c, route_only), the combine then
 * runs over the rows the experts' ranks sent back; the experts half runs the routed experts'
 * stage (experts.c) over rows given in place of a route's. */
#include "moevk_parts.h"

#include "layer.h"
#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

moevk_result moevk_parts_layer_create(moevk_context *context, const moevk_layer_info *info,
                                      moevk_parts_role role, moevk_layer **out) {
    if (!out) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!context) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (!info || !info->router) REJECT("info and info->router must be given");
    if (role != MOEVK_PARTS_HOME && role != MOEVK_PARTS_EXPERTS)
        REJECT("role %d is not a moevk_parts_role", (int)role);
    moevk_layer_info layer = *info;
    moevk_router_info router = *info->router;
    if (role == MOEVK_PARTS_EXPERTS) {
        /* Rows given, not routed: one choice each, none of the routing's options. */
        if (info->shared_intermediate_size) REJECT("an experts half has no shared experts");
        moevk_router_info_init(&router);
        router.num_experts = info->router->num_experts;
        router.top_k = 1;
        router.max_tokens = info->router->max_tokens;
        router.hidden_size = info->router->hidden_size;
        router.hidden_type = info->router->hidden_type;
        router.max_binding_bytes = info->router->max_binding_bytes;
    }
    /* The home half routes dropless: which choices its experts' ranks keep is the caller's. */
    router.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    router.pad_multiple = 0;
    layer.router = &router;
    return layer_create(context, &layer, role, out);
}

uint32_t moevk_parts_capacity(const moevk_router_info *info, const moevk_route_input *input,
                              uint32_t num_tokens) {
    if (!info || !input) return 0;
    moevk_route_input call = *input;
    call.num_tokens = num_tokens;
    return router_call_capacity(info, &call);
}

void moevk_parts_stats_from_sums(moevk_route_stats *stats, uint32_t num_experts,
                                 const uint32_t *expert_info, uint32_t capacity,
                                 uint32_t valid_rows, const double *sums) {
    route_stats_from_sums(stats, num_experts, expert_info, capacity, valid_rows, sums);
}

moevk_result moevk_parts_fail(moevk_context *context, moevk_result result, const char *message) {
    return context_fail(context, result, "%s", message ? message : "");
}

moevk_result layer_parts_check(moevk_layer *layer, int role) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = layer->router->context;
    if (layer->router->layer.parts != role)
        REJECT("this layer is not an expert-parallel layer's %s half",
               role == PARTS_HOME ? "home" : "experts");
    return router_settle(layer->router);
}

moevk_result moevk_parts_route(moevk_layer *layer, const moevk_route_input *input,
                               const moevk_layer_output *caller_output, uint32_t ffn_tokens,
                               float *probability_sums, float *scalars) {
    moevk_result r = layer_parts_check(layer, PARTS_HOME);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (!caller_output) REJECT("output must not be NULL");
    if (ffn_tokens == 0) REJECT("ffn_tokens must be > 0");
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    r = SIZED_READ(context, moevk_layer_output, caller_output, &output);
    if (r != MOEVK_SUCCESS) return r;
    moevk_tensor none = moevk_host_tensor(NULL);
    layer_call call = {&none, &output.router_logits, .route_only = 1, .ffn_tokens = ffn_tokens};
    router->parts_rows = UINT32_MAX;
    r = route_submit(router, input, output.route, &call);
    if (r == MOEVK_SUCCESS) r = moevk_router_wait(router, UINT64_MAX);
    if (r != MOEVK_SUCCESS || (!probability_sums && !scalars)) return r;
    uint32_t E = router->info.num_experts;
    float totals[MOEVK_MAX_EXPERTS + STAT_SCALARS];
    moevk_tensor host = moevk_host_tensor(totals);
    r = layer_copy_out(router, BINDING_STAT_TOTALS, 0, (E + STAT_SCALARS) * 4, &host);
    if (r != MOEVK_SUCCESS) return r;
    for (uint32_t e = 0; probability_sums && e < E; ++e) probability_sums[e] = totals[e];
    if (scalars) {
        scalars[0] = totals[E + STAT_LSE];
        scalars[1] = totals[E + STAT_LSE_SQUARED];
        scalars[2] = totals[E + STAT_ENTROPY];
    }
    return MOEVK_SUCCESS;
}

moevk_result layer_parts_run(moevk_router *router, transfer_plan *plan) {
    moevk_result r = transfer_submit(plan);
    if (r != MOEVK_SUCCESS) return r;
    router->pending = PENDING_BACKWARD; /* what moevk_router_wait only completes */
    return moevk_router_wait(router, UINT64_MAX);
}

moevk_result moevk_parts_combine(moevk_layer *layer, const int32_t *rows, const float *expert_out,
                                 uint32_t expert_rows, void *output) {
    moevk_result r = layer_parts_check(layer, PARTS_HOME);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (router->route != ROUTE_RUN) REJECT("combine needs moevk_parts_route first");
    const route_plan *last = &router->last;
    uint64_t T = last->num_tokens, k = last->choices, d = last->hidden_size;
    if (T == 0) {
        router->parts_rows = 0;
        return MOEVK_SUCCESS;
    }
    if (!rows || !output || (expert_rows > 0 && !expert_out))
        REJECT("rows, output and expert_out must be given");
    if (expert_rows > router->max_dispatched_rows)
        REJECT("%u expert rows: the layer holds %llu", expert_rows,
               (unsigned long long)router->max_dispatched_rows);
    for (uint64_t i = 0; i < T * k; ++i) /* the shader reads the rows these name */
        if (rows[i] < -1 || rows[i] >= (int64_t)expert_rows)
            REJECT("rows[%llu] = %d: not -1 or a row below %u", (unsigned long long)i, rows[i],
                   expert_rows);
    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    transfer_upload(plan, BINDING_EXPERT_OUT, expert_out, (uint64_t)expert_rows * d * 4);
    transfer_upload(plan, BINDING_ROWS, rows, T * k * 4);
    transfer_uploads_done(plan);
    record_layer_combine(router, last);
    transfer_download(plan, BINDING_COMBINED, output,
                      T * d * dtype_bytes(router->info.hidden_type));
    r = layer_parts_run(router, plan);
    if (r == MOEVK_SUCCESS) router->parts_rows = expert_rows;
    return r;
}

moevk_result moevk_parts_experts_submit(moevk_layer *layer, const void *rows,
                                        const uint32_t *counts, uint32_t ffn_tokens,
                                        float *expert_out) {
    moevk_result r = layer_parts_check(layer, PARTS_EXPERTS);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (!counts) REJECT("counts must be given");
    if (ffn_tokens == 0) REJECT("ffn_tokens must be > 0");
    uint32_t E = router->info.num_experts;
    uint64_t N = 0;
    for (uint32_t e = 0; e < E; ++e) N += counts[e];
    if (N > router->info.max_tokens)
        REJECT("%llu rows: the layer takes at most %u", (unsigned long long)N,
               router->info.max_tokens);
    if (N == 0) {
        router->last.num_tokens = 0; /* a backward of no rows: nothing to run */
        router->route = ROUTE_RUN;
        return MOEVK_SUCCESS;
    }
    if (!rows || !expert_out) REJECT("rows and expert_out must be given");
    /* What the route would have left: counts before and after drops, each expert's first row,
     * and every row its own token. */
    uint32_t *info = context_calloc(context, 3 * (size_t)E + 1 + N, 4);
    if (!info) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "expert rows");
    uint32_t *row_token = info + 3 * E + 1;
    for (uint32_t e = 0; e < E; ++e) {
        info[e] = info[E + e] = counts[e];
        info[2 * E + e + 1] = info[2 * E + e] + counts[e];
    }
    for (uint32_t i = 0; i < N; ++i) row_token[i] = i;
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = (uint32_t)N;
    route_plan params;
    router_plan(router, &input, &params);
    router_plan_ffn_form(&params, ffn_tokens);
    uint64_t d = router->info.hidden_size;
    /* What moevk_parts_experts_backward runs the backward of (its pre-activations kept). */
    router->last = params;
    router->route = ROUTE_RUN;
    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin(plan, router);
    if (r == MOEVK_SUCCESS) {
        transfer_upload(plan, BINDING_HIDDEN, rows, N * d * dtype_bytes(router->info.hidden_type));
        transfer_upload(plan, BINDING_ROW_TOKEN, row_token, N * 4);
        transfer_upload(plan, BINDING_EXPERT_INFO, info, (3 * (uint64_t)E + 1) * 4);
        transfer_uploads_done(plan);
        record_experts(router, &params);
        transfer_download(plan, BINDING_EXPERT_OUT, expert_out, N * d * 4);
    }
    host_free(context->allocator, info);
    if (r == MOEVK_SUCCESS) r = transfer_submit(plan);
    if (r == MOEVK_SUCCESS) router->pending = PENDING_BACKWARD; /* completed by moevk_parts_wait */
    return r;
}

moevk_result moevk_parts_wait(moevk_layer *layer, uint64_t timeout_ns) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    return moevk_router_wait(layer->router, timeout_ns);
}
