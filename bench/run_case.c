/* One benchmark case: routers created for its sizes, inputs in device buffers, warm-up routes,
 * then timed routes and combines over rotating routers (each with its own buffers, so that caches
 * do not flatter the result), GPU stage times from moevk's timestamps, medians and spreads, napkin
 * bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define ROTATION 3

static uint32_t state = 2463534242u;
static float noise(void) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return (float)(state >> 8) / 16777216.0f * 4.0f - 2.0f;
}

static void fill(void *data, uint64_t count, moevk_dtype type) {
    for (uint64_t i = 0; i < count; ++i) {
        float v = noise();
        if (type == MOEVK_DTYPE_F32)
            ((float *)data)[i] = v;
        else {
            uint32_t bits;
            memcpy(&bits, &v, 4);
            /* bf16 by truncation, f16 by a rough conversion: only timing depends on them */
            ((uint16_t *)data)[i] = type == MOEVK_DTYPE_BF16
                                        ? (uint16_t)(bits >> 16)
                                        : (uint16_t)(0x3C00 | (bits >> 13 & 0x3FF));
        }
    }
}

static void summarise(double *samples, int n, stage_figures *out) {
    qsort(samples, n, sizeof *samples, bench_compare_double);
    out->median_ms = samples[n / 2];
    out->best_ms = samples[0];
    out->low_ms = samples[n / 10];
    out->high_ms = samples[n - 1 - n / 10];
}

