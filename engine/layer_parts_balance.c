/* The importance and load losses' sums over a whole batch that several home halves routed
 * (moevk_parts.h): each half's load terms from its device, then the sums added on the host as
 * one process's losses stage adds them (shaders/losses.comp, PARTIALS then COLUMNS), so that
 * each half's dL/dlogits and the losses' values are one process's to the bit. */
#include <string.h>

#include "moevk_parts.h"

#include "layer.h"
#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

moevk_result moevk_parts_load_terms(moevk_layer *layer, const moevk_loss_info *losses,
                                    float *terms) {
    moevk_result r = layer_parts_check(layer, PARTS_HOME);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (router->route != ROUTE_RUN) REJECT("the load terms need the half's route first");
    if (!losses || losses->load_coef == 0.0f) REJECT("losses must ask for the load loss");
    uint64_t T = router->last.num_tokens, E = router->info.num_experts;
    if (T > 0 && !terms) REJECT("terms must be given");
    /* The losses' plan checks what the load loss needs of the route (its Gaussian noise). */
    route_plan plan;
    loss_phases phases;
    moevk_loss_info info;
    r = losses_plan_for_layer(router, losses, &plan, &phases, &info);
    if (r != MOEVK_SUCCESS || T == 0) return r;
    phases = (loss_phases){.thresholds = 1, .load_terms = 1, .totals_given = 1};
    transfer_plan *transfers = &router->pending_plan;
    r = transfer_begin(transfers, router);
    if (r != MOEVK_SUCCESS) return r;
    transfer_uploads_done(transfers);
    record_losses(router, &plan, &phases);
    record_compute_barrier(router);
    transfer_download(transfers, BINDING_GRAD_LOGITS, terms, T * E * 4);
    return layer_parts_run(router, transfers);
}

/* One column block of totals [E]: values [num_tokens][stride] (a token's entries at `stride`
 * apart, `present` saying which expert each is, NULL: entry e is expert e), each statistics
 * block's partial sum in token order, the blocks strided over the workgroup's lanes, then its
 * tree (shaders/reduce.glsl: lane l takes lane l + half, halving). lanes [WORKGROUP_SIZE + 1][E].
 */
static void column_totals(const moevk_router_info *info, uint32_t num_tokens, const float *values,
                          const int32_t *experts, uint32_t stride, float *lanes, float *totals) {
    uint32_t E = info->num_experts;
    float *block = lanes + (size_t)WORKGROUP_SIZE * E;
    memset(lanes, 0, (size_t)WORKGROUP_SIZE * E * sizeof(float));
    uint32_t rows = router_stat_block_rows(info, num_tokens);
    uint64_t b = 0;
    for (uint64_t begin = 0; begin < num_tokens; begin += rows, ++b) {
        uint64_t end = begin + rows < num_tokens ? begin + rows : num_tokens;
        memset(block, 0, (size_t)E * sizeof(float));
        for (uint64_t c = begin * stride; c < end * stride; ++c) {
            int32_t e = experts ? experts[c] : (int32_t)(c % stride);
            if (e >= 0) block[e] += values[c];
        }
        float *lane = lanes + (size_t)(b % WORKGROUP_SIZE) * E;
        for (uint32_t e = 0; e < E; ++e) lane[e] += block[e];
    }
    for (uint32_t half = WORKGROUP_SIZE / 2; half > 0; half >>= 1)
        for (uint32_t l = 0; l < half; ++l)
            for (uint32_t e = 0; e < E; ++e)
                lanes[(size_t)l * E + e] += lanes[(size_t)(l + half) * E + e];
    memcpy(totals, lanes, (size_t)E * sizeof(float));
}

moevk_result moevk_parts_balance_totals(moevk_layer *layer, uint32_t num_tokens,
                                        const int32_t *expert_ids, const float *weights,
                                        const float *load_terms, float *totals, double *values) {
    moevk_result r = layer_parts_check(layer, PARTS_HOME);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    const moevk_router_info *info = &router->info;
    uint32_t E = info->num_experts, k = info->top_k;
    if (!totals || (num_tokens > 0 && (!expert_ids || !weights)))
        REJECT("expert_ids, weights and totals must be given");
    for (uint64_t c = 0; c < (uint64_t)num_tokens * k; ++c)
        if (expert_ids[c] < -1 || expert_ids[c] >= (int32_t)E)
            REJECT("expert_ids[%llu] = %d is neither an expert of %u nor -1", (unsigned long long)c,
                   expert_ids[c], E);
    float *lanes = context_alloc(context, ((size_t)WORKGROUP_SIZE + 1) * E * sizeof(float));
    if (!lanes) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "the losses' sums");
    /* Importance: the choices' weights (a row routed nowhere, non-finite or masked, has only
     * -1); load: each token's every expert's term (0 where the route left the row out). */
    column_totals(info, num_tokens, weights, expert_ids, k, lanes,
                  totals + LOSS_TOTAL_IMPORTANCE * E);
    if (load_terms)
        column_totals(info, num_tokens, load_terms, NULL, E, lanes, totals + LOSS_TOTAL_LOAD * E);
    else
        memset(totals + LOSS_TOTAL_LOAD * E, 0, (size_t)E * sizeof(float));
    host_free(context->allocator, lanes);
    if (values) {
        values[0] = losses_cv2(totals + LOSS_TOTAL_IMPORTANCE * E, E);
        values[1] = load_terms ? losses_cv2(totals + LOSS_TOTAL_LOAD * E, E) : 0.0;
    }
    return MOEVK_SUCCESS;
}
