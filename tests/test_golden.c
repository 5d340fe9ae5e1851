/* Unchanged behaviour, bit for bit: 40 routers drawn from a fixed seed (every mode, drop policy,
 * capacity kind, dtype, score function, noise kind, groups, losses) route 8 batches each (T, the
 * inputs, bias, step, inference drawn per route; then combine, the losses with their gradients
 * in the token mode, and the per-expert loss); each route hashes every output it gives into one
 * 64-bit FNV-1a value, and tests/golden_routes.txt holds the 320 values recorded on lavapipe
 * (first before the engine was reshaped into stage modules; recorded again when the inputs
 * stopped depending on the C library, with the engine's bits unchanged: see normal()). The
 * inputs are made with integer and correctly rounded float steps only, so that the Windows
 * build (another C library, under Wine) routes the same inputs and must give the same bits.
 * A change that alters any output
 * bit of any case, or whether a case is refused, fails here. The file also names the device it
 * was recorded on: floats differ between drivers (exp, division), so on another device the
 * comparison is skipped and said so. MOEVK_GOLDEN_RECORD=FILE writes a new file instead. The
 * routers run again with the other selection kernel, which must give the same bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define ROUTERS 40
#define ROUTES_PER_ROUTER 8
#define CASES (ROUTERS * ROUTES_PER_ROUTER)
#define GOLDEN_FILE MOEVK_SOURCE_DIR "/tests/golden_routes.txt"

/* The cases' own random numbers (splitmix64 from the case index), apart from the run's seed. */
typedef struct case_rng {
    uint64_t state;
} case_rng;

static uint64_t next(case_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t below(case_rng *r, uint32_t n) { return (uint32_t)(next(r) % n); }
static float uniform(case_rng *r) { return (float)((next(r) >> 40) * (1.0 / 16777216.0)); }
/* Roughly normal (Irwin-Hall: twelve uniforms less 6) with no logf or cosf, whose last bits
 * differ between C libraries. */
static float normal(case_rng *r) {
    float sum = 0.0f;
    for (int i = 0; i < 12; ++i) sum += uniform(r);
    return sum - 6.0f;
}

static uint16_t to_half(float f) { /* round to nearest even; inputs stay in the normal range */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, exponent = (x >> 23) & 0xFF, mantissa = x & 0x7FFFFFu;
    if (exponent == 0xFF) return (uint16_t)(sign | 0x7C00u | (mantissa ? 0x200u : 0));
    int e = (int)exponent - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    if (e >= 31) return (uint16_t)(sign | 0x7C00u);
    uint32_t half = sign | (uint32_t)e << 10 | mantissa >> 13, rest = mantissa & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
    return (uint16_t)half;
}
static uint16_t to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)(x >> 16);
}
static void store(void *array, uint64_t i, moevk_dtype type, float value) {
    if (type == MOEVK_DTYPE_F32)
        ((float *)array)[i] = value;
    else
        ((uint16_t *)array)[i] = type == MOEVK_DTYPE_F16 ? to_half(value) : to_bf16(value);
}
static size_t element_bytes(moevk_dtype type) { return type == MOEVK_DTYPE_F32 ? 4 : 2; }

typedef struct fnv {
    uint64_t h;
} fnv;
static void mix(fnv *f, const void *data, size_t size) {
    const unsigned char *p = data;
    for (size_t i = 0; i < size; ++i) f->h = (f->h ^ p[i]) * 0x100000001B3ull;
}
static void mix_u64(fnv *f, uint64_t v) { mix(f, &v, sizeof v); }
static void mix_f64(fnv *f, double v) { mix(f, &v, sizeof v); }

typedef struct golden_router {
    moevk_router_info info;
    int with_losses;
} golden_router;

typedef struct golden_route {
    uint32_t T;
    int with_bias, with_hidden, inference;
    uint32_t step;
    moevk_loss_info loss;
} golden_route;

