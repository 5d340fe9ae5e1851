/* The smallest honest use of moevk: route one batch of 6 tokens to 4 experts, top-2. */
#include <stdio.h>

#include "moevk.h"

int main(void) {
    moevk_context *context = NULL;
    moevk_result r = moevk_context_create(NULL, &context); /* default device */
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "no device: %s\n", moevk_result_string(r));
        return 1;
    }
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = 4;
    info.top_k = 2;
    info.max_tokens = 6;
    moevk_router *router = NULL;
    r = moevk_router_create(context, &info, &router);

    const float logits[6 * 4] = {1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 5, 0,
                                 2, 2, 1, 1, 9, 0, 0, 0, 1, 3, 3, 1};
    int32_t experts[6 * 2], slots[6 * 2];
    float weights[6 * 2];
    moevk_route_stats stats = {0};
    moevk_route_input input = {.num_tokens = 6, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(experts),
                                 .weights = moevk_host_tensor(weights),
                                 .slots = moevk_host_tensor(slots),
                                 .stats = &stats};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS) {
        for (int t = 0; t < 6; ++t)
            printf("token %d -> expert %d (w %.3f, slot %d), expert %d (w %.3f, slot %d)\n", t,
                   experts[2 * t], weights[2 * t], slots[2 * t], experts[2 * t + 1],
                   weights[2 * t + 1], slots[2 * t + 1]);
        printf("capacity %u, aux loss %.4f\n", stats.capacity, stats.aux_loss);
    } else {
        fprintf(stderr, "%s\n", moevk_context_last_error(context));
    }
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return r == MOEVK_SUCCESS ? 0 : 1;
}
