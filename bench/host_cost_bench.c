/* moevk-bench --host-cost: what a route call costs the host (routes recorded once). Two routers
 * of one shape side by side, called in turns: one routes the same T every call, so that from its
 * second call on it submits the commands it recorded again; the other alternates T with another
 * T, so that every timed call records. For each: the medians of the time from the call to the
 * return of moevk_route_submit (the submission) and of the whole call (moevk_router_wait
 * included: the results on the host), and the driver's allocations through the routers' command
 * pools during the call (the context's VkAllocationCallbacks count them). */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aligned_blocks.h"
#include "monotonic_clock.h"
#include "bench.h"

/* ---- Allocation callbacks that count ---- */
typedef struct counting_allocator {
    VkAllocationCallbacks callbacks;
    atomic_ullong allocations;
} counting_allocator;

static void *VKAPI_CALL counted_alloc(void *user, size_t size, size_t alignment,
                                      VkSystemAllocationScope scope) {
    (void)scope;
    counting_allocator *counter = user;
    atomic_fetch_add(&counter->allocations, 1);
    return aligned_block(size, alignment);
}

static void VKAPI_CALL counted_free(void *user, void *memory) {
    (void)user;
    aligned_block_free(memory);
}

static void *VKAPI_CALL counted_realloc(void *user, void *original, size_t size, size_t alignment,
                                        VkSystemAllocationScope scope) {
    if (!original) return counted_alloc(user, size, alignment, scope);
    if (size == 0) {
        counted_free(user, original);
        return NULL;
    }
    void *moved = counted_alloc(user, size, alignment, scope);
    if (!moved) return NULL;
    size_t old = aligned_block_size(original);
    memcpy(moved, original, old < size ? old : size);
    counted_free(user, original);
    return moved;
}

/* ---- The shapes ---- */
typedef struct cost_shape {
    const char *what;
    uint32_t T, other_T, E, k;
    uint32_t d, f; /* f > 0: a layer's forward (SwiGLU, f16 weights) */
} cost_shape;

static const cost_shape SHAPES[] = {
    {"route, decode", 1, 2, 64, 2, 0, 0},
    {"route", 4096, 4095, 64, 2, 0, 0},
    {"route", 4096, 4095, 256, 8, 0, 0},
    {"layer, decode", 1, 2, 8, 2, 1024, 1024},
};

enum { STEADY, RECORDING, WAYS };
enum { SUBMIT_US, CALL_US, ALLOCATIONS, MEASURES };

typedef struct cost_side {
    moevk_router *router;
    moevk_layer *layer;
    moevk_buffer *input, *output;
} cost_side;

static double now_us(void) { return monotonic_seconds() * 1e6; }

static double median_of(double *values, int n) {
    qsort(values, (size_t)n, sizeof *values, bench_compare_double);
    return values[n / 2];
}

static moevk_router_info router_info(const cost_shape *s) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = s->E;
    info.top_k = s->k;
    info.max_tokens = s->T > s->other_T ? s->T : s->other_T;
    info.hidden_size = s->d;
    info.renormalize = 1;
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    return info;
}