/* Router i: its options, drawn so that most combinations moevk accepts come up. */
static golden_router draw_router(case_rng *r) {
    golden_router g;
    memset(&g, 0, sizeof g);
    moevk_router_info *info = &g.info;
    moevk_router_info_init(info);
    static const moevk_routing_mode modes[] = {
        MOEVK_MODE_TOKEN,    MOEVK_MODE_TOKEN, MOEVK_MODE_TOKEN,    MOEVK_MODE_TOKEN,
        MOEVK_MODE_SEQUENCE, MOEVK_MODE_BATCH, MOEVK_MODE_SINKHORN, MOEVK_MODE_EXPERT_CHOICE};
    static const uint32_t experts[] = {1, 2, 3, 4, 8, 13, 16, 32, 64};
    info->mode = modes[below(r, 8)];
    info->num_experts = experts[below(r, 9)];
    uint32_t E = info->num_experts;
    info->top_k = 1 + below(r, E < 8 ? E : 8);
    info->max_tokens = 1 + below(r, 300);
    info->hidden_size = (uint32_t[]){0, 1, 3, 8, 16}[below(r, 5)];
    info->logits_type = below(r, 4) == 0 ? MOEVK_DTYPE_F16 : MOEVK_DTYPE_F32;
    info->hidden_type = (moevk_dtype)below(r, 3);
    info->score = below(r, 3) == 0 ? MOEVK_SCORE_SIGMOID : MOEVK_SCORE_SOFTMAX;
    info->temperature = below(r, 3) == 0 ? 0.7f : 1.0f;
    info->renormalize = (int)below(r, 2);
    info->scale = below(r, 3) == 0 ? 2.5f : 1.0f;
    uint32_t capacity = below(r, 4);
    info->capacity_mode = capacity == 3   ? MOEVK_CAPACITY_DROPLESS
                          : capacity == 2 ? MOEVK_CAPACITY_FIXED
                                          : MOEVK_CAPACITY_FACTOR;
    info->capacity_factor = 0.5f + 1.5f * uniform(r);
    info->capacity = (int32_t)below(r, info->max_tokens + 2);
    info->min_capacity = (int32_t)below(r, 5);
    info->pad_multiple = below(r, 3) == 0 ? 4 : 0;
    info->drop_policy = below(r, 3) == 0 ? MOEVK_DROP_SCORE : MOEVK_DROP_POSITION;
    info->noise = (moevk_noise_kind)below(r, 4);
    info->noise_amount = info->noise == MOEVK_NOISE_JITTER ? 0.1f : 0.5f;
    info->noise_seed = next(r);
    info->noisy_scores = (int)below(r, 2);
    info->sequence_length = 1 + below(r, 40);
    info->sinkhorn_iterations = below(r, 2) ? 0 : 1 + below(r, 30);
    if (info->mode == MOEVK_MODE_EXPERT_CHOICE && info->capacity_mode == MOEVK_CAPACITY_DROPLESS)
        info->capacity_mode = MOEVK_CAPACITY_FACTOR;
    if (info->mode == MOEVK_MODE_TOKEN) {
        if (E % 4 == 0 && below(r, 3) == 0) {
            info->num_groups = E % 8 == 0 && below(r, 2) ? 8 : 4;
            info->topk_groups = 1 + below(r, info->num_groups);
        }
        g.with_losses = below(r, 2) == 0;
    }
    if (info->noise == MOEVK_NOISE_GAUSSIAN && info->hidden_size > 0 &&
        info->mode != MOEVK_MODE_SEQUENCE && info->mode != MOEVK_MODE_BATCH && below(r, 4) == 0)
        info->learned_noise = 1;
    info->losses = g.with_losses;
    return g;
}

/* One route of a router: its size and inputs' options. */
static golden_route draw_route(case_rng *r, const golden_router *g) {
    golden_route c;
    memset(&c, 0, sizeof c);
    const moevk_router_info *info = &g->info;
    uint32_t most = info->max_tokens;
    c.T = below(r, 6) == 0 ? below(r, 3 < most + 1 ? 3 : most + 1) : 1 + below(r, most);
    c.with_bias = info->mode == MOEVK_MODE_TOKEN && below(r, 3) == 0;
    c.with_hidden = info->hidden_size > 0 && (info->learned_noise || below(r, 4) != 0);
    c.inference = below(r, 8) == 0;
    c.step = below(r, 5);
    if (g->with_losses) {
        c.loss.aux_coef = 0.01f;
        c.loss.z_coef = 0.001f;
        c.loss.importance_coef = 0.1f;
        c.loss.entropy_coef = -0.05f;
        if (info->noise == MOEVK_NOISE_GAUSSIAN) c.loss.load_coef = 0.2f;
        if (c.T > 0 && c.T % 4 == 0) {
            c.loss.sequence_coef = 0.3f;
            c.loss.sequence_length = 4;
        }
    }
    return c;
}

