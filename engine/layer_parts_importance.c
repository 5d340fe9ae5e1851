/* The importance loss's sums over a whole batch that several home halves routed (moevk_parts.h),
 * added as one process's losses stage adds them (shaders/losses.comp, PARTIALS then COLUMNS),
 * so that each half's dL/dlogits and the loss's value are one process's to the bit. */
#include <string.h>

#include "moevk_parts.h"

#include "layer.h"
#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

moevk_result moevk_parts_importance(moevk_layer *layer, uint32_t num_tokens,
                                    const int32_t *expert_ids, const float *weights, float *totals,
                                    double *value) {
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
    /* The column sums' lanes [WORKGROUP_SIZE][E], then one block's partial sums [E]. */
    float *lanes = context_alloc(context, ((size_t)WORKGROUP_SIZE + 1) * E * sizeof(float));
    if (!lanes) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "importance sums");
    float *block = lanes + (size_t)WORKGROUP_SIZE * E;
    memset(lanes, 0, (size_t)WORKGROUP_SIZE * E * sizeof(float));
    /* Each statistics block's partial sum, in token order and then choice order (a row routed
     * nowhere, non-finite or masked, has only -1), added to its lane: blocks strided over the
     * workgroup, each lane's in block order. */
    uint32_t rows = router_stat_block_rows(info, num_tokens);
    uint64_t b = 0;
    for (uint64_t begin = 0; begin < num_tokens; begin += rows, ++b) {
        uint64_t end = begin + rows < num_tokens ? begin + rows : num_tokens;
        memset(block, 0, (size_t)E * sizeof(float));
        for (uint64_t c = begin * k; c < end * k; ++c)
            if (expert_ids[c] >= 0) block[expert_ids[c]] += weights[c];
        float *lane = lanes + (size_t)(b % WORKGROUP_SIZE) * E;
        for (uint32_t e = 0; e < E; ++e) lane[e] += block[e];
    }
    /* The workgroup's tree (shaders/reduce.glsl): lane l takes lane l + half, halving. */
    for (uint32_t half = WORKGROUP_SIZE / 2; half > 0; half >>= 1)
        for (uint32_t l = 0; l < half; ++l)
            for (uint32_t e = 0; e < E; ++e)
                lanes[(size_t)l * E + e] += lanes[(size_t)(l + half) * E + e];
    memcpy(totals, lanes, (size_t)E * sizeof(float));
    host_free(context->allocator, lanes);
    if (value) *value = losses_cv2(totals, E);
    return MOEVK_SUCCESS;
}