static moevk_result make_side(moevk_context *context, const cost_shape *s, cost_side *side) {
    moevk_router_info router = router_info(s);
    uint32_t T = router.max_tokens;
    moevk_result r;
    if (s->f) {
        layer_case c = {
            .T = T, .E = s->E, .k = s->k, .d = s->d, .f = s->f, .weight_type = MOEVK_DTYPE_F16};
        moevk_layer_info info;
        layer_case_infos(&c, &router, &info);
        r = moevk_layer_create(context, &info, &side->layer);
        if (r == MOEVK_SUCCESS) r = layer_case_set_weights(side->layer, &c);
        if (r == MOEVK_SUCCESS)
            r = moevk_buffer_create(context, (uint64_t)T * s->d * 4, &side->output);
    } else {
        r = moevk_router_create(context, &router, &side->router);
    }
    uint64_t columns = s->f ? s->d : s->E;
    if (r == MOEVK_SUCCESS)
        r = moevk_buffer_create(context, (uint64_t)T * columns * 4, &side->input);
    float *values = malloc((uint64_t)T * columns * 4);
    uint32_t state = 2463534242u;
    for (uint64_t i = 0; values && i < (uint64_t)T * columns; ++i) {
        state ^= state << 13, state ^= state >> 17, state ^= state << 5;
        values[i] = (float)(state >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    if (r == MOEVK_SUCCESS)
        r = values ? moevk_buffer_write(side->input, 0, values, (uint64_t)T * columns * 4)
                   : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    free(values);
    return r;
}

static void free_side(cost_side *side) {
    moevk_layer_destroy(side->layer);
    moevk_router_destroy(side->router);
    moevk_buffer_destroy(side->input);
    moevk_buffer_destroy(side->output);
}

/* One call of T tokens: its submission and whole times and allocations into sample. */
static moevk_result one_call(const cost_side *side, uint32_t T, counting_allocator *counter,
                             double sample[MEASURES], int *resubmitted) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.inference = 1;
    moevk_route_stats stats;
    moevk_route_stats_init(&stats);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.stats = &stats;
    moevk_router *router = side->layer ? moevk_layer_router(side->layer) : side->router;
    unsigned long long allocations = atomic_load(&counter->allocations);
    double start = now_us();
    moevk_result r;
    if (side->layer) {
        input.hidden = moevk_buffer_tensor(side->input, 0);
        moevk_layer_output output;
        moevk_layer_output_init(&output);
        output.output = moevk_buffer_tensor(side->output, 0);
        output.route = &route;
        r = moevk_layer_forward_submit(side->layer, &input, &output);
    } else {
        input.logits = moevk_buffer_tensor(side->input, 0);
        r = moevk_route_submit(side->router, &input, &route);
    }
    double submitted = now_us();
    unsigned long long submit_allocations = atomic_load(&counter->allocations) - allocations;
    if (r == MOEVK_SUCCESS) r = moevk_router_wait(router, UINT64_MAX);
    sample[SUBMIT_US] = submitted - start;
    sample[CALL_US] = now_us() - start;
    sample[ALLOCATIONS] = (double)submit_allocations;
    *resubmitted = stats.resubmitted;
    return r;
}

/* The medians [WAYS][MEASURES] of a shape; 0 when it could not run. */
static int run_shape(moevk_context *context, counting_allocator *counter, const cost_shape *s,
                     int warmup, int repeats, double medians[WAYS][MEASURES]) {
    cost_side sides[WAYS] = {{0}};
    double *samples[WAYS][MEASURES] = {{0}};
    int ok = 1;
    for (int w = 0; w < WAYS && ok; ++w) ok = make_side(context, s, &sides[w]) == MOEVK_SUCCESS;
    for (int w = 0; w < WAYS; ++w)
        for (int m = 0; m < MEASURES; ++m)
            ok = ok && (samples[w][m] = calloc((size_t)repeats, sizeof(double))) != NULL;
    int expected[WAYS] = {1, 0};
    for (int i = 0; ok && i < warmup + repeats; ++i)
        for (int w = 0; ok && w < WAYS; ++w) {
            double sample[MEASURES], unused[MEASURES];
            int resubmitted = 0, other = 0;
            /* The recording side's other T first: its timed call records. */
            if (w == RECORDING)
                ok = one_call(&sides[w], s->other_T, counter, unused, &other) == MOEVK_SUCCESS;
            ok = ok && one_call(&sides[w], s->T, counter, sample, &resubmitted) == MOEVK_SUCCESS;
            if (!ok || i < warmup) continue;
            ok = resubmitted == expected[w]; /* the bench measures what it says */
            for (int m = 0; m < MEASURES; ++m) samples[w][m][i - warmup] = sample[m];
        }
    for (int w = 0; ok && w < WAYS; ++w)
        for (int m = 0; m < MEASURES; ++m) medians[w][m] = median_of(samples[w][m], repeats);
    for (int w = 0; w < WAYS; ++w) {
        for (int m = 0; m < MEASURES; ++m) free(samples[w][m]);
        free_side(&sides[w]);
    }
    return ok;
}

void run_host_cost_cases(const moevk_context_info *base, FILE *out, int quick, int warmup,
                         int repeats) {
    counting_allocator counter = {.callbacks = {.pUserData = &counter,
                                                .pfnAllocation = counted_alloc,
                                                .pfnReallocation = counted_realloc,
                                                .pfnFree = counted_free}};
    atomic_init(&counter.allocations, 0);
    moevk_context_info info = *base;
    info.allocator = &counter.callbacks;
    moevk_context *context = NULL;
    if (moevk_context_create(&info, &context) != MOEVK_SUCCESS) {
        fprintf(out, "\nHost cost: skipped (no context with counting allocation callbacks)\n");
        return;
    }
    if (repeats < 31) repeats = 31;
    fprintf(out,
            "\nHost cost of a call (routes recorded once): medians of %d calls in turns; "
            "resubmitted: the same T every call; recorded: T alternating with another\n",
            repeats);
    fprintf(out, "%-14s %6s %4s %3s  %-11s %10s %10s %12s\n", "", "T", "E", "k", "call",
            "submit us", "whole us", "allocations");
    static const char *const WAY_NAMES[WAYS] = {"resubmitted", "recorded"};
    int count = (int)(sizeof SHAPES / sizeof SHAPES[0]);
    for (int i = 0; i < count; ++i) {
        const cost_shape *s = &SHAPES[i];
        if (quick && s->T > 1024 && s->E > 64) continue;
        fprintf(stderr, "\r[host cost %d/%d] %s T=%u        ", i + 1, count, s->what, s->T);
        double medians[WAYS][MEASURES] = {{0}};
        if (!run_shape(context, &counter, s, warmup, repeats, medians)) {
            fprintf(out, "%-14s %6u %4u %3u  skipped: %s\n", s->what, s->T, s->E, s->k,
                    moevk_context_last_error(context));
            continue;
        }
        for (int w = 0; w < WAYS; ++w)
            fprintf(out, "%-14s %6u %4u %3u  %-11s %10.1f %10.1f %12.0f\n", s->what, s->T, s->E,
                    s->k, WAY_NAMES[w], medians[w][SUBMIT_US], medians[w][CALL_US],
                    medians[w][ALLOCATIONS]);
    }
    fprintf(stderr, "\n");
    moevk_context_destroy(context);
}