static float draw_logit(case_rng *r, uint32_t t, uint32_t e) {
    uint32_t kind = below(r, 40);
    if (t % 23 == 7 && e == 0) return NAN; /* a non-finite row now and then */
    if (kind == 0) return -INFINITY;
    if (kind < 4) return 0.5f * (float)below(r, 3); /* ties */
    return 2.0f * normal(r);
}

/* Runs route `index` of a router and returns the hash of every output it gives (and of the
 * result of each call). */
static uint64_t run_route(moevk_router *router, const golden_router *g, uint32_t index) {
    case_rng r = {0x5EED0000ull + index};
    golden_route c = draw_route(&r, g);
    const moevk_router_info *info = &g->info;
    fnv f = {0xCBF29CE484222325ull};
    uint32_t T = c.T, E = info->num_experts, d = info->hidden_size;
    uint32_t choices = moevk_router_choices(router);
    uint64_t TK = (uint64_t)T * choices, rows = moevk_router_max_dispatched_rows(router);
    size_t eb = element_bytes(info->hidden_type);
    void *logits = malloc((uint64_t)T * E * 4 + 4), *hidden = malloc((uint64_t)T * d * eb + 4);
    void *dispatched = calloc(rows * d * eb + 4, 1), *expert_out = malloc(rows * d * eb + 4);
    void *combined = malloc((uint64_t)T * d * eb + 4);
    float *bias = malloc(E * 4), *noise_weights = malloc((uint64_t)d * E * 4 + 4);
    float *weights = malloc(TK * 4 + 4), *grad_weights = malloc(TK * 4 + 4);
    float *grad_logits = malloc((uint64_t)T * E * 4 + 4), *token_loss = malloc(T * 4 + 4);
    float *grad_noise = malloc((uint64_t)(d + 1) * E * 4 + 4);
    int32_t *ids = malloc(TK * 4 + 4), *slots = malloc(TK * 4 + 4);
    uint32_t *counts = malloc(E * 4), *counts_before = malloc(E * 4), *offsets = malloc(E * 4 + 4);
    double *expert_loss = malloc(E * 8);
    for (uint64_t i = 0; i < (uint64_t)T * E; ++i)
        store(logits, i, info->logits_type, draw_logit(&r, (uint32_t)(i / E), (uint32_t)(i % E)));
    for (uint64_t i = 0; i < (uint64_t)T * d; ++i)
        store(hidden, i, info->hidden_type, 4.0f * uniform(&r) - 2.0f);
    for (uint32_t e = 0; e < E; ++e) bias[e] = 0.5f * normal(&r);
    for (uint64_t i = 0; i < (uint64_t)d * E; ++i) noise_weights[i] = 0.3f * normal(&r);
    moevk_route_input input = {.num_tokens = T,
                               .logits = moevk_host_tensor(logits),
                               .bias = moevk_host_tensor(c.with_bias ? bias : NULL),
                               .hidden = moevk_host_tensor(c.with_hidden ? hidden : NULL),
                               .step = c.step,
                               .layer = 1,
                               .inference = c.inference,
                               .noise_weights =
                                   moevk_host_tensor(info->learned_noise ? noise_weights : NULL)};
    int dropless = info->capacity_mode == MOEVK_CAPACITY_DROPLESS;
    moevk_route_stats stats = {0};
    memset(&stats, 0, sizeof stats);
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .weights = moevk_host_tensor(weights),
                                 .slots = moevk_host_tensor(slots),
                                 .counts = moevk_host_tensor(counts),
                                 .counts_before = moevk_host_tensor(counts_before),
                                 .offsets = moevk_host_tensor(dropless ? offsets : NULL),
                                 .dispatched = moevk_host_tensor(c.with_hidden ? dispatched : NULL),
                                 .stats = &stats};
    moevk_result result = moevk_route(router, &input, &output);
    mix_u64(&f, (uint64_t)(int64_t)result);
    if (result == MOEVK_SUCCESS) {
        mix(&f, ids, TK * 4);
        mix(&f, weights, TK * 4);
        mix(&f, slots, TK * 4);
        mix(&f, counts, E * 4);
        mix(&f, counts_before, E * 4);
        if (dropless) mix(&f, offsets, (E + 1) * 4);
        const uint64_t integers[] = {stats.capacity,        stats.dispatched_rows,
                                     stats.assignments,     stats.dropped,
                                     stats.nonfinite_rows,  stats.masked_rows,
                                     stats.unrouted_tokens, stats.sinkhorn_iterations};
        mix(&f, integers, sizeof integers);
        const double reals[] = {stats.drop_fraction,  stats.aux_loss, stats.z_loss,
                                stats.mean_logsumexp, stats.entropy,  stats.sinkhorn_error};
        mix(&f, reals, sizeof reals);
        if (c.with_hidden) mix(&f, dispatched, (uint64_t)stats.dispatched_rows * d * eb);
    }
    if (result == MOEVK_SUCCESS && c.with_hidden) {
        for (uint64_t i = 0; i < (uint64_t)stats.dispatched_rows * d; ++i)
            store(expert_out, i, info->hidden_type, 4.0f * uniform(&r) - 2.0f);
        result = moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined));
        mix_u64(&f, (uint64_t)(int64_t)result);
        if (result == MOEVK_SUCCESS) mix(&f, combined, (uint64_t)T * d * eb);
    }
    if (result == MOEVK_SUCCESS && g->with_losses) {
        for (uint64_t i = 0; i < TK; ++i) grad_weights[i] = normal(&r);
        moevk_loss_info loss = c.loss;
        loss.grad_weights = moevk_host_tensor(grad_weights);
        if (info->learned_noise) loss.grad_noise_weights = moevk_host_tensor(grad_noise);
        moevk_losses values = {0};
        memset(&values, 0, sizeof values);
        moevk_result losses_result =
            moevk_router_losses(router, &loss, &values, moevk_host_tensor(grad_logits));
        mix_u64(&f, (uint64_t)(int64_t)losses_result);
        if (losses_result == MOEVK_SUCCESS) {
            const double losses[] = {values.aux,  values.z,       values.importance,
                                     values.load, values.entropy, values.sequence,
                                     values.total};
            mix(&f, losses, sizeof losses);
            mix(&f, grad_logits, (uint64_t)T * E * 4);
            if (info->learned_noise) mix(&f, grad_noise, (uint64_t)d * E * 4);
        }
    }
    if (result == MOEVK_SUCCESS) {
        for (uint32_t t = 0; t < T; ++t) token_loss[t] = 3.0f * uniform(&r);
        result = moevk_router_expert_loss(router, moevk_host_tensor(token_loss), expert_loss);
        mix_u64(&f, (uint64_t)(int64_t)result);
        if (result == MOEVK_SUCCESS)
            for (uint32_t e = 0; e < E; ++e) mix_f64(&f, expert_loss[e]);
    }
    free(logits), free(hidden), free(dispatched), free(expert_out), free(combined), free(bias);
    free(noise_weights), free(weights), free(grad_weights), free(grad_logits), free(token_loss);
    free(grad_noise), free(ids), free(slots), free(counts), free(counts_before), free(offsets);
    free(expert_loss);
    return f.h;
}

