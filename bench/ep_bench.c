/* moevk-ep-bench: the expert-parallel layer's exchange, run as `mpirun -np R moevk-ep-bench`.
 *
 * For each overlap degree (--chunks, default 1,2,4,0; 0 the layer's automatic choice), the
 * median over --repeats forwards (after one) of each part of the forward, the slowest rank's,
 * and the bytes the exchanges moved; the share of the forward the host spent waiting on MPI
 * with no experts running (the bytes' time and the other ranks' lateness together); and the
 * share of that wait that chunks hid (against one chunk's, side by side in the run). Beside
 * them, measured in the same run: host memcpy's GB/s, and a bare MPI_Alltoall of the same
 * bytes, from which "bytes alone" is what moving the forward's bytes costs with nothing else
 * in the way.
 *
 * Shapes (--shape): mixtral (E 8, k 2, d 4096, f 14336) and qwen3 (E 128, k 8, d 2048, f 768),
 * d and f divided by --divide (default 8, so that a CPU device finishes); f16 weights, f32
 * hidden states, T tokens per rank (--tokens, default 256), DROPLESS. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moevk_mpi.h"

typedef struct shape {
    const char *name;
    uint32_t E, k, d, f;
} shape;

static const shape SHAPES[] = {{"mixtral", 8, 2, 4096, 14336}, {"qwen3", 128, 8, 2048, 768}};

typedef struct options {
    shape shape;
    uint32_t tokens, repeats, divide;
    uint32_t chunks[8];
    int chunk_count;
} options;

static int parse(int argc, char **argv, options *o) {
    o->shape = SHAPES[0];
    o->tokens = 256, o->repeats = 5, o->divide = 8;
    o->chunks[0] = 1, o->chunks[1] = 2, o->chunks[2] = 4, o->chunks[3] = 0, o->chunk_count = 4;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return 0;
        ++i;
        if (!strcmp(a, "--shape")) {
            int found = 0;
            for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; ++s)
                if (!strcmp(v, SHAPES[s].name)) o->shape = SHAPES[s], found = 1;
            if (!found) return 0;
        } else if (!strcmp(a, "--tokens"))
            o->tokens = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--repeats"))
            o->repeats = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--divide"))
            o->divide = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--chunks")) {
            o->chunk_count = 0;
            for (char *end = (char *)v; *end && o->chunk_count < 8;) {
                o->chunks[o->chunk_count++] = (uint32_t)strtoul(end, &end, 10);
                if (*end == ',') ++end;
            }
        } else
            return 0;
    }
    o->shape.d = o->shape.d / o->divide / 32 * 32;
    o->shape.f = o->shape.f / o->divide / 32 * 32;
    return o->tokens > 0 && o->repeats > 0 && o->shape.d > 0 && o->shape.f > 0;
}

static uint32_t next(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return *state;
}

/* count values in [-scale, scale) as f32, or as f16 bits when half. */
static void *pattern(uint64_t count, float scale, int half, uint32_t seed) {
    void *data = malloc(count * (half ? 2 : 4) + 4);
    uint32_t state = seed;
    for (uint64_t i = 0; data && i < count; ++i) {
        float x = ((float)(next(&state) >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
        if (!half) {
            ((float *)data)[i] = x;
            continue;
        }
        /* f16 of a small normal x: sign, exponent rebased, 10 mantissa bits (truncated). */
        uint32_t bits;
        memcpy(&bits, &x, 4);
        int exponent = (int)((bits >> 23) & 0xff) - 127 + 15;
        uint16_t h = (uint16_t)((bits >> 16) & 0x8000);
        if (exponent > 0) h |= (uint16_t)(exponent << 10 | ((bits >> 13) & 0x3ff));
        ((uint16_t *)data)[i] = h;
    }
    return data;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, uint32_t n) {
    qsort(values, n, sizeof *values, compare_doubles);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/* Host memcpy's GB/s (bytes read plus written) over a buffer of `bytes`, median of 5. */
static double memcpy_gbps(size_t bytes) {
    char *a = malloc(bytes), *b = malloc(bytes);
    double times[5] = {0};
    if (!a || !b) {
        free(a), free(b);
        return 0.0;
    }
    memset(a, 1, bytes), memset(b, 2, bytes);
    for (int i = 0; i < 5; ++i) {
        double start = MPI_Wtime();
        memcpy(b, a, bytes);
        times[i] = MPI_Wtime() - start;
        a[i] = b[bytes - 1 - (size_t)i]; /* keeps the copies */
    }
    free(a), free(b);
    return 2.0 * (double)bytes / median(times, 5) / 1e9;
}

/* A bare MPI_Alltoall of `pair` bytes between every two ranks (both ways, as the rows out and
 * their results back): the bytes that cross between ranks per second, median of 5. */
static double alltoall_gbps(size_t pair, int ranks) {
    char *a = malloc(pair * (size_t)ranks + 1), *b = malloc(pair * (size_t)ranks + 1);
    double times[5] = {0};
    int ok = a && b && pair <= (size_t)INT_MAX, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all) {
        free(a), free(b);
        return 0.0;
    }
    memset(a, 3, pair * (size_t)ranks);
    for (int i = 0; i < 6; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        MPI_Alltoall(a, (int)pair, MPI_BYTE, b, (int)pair, MPI_BYTE, MPI_COMM_WORLD);
        double mine = MPI_Wtime() - start, slowest = 0;
        MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (i > 0) times[i - 1] = slowest;
    }
    free(a), free(b);
    double crossing = ranks > 1 ? (double)pair * ranks * (ranks - 1) : (double)pair;
    return crossing / median(times, 5) / 1e9;
}

enum { PARTS = 6 }; /* forward, route, exchange, experts, exposed, combine */

static void parts_of(const moevk_ep_timings *t, double *parts) {
    parts[0] = t->forward_seconds, parts[1] = t->route_seconds, parts[2] = t->exchange_seconds;
    parts[3] = t->experts_seconds, parts[4] = t->exposed_seconds, parts[5] = t->combine_seconds;
}

/* One overlap degree: medians of the slowest rank's parts, and the bytes sent to other ranks
 * (all ranks') and to themselves. */
static moevk_result run_chunks(moevk_context *context, const options *o, uint32_t chunks, int rank,
                               double *medians, double *bytes, uint32_t *chosen) {
    const shape *s = &o->shape;
    uint32_t E = s->E;
    moevk_router_info router;
    moevk_router_info_init(&router);
    router.num_experts = E, router.top_k = s->k, router.hidden_size = s->d;
    router.max_tokens = o->tokens, router.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    router.renormalize = 1;
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router, info.intermediate_size = s->f;
    info.activation = MOEVK_ACTIVATION_SWIGLU, info.weight_type = MOEVK_DTYPE_F16;
    moevk_ep_layer_info ep_info;
    moevk_ep_layer_info_init(&ep_info);
    ep_info.layer = &info, ep_info.comm = MPI_COMM_WORLD, ep_info.exchange_chunks = chunks;
    moevk_ep_layer *ep = NULL;
    moevk_result r = moevk_ep_layer_create(context, &ep_info, &ep);
    if (r != MOEVK_SUCCESS) return r;
    uint32_t first = 0, count = 0;
    moevk_ep_layer_experts(ep, NULL, NULL, &first, &count);
    uint64_t d = s->d, f = s->f;
    void *router_w = pattern((uint64_t)E * d, 0.5f, 0, 7);
    void *up = pattern((uint64_t)count * f * d, 0.05f, 1, 11 + first);
    void *gate = pattern((uint64_t)count * f * d, 0.05f, 1, 13 + first);
    void *down = pattern((uint64_t)count * d * f, 0.05f, 1, 17 + first);
    float *hidden = pattern((uint64_t)o->tokens * d, 1.0f, 0, 19 + (uint32_t)rank);
    float *output = malloc((size_t)o->tokens * d * 4);
    double *samples = calloc((size_t)o->repeats * PARTS, sizeof(double));
    if (!router_w || !up || !gate || !down || !hidden || !output || !samples)
        r = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS)
        r = moevk_ep_layer_set_weights(ep, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(router_w));
    if (r == MOEVK_SUCCESS)
        r = moevk_ep_layer_set_weights(ep, MOEVK_WEIGHT_GATE, first, count,
                                       moevk_host_tensor(gate));
    if (r == MOEVK_SUCCESS)
        r = moevk_ep_layer_set_weights(ep, MOEVK_WEIGHT_UP, first, count, moevk_host_tensor(up));
    if (r == MOEVK_SUCCESS)
        r = moevk_ep_layer_set_weights(ep, MOEVK_WEIGHT_DOWN, first, count,
                                       moevk_host_tensor(down));
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = o->tokens, input.hidden = moevk_host_tensor(hidden), input.inference = 1;
    moevk_layer_output out;
    moevk_layer_output_init(&out);
    out.output = moevk_host_tensor(output);
    moevk_ep_timings t;
    for (uint32_t i = 0; i <= o->repeats && r == MOEVK_SUCCESS; ++i) {
        MPI_Barrier(MPI_COMM_WORLD); /* every rank starts each forward together */
        r = moevk_ep_layer_forward(ep, &input, &out);
        moevk_ep_timings_init(&t);
        if (r == MOEVK_SUCCESS) r = moevk_ep_layer_timings(ep, &t);
        double mine[PARTS], slowest[PARTS];
        parts_of(&t, mine);
        MPI_Allreduce(mine, slowest, PARTS, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        for (int p = 0; i > 0 && p < PARTS; ++p)
            samples[(size_t)p * o->repeats + i - 1] = slowest[p];
    }
    if (r == MOEVK_SUCCESS) {
        for (int p = 0; p < PARTS; ++p)
            medians[p] = median(samples + (size_t)p * o->repeats, o->repeats);
        double mine[2] = {(double)t.bytes_to_others, (double)t.bytes_to_self};
        MPI_Allreduce(mine, bytes, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        *chosen = t.chunks;
    }
    free(router_w), free(up), free(gate), free(down), free(hidden), free(output), free(samples);
    moevk_ep_layer_destroy(ep);
    return r;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, ranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    options o;
    memset(&o, 0, sizeof o);
    int help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    if (help || !parse(argc, argv, &o)) {
        if (rank == 0)
            fprintf(help ? stdout : stderr,
                    "usage: mpirun -np R moevk-ep-bench [--shape mixtral|qwen3] [--tokens T] "
                    "[--repeats N] [--divide D] [--chunks 1,2,4,0]\n");
        MPI_Finalize();
        return help ? 0 : 2;
    }
    moevk_context_info context_info;
    moevk_context_info_init(&context_info);
    moevk_context *context = NULL;
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "rank %d: %s\n", rank, moevk_result_string(r));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const shape *s = &o.shape;
    size_t exchanged = (size_t)o.tokens * s->k * s->d * 8; /* a rank's rows out and back */
    double copy = memcpy_gbps(exchanged > (64u << 20) ? exchanged : (64u << 20));
    double bare = alltoall_gbps(exchanged / (size_t)ranks, ranks);
    if (rank == 0) {
        printf("# moevk-ep-bench: %s-like, E %u, k %u, d %u, f %u, f16 weights, f32 hidden, %u "
               "tokens a rank, %d ranks, DROPLESS; medians of %u forwards, the slowest rank's\n",
               s->name, s->E, s->k, s->d, s->f, o.tokens, ranks, o.repeats);
        printf("# host memcpy (read + write): %.1f GB/s; a bare MPI_Alltoall of a forward's bytes "
               "(%zu to each rank): %.2f GB/s between ranks\n",
               copy, exchanged / (size_t)ranks, bare);
        printf("| ranks | chunks | forward ms | route ms | exchange ms | experts ms | exposed ms | "
               "combine ms | MB to others | bytes alone ms | exposed share | hidden |\n");
        printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
               "---: |\n");
    }
    double unchunked_exposed = 0.0;
    for (int c = 0; c < o.chunk_count && r == MOEVK_SUCCESS; ++c) {
        double m[PARTS] = {0}, bytes[2] = {0};
        uint32_t chosen = 0;
        r = run_chunks(context, &o, o.chunks[c], rank, m, bytes, &chosen);
        if (r != MOEVK_SUCCESS) break;
        if (o.chunks[c] == 1) unchunked_exposed = m[4];
        char degree[32];
        snprintf(degree, sizeof degree, o.chunks[c] ? "%u" : "auto (%u)", chosen);
        /* Bytes that crossed between ranks (sent, each counted once), at the bare
         * MPI_Alltoall's rate; R = 1 moves only its own (MPI's self copy). */
        double moved = ranks > 1 ? bytes[0] : bytes[1];
        char hidden[32] = "";
        if (unchunked_exposed > 0 && chosen > 1)
            snprintf(hidden, sizeof hidden, "%.0f%%", 100.0 * (1.0 - m[4] / unchunked_exposed));
        if (rank == 0)
            printf("| %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f | %.0f%% | "
                   "%s |\n",
                   ranks, degree, m[0] * 1e3, m[1] * 1e3, m[2] * 1e3, m[3] * 1e3, m[4] * 1e3,
                   m[5] * 1e3, moved / 1e6, bare > 0 ? moved / bare / 1e6 : 0.0,
                   100.0 * m[4] / m[0], hidden);
    }
    if (r != MOEVK_SUCCESS)
        fprintf(stderr, "rank %d: %s: %s\n", rank, moevk_result_string(r),
                moevk_context_last_error(context));
    moevk_context_destroy(context);
    MPI_Finalize();
    return r == MOEVK_SUCCESS ? 0 : 1;
}
