/* moevk-bench --drift: what watching for drift costs a route. Three routes of the same logits
 * (on the device) interleaved over the same routers: plain, adding the batch to a routing
 * profile, and judging it against one; the GPU time of each (moevk's timestamps: the profile
 * stage sits inside the route) and the host's whole call, as medians, and the ratios to the
 * plain route measured side by side. */
#include <stdlib.h>
#include <string.h>

#include "monotonic_clock.h"
#include "bench.h"

typedef struct drift_shape {
    uint32_t T, E, k;
} drift_shape;

static const drift_shape SHAPES[] = {{1, 64, 2}, {4096, 64, 2}, {4096, 256, 8}, {16384, 64, 2}};

enum { PLAIN, ADDED, JUDGED, WAYS };
static const char *const WAY_NAMES[WAYS] = {"plain", "add to profile", "judge drift"};

static double wall_ms(void) { return monotonic_seconds() * 1e3; }

static double median(double *values, int n) {
    qsort(values, (size_t)n, sizeof *values, bench_compare_double);
    return values[n / 2];
}

/* Medians [WAYS][2] (GPU ms, host ms) of one shape; 0 when it could not run. */
static int run_shape(moevk_context *context, const drift_shape *s, int warmup, int repeats,
                     double medians[WAYS][2]) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = s->E;
    info.top_k = s->k;
    info.max_tokens = s->T;
    info.profile = 1;
    moevk_router *router = NULL;
    moevk_buffer *logits_buf = NULL;
    moevk_profile *added = NULL, *reference = NULL;
    uint64_t bytes = (uint64_t)s->T * s->E * 4;
    float *logits = malloc(bytes);
    double *samples[WAYS][2] = {{0}};
    int ok = logits && moevk_router_create(context, &info, &router) == MOEVK_SUCCESS &&
             moevk_buffer_create(context, bytes, &logits_buf) == MOEVK_SUCCESS;
    uint32_t state = 2463534242u;
    for (uint64_t i = 0; ok && i < (uint64_t)s->T * s->E; ++i) {
        state ^= state << 13, state ^= state >> 17, state ^= state << 5;
        logits[i] = (float)(state >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    ok = ok && moevk_buffer_write(logits_buf, 0, logits, bytes) == MOEVK_SUCCESS;
    moevk_profile_info profile_info;
    moevk_profile_info_for_router(router, &profile_info);
    ok = ok && moevk_profile_create(&profile_info, &added) == MOEVK_SUCCESS &&
         moevk_profile_create(&profile_info, &reference) == MOEVK_SUCCESS;
    for (int w = 0; w < WAYS; ++w)
        for (int m = 0; m < 2; ++m) ok = ok && (samples[w][m] = calloc(repeats, 8)) != NULL;
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = s->T;
    input.logits = moevk_buffer_tensor(logits_buf, 0);
    if (ok) { /* the profile judged against: one batch of the same logits */
        moevk_route_output output;
        moevk_route_output_init(&output);
        output.profile = reference;
        ok = moevk_route(router, &input, &output) == MOEVK_SUCCESS;
    }
    for (int i = 0; ok && i < warmup + repeats; ++i)
        for (int w = 0; ok && w < WAYS; ++w) {
            moevk_route_stats stats;
            moevk_route_stats_init(&stats);
            moevk_route_output output;
            moevk_route_output_init(&output);
            output.stats = &stats;
            if (w == ADDED) output.profile = added;
            if (w == JUDGED) output.drift_profile = reference;
            moevk_timings t;
            moevk_timings_init(&t);
            double start = wall_ms();
            ok = moevk_route(router, &input, &output) == MOEVK_SUCCESS;
            double host = wall_ms() - start;
            ok = ok && moevk_router_timings(router, &t) == MOEVK_SUCCESS;
            if (!ok || i < warmup) continue;
            samples[w][0][i - warmup] = t.route_ms;
            samples[w][1][i - warmup] = host;
        }
    for (int w = 0; ok && w < WAYS; ++w)
        for (int m = 0; m < 2; ++m) medians[w][m] = median(samples[w][m], repeats);
    for (int w = 0; w < WAYS; ++w)
        for (int m = 0; m < 2; ++m) free(samples[w][m]);
    moevk_profile_destroy(added);
    moevk_profile_destroy(reference);
    moevk_buffer_destroy(logits_buf);
    moevk_router_destroy(router);
    free(logits);
    return ok;
}

void run_drift_cases(moevk_context *context, FILE *out, int quick, int warmup, int repeats) {
    int count = (int)(sizeof SHAPES / sizeof SHAPES[0]) - (quick ? 1 : 0);
    fprintf(out,
            "\nDrift watching (routing profiles): GPU route ms and host call ms, medians of "
            "%d interleaved runs; ratio to the plain route\n",
            repeats);
    fprintf(out, "%7s %5s %3s  %-15s %10s %7s %10s %7s\n", "T", "E", "k", "route", "GPU ms",
            "ratio", "host ms", "ratio");
    for (int i = 0; i < count; ++i) {
        double medians[WAYS][2] = {{0}};
        fprintf(stderr, "\r[drift %d/%d] T=%u E=%u        ", i + 1, count, SHAPES[i].T,
                SHAPES[i].E);
        if (!run_shape(context, &SHAPES[i], warmup, repeats, medians)) {
            fprintf(out, "%7u %5u %3u  skipped: %s\n", SHAPES[i].T, SHAPES[i].E, SHAPES[i].k,
                    moevk_context_last_error(context));
            continue;
        }
        for (int w = 0; w < WAYS; ++w)
            fprintf(out, "%7u %5u %3u  %-15s %10.3f %7.2f %10.3f %7.2f\n", SHAPES[i].T, SHAPES[i].E,
                    SHAPES[i].k, WAY_NAMES[w], medians[w][0], medians[w][0] / medians[PLAIN][0],
                    medians[w][1], medians[w][1] / medians[PLAIN][1]);
    }
    fprintf(stderr, "\n");
}