/* Router i's first `routes` routes into hashes[0 ..], with the given selection kernel; a refused
 * router hashes its error into each of its routes. *lanes: what the router's kernel took
 * (moevk_router_selection_lanes). */
static void run_router_with(uint32_t i, moevk_selection_kernel kernel, uint32_t routes,
                            uint64_t *hashes, uint32_t *lanes) {
    case_rng r = {0xC0FFEE00ull + i};
    golden_router g = draw_router(&r);
    g.info.selection_kernel = kernel;
    moevk_router *router = NULL;
    moevk_result created = moevk_router_create(test_context(), &g.info, &router);
    if (created != MOEVK_SUCCESS && kernel == MOEVK_SELECTION_AUTO)
        printf("  router %u refused (as it should stay): %s\n", i,
               moevk_context_last_error(test_context()));
    for (uint32_t j = 0; j < routes; ++j) {
        uint32_t index = i * ROUTES_PER_ROUTER + j;
        fnv refused = {0xCBF29CE484222325ull};
        mix_u64(&refused, (uint64_t)(int64_t)created);
        hashes[j] = created == MOEVK_SUCCESS ? run_route(router, &g, index) : refused.h;
    }
    if (lanes) *lanes = moevk_router_selection_lanes(router);
    moevk_router_destroy(router);
}

static void run_router(uint32_t i, uint64_t *hashes) {
    run_router_with(i, MOEVK_SELECTION_AUTO, ROUTES_PER_ROUTER, hashes, NULL);
}

