/* moevk-bench --layers: the whole MoE layer (router projection, route, SwiGLU experts, shared
 * experts, combine) in shapes like real models', prefill and decode, timed by the router's GPU
 * timestamps over device-resident hidden states and output.
 *
 * Prefill is bound by arithmetic: its figure is GFLOP/s of the experts' products beside the FMA
 * ceiling. Decode (T = 1 to 8) is bound by reading the chosen experts' weights once: its figure
 * is those bytes per second beside the copy ceiling. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_REPEATS 64

static int add(layer_case *cases, int count, int capacity, layer_case c) {
    if (count < capacity) cases[count++] = c;
    return count;
}

/* Mixtral-8x7B, Qwen3-30B-A3B, DeepSeek-V2-Lite-like (2 shared experts). */
static const layer_case MODELS[] = {
    {.model = "mixtral", .E = 8, .k = 2, .d = 4096, .f = 14336},
    {.model = "qwen3-30b-a3b", .E = 128, .k = 8, .d = 2048, .f = 768},
    {.model = "deepseek", .E = 64, .k = 6, .d = 2048, .f = 1408, .fs = 2816},
};

/* The weight types of the full plan: f16, bf16 and the block formats desktop GGUF files hold
 * (Q4_K_M's Q4_K and Q6_K, Q8_0); quick: f16 and Q8_0. */
static const moevk_dtype FULL_TYPES[] = {MOEVK_DTYPE_F16, MOEVK_DTYPE_BF16, MOEVK_DTYPE_Q8_0,
                                         MOEVK_DTYPE_Q4_K, MOEVK_DTYPE_Q6_K},
                         QUICK_TYPES[] = {MOEVK_DTYPE_F16, MOEVK_DTYPE_Q8_0};

int plan_layer_cases(layer_case *cases, int capacity, int quick) {
    /* quick: d and f divided so that a CPU device finishes in seconds. */
    static const uint32_t FULL_T[] = {512, 4096, 16384, 1, 4, 8}, QUICK_T[] = {512, 1, 8};
    const uint32_t *Ts = quick ? QUICK_T : FULL_T;
    int n_T = quick ? 3 : 6, count = 0;
    const moevk_dtype *types = quick ? QUICK_TYPES : FULL_TYPES;
    int n_types = quick ? 2 : 5;
    for (int m = 0; m < 3; ++m)
        for (int type = 0; type < n_types; ++type)
            for (int t = 0; t < n_T; ++t) {
                layer_case c = MODELS[m];
                if (quick) { /* whole Q8_0 blocks still: multiples of 32 */
                    c.d = c.d / 8 / 32 * 32;
                    c.f = c.f / 8 / 32 * 32;
                    c.fs = c.fs / 8 / 32 * 32;
                }
                c.T = Ts[t];
                c.weight_type = types[type];
                count = add(cases, count, capacity, c);
            }
    /* The shape llama.cpp's MUL_MAT_ID was measured at on this project's lavapipe (f32, f16). */
    layer_case llama = {
        .model = "llama.cpp's case", .T = 512, .E = 8, .k = 2, .d = 1024, .f = 2816};
    if (!quick) {
        count = add(cases, count, capacity, llama);
        llama.weight_type = MOEVK_DTYPE_F16;
        count = add(cases, count, capacity, llama);
    }
    return count;
}

static uint32_t next(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return *state;
}

/* Block formats: random bytes with each block's f16 scales (at their places in ggml's blocks)
 * small, so that the weights stay small. */
static void *pattern_blocks(uint64_t count, moevk_dtype type) {
    uint32_t block =
        type == MOEVK_DTYPE_Q8_0 || type == MOEVK_DTYPE_Q4_0 || type == MOEVK_DTYPE_Q5_0 ? 32 : 256;
    uint64_t block_bytes = (uint64_t)(dtype_bytes_per_weight(type) * block + 0.5);
    uint64_t bytes = count / block * block_bytes;
    unsigned char *data = malloc(bytes + 4);
    uint32_t state = 54321;
    for (uint64_t i = 0; data && i < bytes; ++i) data[i] = (unsigned char)(next(&state) >> 24);
    uint64_t scale_at = type == MOEVK_DTYPE_Q6_K ? 208 : 0;
    for (uint64_t b = 0; data && b < count / block; ++b) {
        unsigned char *at = data + b * block_bytes + scale_at;
        at[0] = 0x00, at[1] = 0x14; /* 2^-10 */
        if (type == MOEVK_DTYPE_Q4_K || type == MOEVK_DTYPE_Q5_K) at[2] = 0x00, at[3] = 0x14;
    }
    return data;
}

/* One expert's matrix worth of small values in type, reused for every expert (timing does not
 * depend on the values). */
