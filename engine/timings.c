/* moevk_router_timings: stage times of a profiling router from its timestamp queries. */
#include <string.h>

#include "internal.h"

static double span_ms(const moevk_router *router, const uint64_t *ticks, int from, int to) {
    const moevk_context *context = router->context;
    uint64_t mask = context->timestamp_valid_bits >= 64
                        ? UINT64_MAX
                        : (((uint64_t)1 << context->timestamp_valid_bits) - 1);
    uint64_t delta = (ticks[to] - ticks[from]) & mask; /* wraps within the valid bits */
    return (double)delta * context->limits.timestampPeriod * 1e-6;
}

/* The timings of the last route (or layer forward) and combine into this library's struct. */
static moevk_result read_timings(moevk_router *router, moevk_timings *timings) {
    moevk_context *context = router->context;
    moevk_result waited = router_settle(router);
    if (waited != MOEVK_SUCCESS) return waited;
    if (!router->timestamps)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            router->info.profile ? "the queue has no timestamps"
                                                 : "the router was created without profile");
    if (router->route == ROUTE_NONE)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "no route has run yet");
    uint64_t ticks[TIMESTAMP_COUNT] = {0};
    VkResult vr = context->vk.vkGetQueryPoolResults(
        context->device, router->timestamps, 0, TIMESTAMP_ROUTE_END + 1, sizeof ticks, ticks,
        sizeof ticks[0], VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkGetQueryPoolResults");
    timings->scores_topk_ms = span_ms(router, ticks, TIMESTAMP_ROUTE_START, TIMESTAMP_AFTER_TOPK);
    timings->bucketing_ms = span_ms(router, ticks, TIMESTAMP_AFTER_TOPK, TIMESTAMP_AFTER_BUCKETING);
    timings->dispatch_ms =
        span_ms(router, ticks, TIMESTAMP_AFTER_BUCKETING, TIMESTAMP_AFTER_DISPATCH);
    timings->stats_ms = span_ms(router, ticks, TIMESTAMP_AFTER_DISPATCH, TIMESTAMP_ROUTE_END);
    timings->route_ms = span_ms(router, ticks, TIMESTAMP_ROUTE_START, TIMESTAMP_ROUTE_END);
    if (router->layer_timed) {
        vr = context->vk.vkGetQueryPoolResults(context->device, router->timestamps,
                                               TIMESTAMP_LAYER_END, 3, 3 * sizeof ticks[0],
                                               ticks + TIMESTAMP_LAYER_END, sizeof ticks[0],
                                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkGetQueryPoolResults");
        timings->layer_ms = span_ms(router, ticks, TIMESTAMP_ROUTE_END, TIMESTAMP_LAYER_END);
        timings->experts_ms = span_ms(router, ticks, TIMESTAMP_ROUTE_END, TIMESTAMP_AFTER_EXPERTS);
        timings->shared_experts_ms =
            span_ms(router, ticks, TIMESTAMP_AFTER_EXPERTS, TIMESTAMP_AFTER_SHARED_EXPERTS);
        timings->layer_combine_ms =
            span_ms(router, ticks, TIMESTAMP_AFTER_SHARED_EXPERTS, TIMESTAMP_LAYER_END);
    }
    if (router->combine != COMBINE_NONE) {
        vr = context->vk.vkGetQueryPoolResults(context->device, router->timestamps,
                                               TIMESTAMP_COMBINE_START, 2, 2 * sizeof ticks[0],
                                               ticks + TIMESTAMP_COMBINE_START, sizeof ticks[0],
                                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkGetQueryPoolResults");
        timings->combine_ms =
            span_ms(router, ticks, TIMESTAMP_COMBINE_START, TIMESTAMP_COMBINE_END);
    }
    return MOEVK_SUCCESS;
}

moevk_result moevk_router_timings(moevk_router *router, moevk_timings *caller_timings) {
    if (!router || !caller_timings) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_timings timings;
    moevk_timings_init(&timings);
    moevk_result r = read_timings(router, &timings);
    SIZED_WRITE(moevk_timings, caller_timings, &timings);
    return r;
}