/* The device the hashes belong to: its driver's name and version text. */
static void device_line(char *line, size_t size) {
    moevk_device_info device = {0};
    moevk_context_device_info(test_context(), &device);
    snprintf(line, size, "device %s | %s", device.driver_name, device.driver_info);
}

/* The hashes with the default kernels (and the lanes each router's took), once per run. */
static uint64_t hashes[CASES];
static uint32_t auto_lanes[ROUTERS];
static int hashes_ready;

static void compute_hashes(void) {
    if (hashes_ready) return;
    for (uint32_t i = 0; i < ROUTERS; ++i)
        run_router_with(i, MOEVK_SELECTION_AUTO, ROUTES_PER_ROUTER, hashes + i * ROUTES_PER_ROUTER,
                        &auto_lanes[i]);
    hashes_ready = 1;
}

static void test_routes_keep_their_bits(void) {
    compute_hashes();
    char device[600];
    device_line(device, sizeof device);
    const char *record = getenv("MOEVK_GOLDEN_RECORD");
    if (record) {
        FILE *out = fopen(record, "w");
        CHECK(out, "cannot write %s", record);
        fprintf(out, "%s\n", device);
        for (uint32_t i = 0; i < CASES; ++i)
            fprintf(out, "%u %016llx\n", i, (unsigned long long)hashes[i]);
        fclose(out);
        printf("  recorded %d cases in %s\n", CASES, record);
        return;
    }
    FILE *in = fopen(GOLDEN_FILE, "r");
    CHECK(in, "cannot read %s", GOLDEN_FILE);
    char recorded[600] = "";
    if (!fgets(recorded, sizeof recorded, in)) recorded[0] = 0;
    recorded[strcspn(recorded, "\n")] = 0;
    if (strcmp(recorded, device) != 0) {
        fclose(in);
        printf("  skipped: the hashes were recorded on '%s', this is '%s'\n", recorded, device);
        return;
    }
    uint32_t index, read = 0, differ = 0;
    unsigned long long want;
    while (fscanf(in, "%u %llx", &index, &want) == 2 && index < CASES) {
        ++read;
        if (hashes[index] == want) continue;
        if (++differ <= 10)
            test_fail(__FILE__, __LINE__, "case %u: hash %016llx, recorded %016llx", index,
                      (unsigned long long)hashes[index], want);
    }
    fclose(in);
    CHECK(read == CASES, "%s holds %u of %d cases", GOLDEN_FILE, read, CASES);
    CHECK(differ == 0, "%u of %d cases changed their outputs", differ, CASES);
}

/* The same routers twice in one run give the same hashes (nothing depends on earlier state). */
static void test_a_router_gives_the_same_bits_again(void) {
    for (uint32_t i = 0; i < 4; ++i) {
        uint64_t first[ROUTES_PER_ROUTER], second[ROUTES_PER_ROUTER];
        run_router(i, first);
        run_router(i, second);
        CHECK(!memcmp(first, second, sizeof first), "router %u: its routes' bits changed", i);
    }
}

/* Both selection kernels give the same bits (moevk_selection_kernel): every router's first
 * routes again with the kernel its default did not take, every output compared through the
 * hashes. On the device the file was recorded on this holds the subgroup kernel to the recorded
 * bits too. */
#define OTHER_KERNEL_ROUTES 4
static void test_both_selection_kernels_give_the_same_bits(void) {
    if (test_selection_lanes() == 0) {
        printf("  skipped: this device runs no subgroup kernel\n");
        return;
    }
    compute_hashes();
    for (uint32_t i = 0; i < ROUTERS; ++i) {
        uint64_t other[OTHER_KERNEL_ROUTES];
        moevk_selection_kernel kernel =
            auto_lanes[i] ? MOEVK_SELECTION_PER_TOKEN : MOEVK_SELECTION_SUBGROUP;
        run_router_with(i, kernel, OTHER_KERNEL_ROUTES, other, NULL);
        for (uint32_t j = 0; j < OTHER_KERNEL_ROUTES; ++j)
            CHECK(other[j] == hashes[i * ROUTES_PER_ROUTER + j],
                  "router %u route %u: the %s kernel gives other bits", i, j,
                  auto_lanes[i] ? "per-token" : "subgroup");
    }
}

static const test_case TESTS[] = {
    TEST(routes_keep_their_bits),
    TEST(both_selection_kernels_give_the_same_bits),
    TEST(a_router_gives_the_same_bits_again),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