static void *pattern(uint64_t count, moevk_dtype type, float scale) {
    if (type >= MOEVK_DTYPE_Q8_0) return pattern_blocks(count, type);
    size_t item = type == MOEVK_DTYPE_F32 ? 4 : 2;
    unsigned char *data = malloc(count * item + 4);
    uint32_t state = 12345;
    for (uint64_t i = 0; data && i < count; ++i) {
        float v = ((float)(next(&state) >> 8) / 16777216.0f - 0.5f) * scale;
        if (type == MOEVK_DTYPE_F32) {
            memcpy(data + 4 * i, &v, 4);
            continue;
        }
        uint32_t bits, r = next(&state);
        memcpy(&bits, &v, 4);
        /* bf16: the high half; f16: a sign, an exponent of 2^-5 to 2^-2, a mantissa. */
        uint16_t half =
            type == MOEVK_DTYPE_BF16
                ? (uint16_t)(bits >> 16)
                : (uint16_t)((r & 0x8000u) | ((10u + (r >> 20) % 4u) << 10) | (r & 0x3FFu));
        memcpy(data + 2 * i, &half, 2);
    }
    return data;
}

moevk_result layer_case_set_weights(moevk_layer *layer, const layer_case *c) {
    uint64_t d = c->d, f = c->f, fs = c->fs;
    float *router = pattern(c->E * d, MOEVK_DTYPE_F32, 1.0f);
    void *expert = pattern(f * d, c->weight_type, 0.05f);
    void *shared = fs ? pattern(fs * d, c->weight_type, 0.05f) : NULL;
    moevk_result r =
        router && expert && (!fs || shared) ? MOEVK_SUCCESS : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_set_weights(layer, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(router));
    static const moevk_layer_weight EXPERT[3] = {MOEVK_WEIGHT_GATE, MOEVK_WEIGHT_UP,
                                                 MOEVK_WEIGHT_DOWN};
    static const moevk_layer_weight SHARED[3] = {MOEVK_WEIGHT_SHARED_GATE, MOEVK_WEIGHT_SHARED_UP,
                                                 MOEVK_WEIGHT_SHARED_DOWN};
    for (uint32_t e = 0; e < c->E; ++e)
        for (int w = 0; w < 3 && r == MOEVK_SUCCESS; ++w)
            r = moevk_layer_set_weights(layer, EXPERT[w], e, 1, moevk_host_tensor(expert));
    for (int w = 0; fs && w < 3 && r == MOEVK_SUCCESS; ++w)
        r = moevk_layer_set_weights(layer, SHARED[w], 0, 1, moevk_host_tensor(shared));
    free(router), free(expert), free(shared);
    return r;
}

void layer_case_infos(const layer_case *c, moevk_router_info *router, moevk_layer_info *info) {
    moevk_router_info_init(router);
    router->num_experts = c->E;
    router->top_k = c->k;
    router->max_tokens = c->T;
    router->hidden_size = c->d;
    router->renormalize = 1;
    router->capacity_mode = MOEVK_CAPACITY_DROPLESS; /* as the models run at inference */
    moevk_layer_info_init(info);
    info->router = router;
    info->intermediate_size = c->f;
    info->shared_intermediate_size = c->fs;
    info->weight_type = c->weight_type;
    info->host_weights = c->host_weights;
}

void run_layer_case(moevk_context *context, layer_case *c, int warmup, int repeats) {
    if (repeats > MAX_REPEATS) repeats = MAX_REPEATS;
    moevk_router_info router;
    moevk_layer_info info;
    layer_case_infos(c, &router, &info);
    router.profile = 1;
    moevk_layer *layer = NULL;
    moevk_buffer *hidden = NULL, *output = NULL;
    uint64_t bytes = (uint64_t)c->T * c->d * 4;
    moevk_result r = moevk_layer_create(context, &info, &layer);
    if (r == MOEVK_SUCCESS) r = layer_case_set_weights(layer, c);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(context, bytes, &hidden);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(context, bytes, &output);
    float *x = r == MOEVK_SUCCESS ? pattern((uint64_t)c->T * c->d, MOEVK_DTYPE_F32, 2.0f) : NULL;
    if (r == MOEVK_SUCCESS)
        r = x ? moevk_buffer_write(hidden, 0, x, bytes) : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    free(x);
    uint32_t *counts = calloc(c->E, 4);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    input.hidden = moevk_buffer_tensor(hidden, 0);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.counts = moevk_host_tensor(counts);
    moevk_layer_output out;
    moevk_layer_output_init(&out);
    out.output = moevk_buffer_tensor(output, 0);
    out.route = &route;
    double route_ms[MAX_REPEATS], layer_ms[MAX_REPEATS], combine_ms[MAX_REPEATS];
    for (int i = 0; r == MOEVK_SUCCESS && i < warmup + repeats; ++i) {
        r = moevk_layer_forward(layer, &input, &out);
        moevk_timings timings;
        moevk_timings_init(&timings);
        if (r == MOEVK_SUCCESS) r = moevk_router_timings(moevk_layer_router(layer), &timings);
        if (i >= warmup) {
            route_ms[i - warmup] = timings.route_ms;
            layer_ms[i - warmup] = timings.layer_ms;
            combine_ms[i - warmup] = timings.layer_combine_ms;
        }
    }
    if (r == MOEVK_SUCCESS) {
        c->ran = 1;
        c->route_ms = bench_median(route_ms, repeats);
        c->layer_ms = bench_median(layer_ms, repeats);
        c->combine_ms = bench_median(combine_ms, repeats);
        double rows = (double)c->T * c->k, matrix = (double)c->f * c->d;
        double shared = (double)c->fs * c->d, item = dtype_bytes_per_weight(c->weight_type);
        c->flop = 6.0 * (rows * matrix + (double)c->T * shared);
        uint32_t chosen = 0;
        for (uint32_t e = 0; e < c->E; ++e) chosen += counts[e] > 0;
        c->weight_bytes = 3.0 * item * (chosen * matrix + shared);
    } else {
        snprintf(c->skipped, sizeof c->skipped, "%s: %s", moevk_result_string(r),
                 moevk_context_last_error(context));
    }
    free(counts);
    moevk_buffer_destroy(hidden);
    moevk_buffer_destroy(output);
    moevk_layer_destroy(layer);
}

