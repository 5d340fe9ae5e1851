/* moevk-soak: a long run. Routes many batches of varying T on one router and reports memory
 * before and after: the process's resident set (and its peak), and moevk's own host and device
 * allocation counts, which must not move; at the end the last route is held to the CPU
 * reference. Not part of the test command (a long run); see bench/RESULTS.md for figures.
 * usage: moevk-soak [--calls N] [--device N|NAME] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moevk.h"
#include "moevk_reference.h"

enum { E = 16, K = 2, MAX_T = 512, D = 8 };

static long status_kib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long value = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n)) value = atol(line + n + 1);
    if (f) fclose(f);
    return value;
}

int main(int argc, char **argv) {
    long calls = 100000;
    const char *device = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--calls"))
            calls = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--device"))
            device = argv[i + 1];
    }
    moevk_context_info context_info = {.device = device};
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = K;
    info.max_tokens = MAX_T;
    info.hidden_size = D;
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r == MOEVK_SUCCESS) r = moevk_router_create(context, &info, &router);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk-soak: %s\n", moevk_result_string(r));
        return 1;
    }
    static float logits[MAX_T * E], hidden[MAX_T * D], weights[MAX_T * K], ref_weights[MAX_T * K];
    static int32_t ids[MAX_T * K], slots[MAX_T * K], ref_ids[MAX_T * K], ref_slots[MAX_T * K],
        ref_rows[MAX_T * K];
    static int32_t row_token[E * 1024];
    static uint32_t counts[E], before_counts[E];
    static ref_row_stats row_stats[MAX_T];
    static float dispatched[E * 1024 * D], combined[MAX_T * D];
    uint32_t state = 7;
    for (int i = 0; i < MAX_T * E; ++i)
        logits[i] = (float)((state = state * 1664525u + 1013904223u) >> 8) / 16777216.0f;
    for (int i = 0; i < MAX_T * D; ++i) hidden[i] = (float)i;
    long rss_start = 0;
    uint64_t host_start = 0, device_start = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint32_t T = 0;
    for (long call = 0; call < calls && r == MOEVK_SUCCESS; ++call) {
        T = 1 + (uint32_t)((call * 7919) % MAX_T);
        logits[(call * 31) % (MAX_T * E)] += 0.25f; /* the batch changes a little each call */
        moevk_route_input input = {.num_tokens = T,
                                   .logits = moevk_host_tensor(logits),
                                   .hidden = moevk_host_tensor(hidden)};
        moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                     .weights = moevk_host_tensor(weights),
                                     .slots = moevk_host_tensor(slots),
                                     .dispatched = moevk_host_tensor(dispatched)};
        r = moevk_route(router, &input, &output);
        if (r == MOEVK_SUCCESS)
            r = moevk_combine(router, moevk_host_tensor(dispatched), moevk_host_tensor(combined));
        if (call == 100) { /* after warm-up */
            rss_start = status_kib("VmRSS:");
            host_start = moevk_context_host_allocations(context);
            device_start = moevk_context_device_allocations(context);
        }
        if (call % 20000 == 0)
            fprintf(stderr, "  %ld calls, RSS %ld KiB\n", call, status_kib("VmRSS:"));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long rss_end = status_kib("VmRSS:"), peak = status_kib("VmHWM:");
    uint64_t host_end = moevk_context_host_allocations(context),
             device_end = moevk_context_device_allocations(context);
    /* The last route against the reference: top-k on the same logits, bucketing on the device's
     * ids. */
    int same = 0;
    if (r == MOEVK_SUCCESS) {
        ref_scores_topk(&info, NULL, T, logits, NULL, ref_ids, ref_weights, row_stats);
        ref_bucket(&info, T, moevk_router_capacity(router, T, 0), ids, weights, ref_slots, ref_rows,
                   row_token, before_counts, counts, NULL);
        same = !memcmp(ids, ref_ids, T * K * 4) && !memcmp(slots, ref_slots, T * K * 4);
    }
    double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    moevk_device_info device_info = {0};
    moevk_context_device_info(context, &device_info);
    printf("moevk-soak on %s: %ld route + combine calls (T from 1 to %d, E=%d, k=%d, d=%d) in %.1f "
           "s: %s\n",
           device_info.name, calls, MAX_T, E, K, D, seconds, moevk_result_string(r));
    printf("  resident set after warm-up %ld KiB, at the end %ld KiB (peak %ld KiB)\n", rss_start,
           rss_end, peak);
    printf("  moevk host allocations %llu -> %llu, device allocations %llu -> %llu\n",
           (unsigned long long)host_start, (unsigned long long)host_end,
           (unsigned long long)device_start, (unsigned long long)device_end);
    printf("  last route %s the CPU reference\n", same ? "matches" : "DIFFERS FROM");
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return r == MOEVK_SUCCESS && same && host_end == host_start && device_end == device_start ? 0
                                                                                              : 1;
}