void run_case(moevk_context *context, bench_case *c, int warmup, int repeats) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = c->E;
    info.top_k = c->k;
    info.max_tokens = c->T;
    info.hidden_size = c->d;
    info.hidden_type = c->dtype;
    info.profile = 1;
    info.selection_kernel = c->selection;
    info.choice_block_tokens = c->choice_block;
    if (c->policy == POLICY_SCORE) info.drop_policy = MOEVK_DROP_SCORE;
    if (c->policy == POLICY_DROPLESS) info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    static const moevk_routing_mode MODES[] = {MOEVK_MODE_SEQUENCE, MOEVK_MODE_BATCH,
                                               MOEVK_MODE_SINKHORN, MOEVK_MODE_EXPERT_CHOICE};
    if (c->policy >= POLICY_SEQUENCE) info.mode = MODES[c->policy - POLICY_SEQUENCE];
    info.sequence_length = 256;
    c->ran = 0;
    moevk_router *routers[ROTATION] = {0};
    moevk_buffer *logits_buf = NULL, *hidden_buf = NULL, *out_buf = NULL, *combined_buf = NULL;
    for (int i = 0; i < ROTATION; ++i) {
        moevk_result r = moevk_router_create(context, &info, &routers[i]);
        if (r != MOEVK_SUCCESS) {
            snprintf(c->skipped, sizeof c->skipped, "%s", moevk_context_last_error(context));
            for (int j = 0; j < i; ++j) moevk_router_destroy(routers[j]);
            return;
        }
    }
    uint64_t eb = c->dtype == MOEVK_DTYPE_F32 ? 4 : 2;
    uint64_t max_rows = moevk_router_max_dispatched_rows(routers[0]);
    float *logits = malloc((uint64_t)c->T * c->E * 4);
    void *hidden = malloc((uint64_t)c->T * c->d * eb + 4);
    void *expert_out = malloc(max_rows * c->d * eb + 4);
    void *combined = malloc((uint64_t)c->T * c->d * eb + 4);
    int samples = repeats > 0 ? repeats : 1;
    double *times[STAGE_N];
    for (int s = 0; s < STAGE_N; ++s) times[s] = calloc(samples, sizeof(double));
    if (!logits || !hidden || !expert_out || !combined || !times[STAGE_N - 1]) {
        snprintf(c->skipped, sizeof c->skipped, "out of host memory");
        goto done;
    }
    fill(logits, (uint64_t)c->T * c->E, MOEVK_DTYPE_F32);
    fill(hidden, (uint64_t)c->T * c->d, c->dtype);
    fill(expert_out, max_rows * c->d, c->dtype);
    /* Inputs live on the device, as in a model: no host transfer inside the timed loop. */
    uint64_t logit_bytes = (uint64_t)c->T * c->E * 4, hidden_bytes = (uint64_t)c->T * c->d * eb;
    uint64_t rows_bytes = max_rows * c->d * eb;
    int with_hidden = c->d > 0; /* d = 0: routing decisions and statistics only */
    if (moevk_buffer_create(context, logit_bytes, &logits_buf) != MOEVK_SUCCESS ||
        moevk_buffer_write(logits_buf, 0, logits, logit_bytes) != MOEVK_SUCCESS ||
        (with_hidden &&
         (moevk_buffer_create(context, hidden_bytes, &hidden_buf) != MOEVK_SUCCESS ||
          moevk_buffer_create(context, rows_bytes, &out_buf) != MOEVK_SUCCESS ||
          moevk_buffer_create(context, hidden_bytes, &combined_buf) != MOEVK_SUCCESS ||
          moevk_buffer_write(hidden_buf, 0, hidden, hidden_bytes) != MOEVK_SUCCESS ||
          moevk_buffer_write(out_buf, 0, expert_out, rows_bytes) != MOEVK_SUCCESS))) {
        snprintf(c->skipped, sizeof c->skipped, "%s", moevk_context_last_error(context));
        goto done;
    }

    moevk_route_stats stats = {0};
    for (int i = 0; i < warmup + samples; ++i) {
        moevk_router *router = routers[i % ROTATION];
        moevk_route_input input = {.num_tokens = c->T,
                                   .logits = moevk_buffer_tensor(logits_buf, 0),
                                   .hidden = moevk_buffer_tensor(hidden_buf, 0)};
        moevk_route_output output = {.stats = &stats};
        moevk_timings t = {0};
        if (moevk_route(router, &input, &output) != MOEVK_SUCCESS ||
            (with_hidden && moevk_combine(router, moevk_buffer_tensor(out_buf, 0),
                                          moevk_buffer_tensor(combined_buf, 0)) != MOEVK_SUCCESS) ||
            moevk_router_timings(router, &t) != MOEVK_SUCCESS) {
            snprintf(c->skipped, sizeof c->skipped, "%s", moevk_context_last_error(context));
            goto done;
        }
        if (i < warmup) continue;
        int n = i - warmup;
        times[STAGE_TOPK][n] = t.scores_topk_ms;
        times[STAGE_BUCKET][n] = t.bucketing_ms;
        times[STAGE_DISPATCH][n] = t.dispatch_ms;
        times[STAGE_COMBINE][n] = t.combine_ms;
        times[STAGE_STATS][n] = t.stats_ms;
        times[STAGE_ROUTE][n] = t.route_ms + t.combine_ms;
    }
    for (int s = 0; s < STAGE_N; ++s) summarise(times[s], samples, &c->stages[s]);
    c->capacity = stats.capacity;
    moevk_recording_counts_init(&c->counts);
    if (moevk_router_recording_counts(routers[0], &c->counts) != MOEVK_SUCCESS) {
        snprintf(c->skipped, sizeof c->skipped, "%s", moevk_context_last_error(context));
        goto done;
    }
    /* Napkin bytes: what each stage must read and write at least. */
    double T = c->T, E = c->E, k = c->k, d = c->d,
           kept = (double)(stats.assignments - stats.dropped);
    double rows = stats.dispatched_rows;
    c->stages[STAGE_TOPK].bytes = T * E * 4 + T * k * 8 + T * 20;
    c->stages[STAGE_BUCKET].bytes = T * k * 24;
    c->stages[STAGE_DISPATCH].bytes = (kept + rows) * d * eb;
    c->stages[STAGE_COMBINE].bytes = (kept + T) * d * eb + T * k * 8;
    c->stages[STAGE_STATS].bytes = T * E * 4 + T * 20;
    c->stages[STAGE_ROUTE].bytes = 0;
    for (int s = 0; s < STAGE_ROUTE; ++s) c->stages[STAGE_ROUTE].bytes += c->stages[s].bytes;
    c->ran = 1;
done:
    for (int s = 0; s < STAGE_N; ++s) free(times[s]);
    free(logits);
    free(hidden);
    free(expert_out);
    free(combined);
    moevk_buffer_destroy(logits_buf);
    moevk_buffer_destroy(hidden_buf);
    moevk_buffer_destroy(out_buf);
    moevk_buffer_destroy(combined_buf);
    for (int i = 0; i < ROTATION; ++i) moevk_router_destroy(routers[i]);
}