void report_layer_table(FILE *out, const ceilings *ceil, const layer_case *cases, int count) {
    fprintf(out,
            "\nThe MoE layer (SwiGLU, dropless, renormalised top-k): GPU medians in ms; prefill "
            "GFLOP/s of the experts' products and %% of the FMA ceiling (%.1f GFLOP/s); decode "
            "(T <= 8) GB/s of the chosen experts' weights and %% of the copy ceiling (%.1f GB/s); "
            "combine: the layer's combine, its share of the layer (what fusing it into the down "
            "projection could save at most)\n",
            ceil->fma_gflops, ceil->copy_gbps);
    fprintf(out, "| model | T | E | k | d | f | shared f | weights | route | experts | combine | "
                 "GFLOP/s | %% FMA | GB/s | %% copy |\n");
    fprintf(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | "
                 "---: | ---: | ---: | ---: |\n");
    for (int i = 0; i < count; ++i) {
        const layer_case *c = &cases[i];
        fprintf(out, "| %s | %u | %u | %u | %u | %u | %u | %s%s | ", c->model, c->T, c->E, c->k,
                c->d, c->f, c->fs, dtype_name(c->weight_type),
                c->host_weights ? " in host memory" : "");
        if (!c->ran) {
            fprintf(out, "skipped: %s | | | | | | |\n", c->skipped);
            continue;
        }
        double seconds = c->layer_ms * 1e-3;
        double gflops = seconds > 0 ? c->flop / seconds * 1e-9 : 0;
        double gbps = seconds > 0 ? c->weight_bytes / seconds * 1e-9 : 0;
        int decode = c->T <= 8;
        fprintf(out, "%.3f | %.3f | %.3f (%.1f%%) | %.1f | %.0f | ", c->route_ms, c->layer_ms,
                c->combine_ms, c->layer_ms > 0 ? 100 * c->combine_ms / c->layer_ms : 0, gflops,
                ceil->fma_gflops > 0 ? 100 * gflops / ceil->fma_gflops : 0);
        if (decode)
            fprintf(out, "%.1f | %.0f |\n", gbps,
                    ceil->copy_gbps > 0 ? 100 * gbps / ceil->copy_gbps : 0);
        else
            fprintf(out, " | |\n");
    }
}

void report_layer_memory(FILE *out) {
    fprintf(out, "\nThe experts' weights of each shape (routed and shared, gate, up and down): "
                 "bytes per weight, and GB for one layer\n");
    fprintf(out, "| model | E | d | f | shared f |");
    for (int t = 0; t < 5; ++t) fprintf(out, " %s |", dtype_name(FULL_TYPES[t]));
    fprintf(out, "\n| --- | ---: | ---: | ---: | ---: |");
    for (int t = 0; t < 5; ++t) fprintf(out, " ---: |");
    fprintf(out, "\n| bytes per weight | | | | |");
    for (int t = 0; t < 5; ++t) fprintf(out, " %.4f |", dtype_bytes_per_weight(FULL_TYPES[t]));
    fprintf(out, "\n");
    for (int m = 0; m < 3; ++m) {
        const layer_case *c = &MODELS[m];
        double weights = 3.0 * ((double)c->E * c->f * c->d + (double)c->fs * c->d);
        fprintf(out, "| %s | %u | %u | %u | %u |", c->model, c->E, c->d, c->f, c->fs);
        for (int t = 0; t < 5; ++t)
            fprintf(out, " %.3f |", weights * dtype_bytes_per_weight(FULL_TYPES[t]) * 1e-9);
        fprintf(out, "\n");
    }
}
