/* A program of moevk 0.2's interface, compiled twice: against tests/abi/0.2/moevk.h (a copy of
 * the 0.2 header, kept as it was) and against the current header. Both binaries run against the
 * current library and must print the same lines but the first (the structs' sizes, which must
 * differ): a program built against an older header keeps working, its missing fields taking
 * their defaults. It routes, combines, takes the losses and reads the statistics, and prints a
 * hash of every output. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "moevk.h"

#define T 200u
#define E 16u
#define K 2u
#define D 8u

static uint64_t fnv1a(uint64_t hash, const void *data, size_t bytes) {
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
    return hash;
}

/* A fixed pseudo-random stream: the same inputs in both builds. */
static float next_value(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*state >> 40) & 0xFFFFFF) / 16777216.0f * 4.0f - 2.0f;
}

static int fail(moevk_context *context, const char *what, moevk_result r) {
    fprintf(stderr, "route_program: %s -> %s (%s)\n", what, moevk_result_string(r),
            context ? moevk_context_last_error(context) : "");
    return 1;
}

int main(void) {
    printf("sizes: router_info %zu, route_input %zu\n", sizeof(moevk_router_info),
           sizeof(moevk_route_input));
    moevk_context_info context_info;
    moevk_context_info_init(&context_info);
    moevk_context *context = NULL;
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) return fail(NULL, "moevk_context_create", r);
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = K;
    info.max_tokens = T;
    info.hidden_size = D;
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 0.3f;
    info.noise_seed = 7;
    info.losses = 1;
#ifdef MOEVK_ABI_0_2
    /* A 0.2 program may leave its struct's tail padding unset: what is there must not matter. */
    size_t end = offsetof(moevk_router_info, sinkhorn_iterations) + sizeof info.sinkhorn_iterations;
    memset((char *)&info + end, 0xA5, sizeof info - end);
#endif
    moevk_router *router = NULL;
    r = moevk_router_create(context, &info, &router);
    if (r != MOEVK_SUCCESS) return fail(context, "moevk_router_create", r);

    static float logits[T * E], hidden[T * D], combined[T * D], grad[T * E];
    static float dispatched[E * T * D], weights[T * K];
    static int32_t ids[T * K], slots[T * K];
    uint64_t state = 1;
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = next_value(&state);
    for (uint32_t i = 0; i < T * D; ++i) hidden[i] = next_value(&state);
    for (int inference = 0; inference < 2; ++inference) {
        moevk_route_input input;
        moevk_route_input_init(&input);
        input.num_tokens = T;
        input.logits = moevk_host_tensor(logits);
        input.hidden = moevk_host_tensor(hidden);
        input.step = 3;
        input.inference = inference;
        moevk_route_stats stats;
        moevk_route_stats_init(&stats);
        moevk_route_output output;
        moevk_route_output_init(&output);
        output.expert_ids = moevk_host_tensor(ids);
        output.weights = moevk_host_tensor(weights);
        output.slots = moevk_host_tensor(slots);
        output.dispatched = moevk_host_tensor(dispatched);
        output.stats = &stats;
        r = moevk_route(router, &input, &output);
        if (r != MOEVK_SUCCESS) return fail(context, "moevk_route", r);
        /* The experts: the identity. */
        r = moevk_combine(router, moevk_host_tensor(dispatched), moevk_host_tensor(combined));
        if (r != MOEVK_SUCCESS) return fail(context, "moevk_combine", r);
        uint64_t hash = 14695981039346656037ull;
        hash = fnv1a(hash, ids, sizeof ids);
        hash = fnv1a(hash, weights, sizeof weights);
        hash = fnv1a(hash, slots, sizeof slots);
        hash = fnv1a(hash, dispatched, (size_t)stats.dispatched_rows * D * 4);
        hash = fnv1a(hash, combined, sizeof combined);
        printf("route %d: capacity %u, rows %u, assignments %" PRIu64 ", dropped %" PRIu64
               ", entropy %.9g, hash %016" PRIx64 "\n",
               inference, stats.capacity, stats.dispatched_rows, stats.assignments, stats.dropped,
               stats.entropy, hash);
    }
    /* The losses of a training route. */
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.logits = moevk_host_tensor(logits);
    moevk_route_output output;
    moevk_route_output_init(&output);
    r = moevk_route(router, &input, &output);
    moevk_loss_info loss;
    moevk_loss_info_init(&loss);
    loss.aux_coef = 0.01f;
    loss.z_coef = 0.001f;
    loss.load_coef = 0.1f;
    moevk_losses losses;
    moevk_losses_init(&losses);
    if (r == MOEVK_SUCCESS)
        r = moevk_router_losses(router, &loss, &losses, moevk_host_tensor(grad));
    if (r != MOEVK_SUCCESS) return fail(context, "moevk_router_losses", r);
    printf("losses: aux %.9g, z %.9g, load %.9g, total %.9g, grad hash %016" PRIx64 "\n",
           losses.aux, losses.z, losses.load, losses.total,
           fnv1a(14695981039346656037ull, grad, sizeof grad));
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return 0;
}
