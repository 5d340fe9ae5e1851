/* Noisy routing: the Philox4x32-10 generator against Random123's known answers, jitter decisions
 * bit-identical to the CPU reference, Gaussian and Gumbel decisions identical wherever the
 * margin exceeds 1e-5 relative, replay by seed, the right mean and spread, inference mode. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"
#include "route_check.h"

static void test_philox_matches_random123_known_answers(void) {
    /* Random123's kat_vectors for philox4x32_10. */
    static const uint32_t cases[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; ++i) {
        uint32_t out[4];
        ref_philox4x32_10(cases[i], cases[i] + 4, out);
        CHECK(!memcmp(out, cases[i] + 6, sizeof out), "case %d: %08x %08x %08x %08x", i, out[0],
              out[1], out[2], out[3]);
    }
}

static moevk_router_info noisy(moevk_noise_kind kind, float amount, uint64_t seed) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = 16;
    info.top_k = 2;
    info.max_tokens = 1000;
    info.hidden_size = 8;
    info.noise = kind;
    info.noise_amount = amount;
    info.noise_seed = seed;
    return info;
}

static void run(const char *name, moevk_router_info info, uint32_t step, uint32_t layer,
                int inference) {
    route_case c = {.name = name,
                    .info = info,
                    .num_tokens = 1000,
                    .pattern = LOGITS_RANDOM,
                    .with_bias = 1,
                    .with_hidden = 1,
                    .step = step,
                    .layer = layer,
                    .inference = inference};
    check_route_case(&c);
}

/* The rows [offset, offset + T) of a whole batch's noise: a split batch's calls draw it. */
static moevk_result noisy_rows(moevk_router *router, const float *logits, uint32_t T,
                               uint32_t offset, int32_t *ids, float *weights) {
    moevk_route_input input = {.num_tokens = T,
                               .logits = moevk_host_tensor(logits),
                               .step = 9,
                               .layer = 3,
                               .noise_row_offset = offset};
    input.struct_size = sizeof input; /* the fields since moevk 0.3 are read */
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .weights = moevk_host_tensor(weights)};
    return moevk_route(router, &input, &output);
}

/* A batch split over calls at noise_row_offset = each call's first row draws the whole batch's
 * noise: the same choices and weights, bit for bit (jitter, Gaussian, Gumbel; by token and by
 * sequence, whose rows are the sequences); the reference with the offset too. */
static void test_a_split_batch_draws_the_whole_batch_noise(void) {
    enum { T = 777, SPLIT = 352, S = 16 };
    static float logits[T * 16], weights[T * 2], split_weights[T * 2];
    static int32_t ids[T * 2], split_ids[T * 2];
    for (int i = 0; i < T * 16; ++i) logits[i] = rng_normal();
    const moevk_noise_kind kinds[] = {MOEVK_NOISE_JITTER, MOEVK_NOISE_GAUSSIAN, MOEVK_NOISE_GUMBEL};
    for (int mode = 0; mode < 2; ++mode)
        for (int n = 0; n < 3; ++n) {
            moevk_router_info info = noisy(kinds[n], 0.5f, 77 + (uint64_t)n);
            info.hidden_size = 0;
            info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
            if (mode) {
                info.mode = MOEVK_MODE_SEQUENCE;
                info.sequence_length = S;
            }
            moevk_router *router = NULL;
            CHECK_OK(moevk_router_create(test_context(), &info, &router));
            uint32_t offset = mode ? SPLIT / S : SPLIT; /* SPLIT is whole sequences */
            moevk_result r = noisy_rows(router, logits, T, 0, ids, weights);
            if (r == MOEVK_SUCCESS)
                r = noisy_rows(router, logits, SPLIT, 0, split_ids, split_weights);
            if (r == MOEVK_SUCCESS)
                r = noisy_rows(router, logits + SPLIT * 16, T - SPLIT, offset,
                               split_ids + SPLIT * 2, split_weights + SPLIT * 2);
            moevk_router_destroy(router);
            CHECK_OK(r);
            CHECK(!memcmp(ids, split_ids, sizeof ids) &&
                      !memcmp(weights, split_weights, sizeof weights),
                  "noise %d, mode %d: the split batch's choices differ from the whole's", n, mode);
        }
    /* The reference draws the offset rows too. */
    route_case c = {.name = "gaussian, rows from 500",
                    .info = noisy(MOEVK_NOISE_GAUSSIAN, 1.0f, 5),
                    .num_tokens = 300,
                    .pattern = LOGITS_RANDOM,
                    .step = 2,
                    .noise_row_offset = 500};
    c.info.hidden_size = 0;
    check_route_case(&c);
    c.name = "jitter, rows from 2^32 - 300";
    c.info = noisy(MOEVK_NOISE_JITTER, 0.2f, 8);
    c.info.hidden_size = 0;
    c.noise_row_offset = UINT32_MAX - 299;
    check_route_case(&c);
}

static void test_jitter_decisions_are_bit_identical(void) {
    run("jitter", noisy(MOEVK_NOISE_JITTER, 0.1f, 0x1234567890abcdefull), 3, 2, 0);
    moevk_router_info info = noisy(MOEVK_NOISE_JITTER, 0.3f, 99);
    info.noisy_scores = 1;
    info.score = MOEVK_SCORE_SIGMOID;
    run("jitter, noisy scores", info, 7, 0, 0);
}

static void test_gaussian_decisions_agree_past_the_margin(void) {
    run("gaussian", noisy(MOEVK_NOISE_GAUSSIAN, 1.0f, 5), 11, 4, 0);
    moevk_router_info info = noisy(MOEVK_NOISE_GAUSSIAN, 0.5f, 6);
    info.noisy_scores = 1;
    run("gaussian, noisy scores", info, 0, 1, 0);
}

static void test_gumbel_decisions_agree_past_the_margin(void) {
    moevk_router_info info = noisy(MOEVK_NOISE_GUMBEL, 1.0f, 77);
    info.drop_policy = MOEVK_DROP_SCORE;
    info.capacity_factor = 0.8f;
    run("gumbel", info, 2, 3, 0);
}

/* lavapipe offers RTE float controls, so CI runs the jitter checks above on the variant of the
 * scores stage that asks for it (a GPU without it runs the plain one). */
/* Gaussian noise with a std per expert, and a learned std from the hidden states. */
static void test_per_expert_and_learned_std_match_the_reference(void) {
    float std[16], weights[8 * 16];
    for (int e = 0; e < 16; ++e) std[e] = e % 4 == 0 ? 0.0f : rng_uniform(0.1f, 2.0f);
    for (int i = 0; i < 8 * 16; ++i) weights[i] = 0.5f * rng_normal();
    route_case c = {.name = "gaussian, per-expert std",
                    .info = noisy(MOEVK_NOISE_GAUSSIAN, 0.0f, 21),
                    .num_tokens = 1000,
                    .pattern = LOGITS_RANDOM,
                    .with_bias = 1,
                    .with_hidden = 1,
                    .step = 4,
                    .noise_std = std};
    check_route_case(&c);
    c.name = "gaussian, learned std";
    c.noise_std = NULL;
    c.noise_weights = weights;
    c.info.learned_noise = 1;
    c.info.noise_epsilon = 0.1f;
    c.info.hidden_type = MOEVK_DTYPE_BF16;
    check_route_case(&c);
    c.name = "gaussian, learned std, Sinkhorn";
    c.info.mode = MOEVK_MODE_SINKHORN;
    c.with_bias = 0;
    check_route_case(&c);
}

/* On the device: three experts with equal logits, noise on one of them only (std 0 for the
 * others, whose tie goes to the lower expert): that expert wins half the tokens. */
static void test_per_expert_std_draws_on_the_device(void) {
    moevk_router_info info = noisy(MOEVK_NOISE_GAUSSIAN, 0.0f, 31);
    info.num_experts = 3;
    info.top_k = 1;
    info.hidden_size = 0;
    static float logits[1000 * 3];
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    const float stds[2][3] = {{0, 0, 1.5f}, {0.7f, 0, 0}};
    uint32_t counts[2][3] = {{0}};
    moevk_result r = MOEVK_SUCCESS;
    for (int s = 0; s < 2; ++s)
        for (uint32_t step = 0; step < 10 && r == MOEVK_SUCCESS; ++step) {
            uint32_t got[3];
            moevk_route_input input = {.num_tokens = 1000,
                                       .logits = moevk_host_tensor(logits),
                                       .step = step,
                                       .noise_std = moevk_host_tensor(stds[s])};
            moevk_route_output output = {.counts_before = moevk_host_tensor(got)};
            r = moevk_route(router, &input, &output);
            for (int e = 0; e < 3; ++e) counts[s][e] += got[e];
        }
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    /* 10000 tokens: the std of a share is 0.005. */
    CHECK(fabs(counts[0][2] / 10000.0 - 0.5) < 0.02 && counts[0][1] == 0,
          "noise on expert 2: counts %u %u %u", counts[0][0], counts[0][1], counts[0][2]);
    CHECK(fabs(counts[1][0] / 10000.0 - 0.5) < 0.02 && counts[1][2] == 0,
          "noise on expert 0: counts %u %u %u", counts[1][0], counts[1][1], counts[1][2]);
}

static void test_lavapipe_requests_rte_rounding(void) {
    moevk_device_info device = {0};
    moevk_context_device_info(test_context(), &device);
    if (!strstr(device.name, "llvmpipe")) return;
    CHECK(device.rounding_mode_rte, "lavapipe should offer shaderRoundingModeRTEFloat32");
}

static void test_inference_mode_routes_without_noise(void) {
    run("inference", noisy(MOEVK_NOISE_GUMBEL, 5.0f, 1), 1, 1, 1);
}

/* Routes the same logits with a router's noise at a step: the ids. */
static moevk_result noisy_ids(moevk_router_info info, const float *logits, uint32_t step,
                              int inference, int32_t *ids) {
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_route_input input = {.num_tokens = 1000,
                               .logits = moevk_host_tensor(logits),
                               .step = step,
                               .inference = inference};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids)};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    return r;
}

static void test_seed_and_step_replay_and_change_decisions(void) {
    static float logits[1000 * 16];
    static int32_t a[2000], b[2000], c[2000], d[2000], clean[2000];
    for (int i = 0; i < 1000 * 16; ++i) logits[i] = rng_normal();
    moevk_router_info info = noisy(MOEVK_NOISE_GUMBEL, 1.0f, 42);
    info.hidden_size = 0;
    moevk_result r = noisy_ids(info, logits, 5, 0, a);
    if (r == MOEVK_SUCCESS) r = noisy_ids(info, logits, 5, 0, b); /* replay */
    if (r == MOEVK_SUCCESS) r = noisy_ids(info, logits, 6, 0, c); /* another step */
    info.noise_seed = 43;
    if (r == MOEVK_SUCCESS) r = noisy_ids(info, logits, 5, 0, d); /* another seed */
    if (r == MOEVK_SUCCESS) r = noisy_ids(info, logits, 5, 1, clean);
    CHECK_OK(r);
    CHECK(!memcmp(a, b, sizeof a), "the same seed and step did not replay");
    CHECK(memcmp(a, c, sizeof a) != 0, "another step made the same decisions");
    CHECK(memcmp(a, d, sizeof a) != 0, "another seed made the same decisions");
    info.noise = MOEVK_NOISE_NONE;
    int32_t plain[2000];
    CHECK_OK(noisy_ids(info, logits, 5, 0, plain));
    CHECK(!memcmp(clean, plain, sizeof plain), "inference mode is not the noiseless routing");
}

/* The generator's noise has the right mean and spread (the device uses the same generator). */
static void test_noise_has_the_right_mean_and_spread(void) {
    const int n = 200000;
    moevk_router_info gauss = noisy(MOEVK_NOISE_GAUSSIAN, 2.0f, 3),
                      gumbel = noisy(MOEVK_NOISE_GUMBEL, 1.5f, 4);
    double gs = 0, gss = 0, us = 0, uss = 0;
    for (int i = 0; i < n; ++i) {
        ref_call call = {.step = (uint32_t)i / 64};
        double g = ref_noisy_logit(&gauss, &call, 0.0f, (uint32_t)i % 1000, (uint32_t)i % 64);
        double u = ref_noisy_logit(&gumbel, &call, 0.0f, (uint32_t)i % 1000, (uint32_t)i % 64);
        gs += g;
        gss += g * g;
        us += u;
        uss += u * u;
    }
    double gm = gs / n, gsd = sqrt(gss / n - gm * gm), um = us / n, usd = sqrt(uss / n - um * um);
    CHECK(fabs(gm) < 0.03 && fabs(gsd - 2.0) < 0.03, "Gaussian mean %g, std %g (want 0, 2)", gm,
          gsd);
    CHECK(fabs(um - 0.5772156649 * 1.5) < 0.03 && fabs(usd - 1.5 * 1.2825498302) < 0.03,
          "Gumbel mean %g, std %g (want %g, %g)", um, usd, 0.5772156649 * 1.5, 1.5 * 1.2825498302);
}

static void test_bad_noise_is_rejected(void) {
    moevk_router_info info = noisy(MOEVK_NOISE_JITTER, 1.0f, 0);
    moevk_router *router = NULL;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "eps = 1 accepted");
    info = noisy(MOEVK_NOISE_GAUSSIAN, -1.0f, 0);
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "std < 0 accepted");
    info = noisy((moevk_noise_kind)9, 1.0f, 0);
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "kind 9 accepted");
    info = noisy(MOEVK_NOISE_GUMBEL, 1.0f, 0);
    info.learned_noise = 1;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a learned Gumbel std accepted");
    info = noisy(MOEVK_NOISE_GAUSSIAN, 1.0f, 0);
    info.learned_noise = 1;
    info.mode = MOEVK_MODE_BATCH;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a learned std in BATCH mode accepted");
    CHECK(router == NULL, "a router was made");

    /* Per-call std and weights. */
    info.mode = MOEVK_MODE_TOKEN;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    static float logits[16 * 16], hidden[16 * 8], weights[8 * 16];
    float std[16];
    for (int e = 0; e < 16; ++e) std[e] = 1.0f;
    moevk_route_input input = {
        .num_tokens = 16, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(hidden)};
    moevk_route_output output = {0};
    moevk_result no_weights = moevk_route(router, &input, &output);
    input.noise_weights = moevk_host_tensor(weights);
    input.hidden = moevk_host_tensor(NULL);
    moevk_result no_hidden = moevk_route(router, &input, &output);
    input.hidden = moevk_host_tensor(hidden);
    input.noise_std = moevk_host_tensor(std);
    moevk_result both = moevk_route(router, &input, &output);
    input.noise_std = moevk_host_tensor(NULL);
    moevk_result fine = moevk_route(router, &input, &output);
    moevk_route_input empty = {.num_tokens = 0}; /* nothing to draw: no weights needed */
    moevk_result no_tokens = moevk_route(router, &empty, &output);
    moevk_router_destroy(router);
    CHECK(no_weights == MOEVK_ERROR_INVALID_ARGUMENT, "a learned std without weights accepted");
    CHECK(no_hidden == MOEVK_ERROR_INVALID_ARGUMENT, "a learned std without hidden accepted");
    CHECK(both == MOEVK_ERROR_INVALID_ARGUMENT, "noise_std with a learned std accepted");
    CHECK(fine == MOEVK_SUCCESS, "route -> %s", moevk_result_string(fine));
    CHECK(no_tokens == MOEVK_SUCCESS, "T = 0 -> %s", moevk_result_string(no_tokens));

    info = noisy(MOEVK_NOISE_GAUSSIAN, 1.0f, 0);
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    std[3] = -0.5f;
    input = (moevk_route_input){
        .num_tokens = 16, .logits = moevk_host_tensor(logits), .noise_std = moevk_host_tensor(std)};
    moevk_result negative = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK(negative == MOEVK_ERROR_INVALID_ARGUMENT, "a negative noise_std accepted");
    CHECK(strstr(moevk_context_last_error(test_context()), "noise_std[3]"), "message: %s",
          moevk_context_last_error(test_context()));
}

static void test_schedules_follow_the_step(void) {
    moevk_schedule constant = {MOEVK_SCHEDULE_CONSTANT, 2.0f, 9.0f, 10};
    moevk_schedule linear = {MOEVK_SCHEDULE_LINEAR, 1.0f, 0.0f, 100};
    moevk_schedule cosine = {MOEVK_SCHEDULE_COSINE, 1.0f, 0.0f, 100};
    CHECK(moevk_schedule_value(&constant, 50) == 2.0f, "constant");
    /* Worked out by hand: linear 2 -> 0.75 over 100 steps is 2 - 1.25 * 0.4 = 1.5 at step 40;
     * cosine 1 -> 0 over 4 steps is (1 + cos(pi / 4)) / 2 = 0.8535534 at step 1, and over 3
     * steps (1 + cos(2 pi / 3)) / 2 = 0.25 at step 2; linear 0 -> 8 over 8 steps is the step. */
    moevk_schedule down = {MOEVK_SCHEDULE_LINEAR, 2.0f, 0.75f, 100};
    moevk_schedule quarter = {MOEVK_SCHEDULE_COSINE, 1.0f, 0.0f, 4};
    moevk_schedule third = {MOEVK_SCHEDULE_COSINE, 1.0f, 0.0f, 3};
    moevk_schedule up = {MOEVK_SCHEDULE_LINEAR, 0.0f, 8.0f, 8};
    for (int from_reference = 0; from_reference < 2; ++from_reference) {
        float (*value)(const moevk_schedule *, uint32_t) =
            from_reference ? ref_schedule_value : moevk_schedule_value;
        CHECK(value(&down, 40) == 1.5f, "linear at 40: %.9g", (double)value(&down, 40));
        CHECK(fabsf(value(&quarter, 1) - 0.85355339f) < 1e-7f, "cosine at 1 of 4: %.9g",
              (double)value(&quarter, 1));
        CHECK(fabsf(value(&third, 2) - 0.25f) < 1e-7f, "cosine at 2 of 3: %.9g",
              (double)value(&third, 2));
        for (uint32_t step = 0; step <= 10; ++step)
            CHECK(value(&up, step) == (float)(step < 8 ? step : 8), "linear up at %u", step);
    }
    CHECK(moevk_schedule_value(&linear, 0) == 1.0f && moevk_schedule_value(&linear, 25) == 0.75f &&
              moevk_schedule_value(&linear, 100) == 0.0f &&
              moevk_schedule_value(&linear, 500) == 0.0f,
          "linear");
    CHECK(moevk_schedule_value(&cosine, 0) == 1.0f &&
              fabsf(moevk_schedule_value(&cosine, 50) - 0.5f) < 1e-7f &&
              moevk_schedule_value(&cosine, 100) == 0.0f,
          "cosine %g", (double)moevk_schedule_value(&cosine, 50));
    for (uint32_t step = 0; step < 120; step += 7)
        CHECK(moevk_schedule_value(&cosine, step) == ref_schedule_value(&cosine, step),
              "reference at %u", step);
}

/* Routes with annealed noise, temperature and capacity at several steps, each held to the
 * reference with the options in force at its step. */
static void test_scheduled_routes_match_the_reference(void) {
    moevk_router_info info = noisy(MOEVK_NOISE_JITTER, 0.0f, 12345);
    info.noise_schedule = (moevk_schedule){MOEVK_SCHEDULE_COSINE, 0.5f, 0.0f, 100};
    info.temperature_schedule = (moevk_schedule){MOEVK_SCHEDULE_LINEAR, 3.0f, 0.5f, 100};
    info.capacity_factor_schedule = (moevk_schedule){MOEVK_SCHEDULE_LINEAR, 2.0f, 0.75f, 100};
    uint32_t steps[] = {0, 40, 100, 1000};
    for (int i = 0; i < 4; ++i) {
        char name[64];
        snprintf(name, sizeof name, "scheduled, step %u", steps[i]);
        run(name, info, steps[i], 0, 0);
    }
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    uint32_t at_start = moevk_router_capacity(router, 1000, 0),
             at_end = moevk_router_capacity(router, 1000, 100);
    moevk_router_destroy(router);
    CHECK(at_start == 250 && at_end == 94, "capacities %u, %u (want 250, 94)", at_start, at_end);
    info.temperature_schedule.end = 0.0f;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a temperature schedule reaching 0 was accepted");
}

/* Auxiliary-loss-free balancing: the bias moves the loads towards their mean over steps. */
static void test_balancing_bias_evens_out_the_load(void) {
    static float logits[1000 * 16];
    for (int t = 0; t < 1000; ++t)
        for (int e = 0; e < 16; ++e) logits[t * 16 + e] = rng_normal() + (e < 3 ? 2.0f : 0.0f);
    moevk_router_info info = noisy(MOEVK_NOISE_NONE, 0.0f, 0);
    info.hidden_size = 0;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float bias[16] = {0};
    uint32_t counts[16];
    moevk_route_input input = {
        .num_tokens = 1000, .logits = moevk_host_tensor(logits), .bias = moevk_host_tensor(bias)};
    moevk_route_output output = {.counts_before = moevk_host_tensor(counts)};
    uint32_t first_max = 0, last_max = 0;
    moevk_result r = MOEVK_SUCCESS;
    for (int step = 0; step < 60 && r == MOEVK_SUCCESS; ++step) {
        r = moevk_route(router, &input, &output);
        uint32_t most = 0;
        for (int e = 0; e < 16; ++e) most = counts[e] > most ? counts[e] : most;
        if (step == 0) first_max = most;
        last_max = most;
        moevk_balancing_bias_update(bias, counts, 16, 0.05f);
    }
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "%s", moevk_result_string(r));
    CHECK(last_max < first_max * 2 / 3, "the busiest expert went from %u to %u assignments",
          first_max, last_max);
    float b[3] = {0.5f, 0.5f, 0.5f};
    uint32_t equal[3] = {7, 7, 7};
    moevk_balancing_bias_update(b, equal, 3, 0.0f);
    CHECK(b[0] == 0.5f && b[2] == 0.5f, "a balanced load moved the bias");
    uint32_t skewed[2] = {10, 0};
    moevk_balancing_bias_update(b, skewed, 2, 0.0f); /* default rate */
    CHECK(b[0] == 0.5f - 1e-3f && b[1] == 0.5f + 1e-3f, "default rate: %g %g", (double)b[0],
          (double)b[1]);
}

static const test_case TESTS[] = {
    TEST(balancing_bias_evens_out_the_load),
    TEST(per_expert_and_learned_std_match_the_reference),
    TEST(per_expert_std_draws_on_the_device),
    TEST(schedules_follow_the_step),
    TEST(scheduled_routes_match_the_reference),
    TEST(philox_matches_random123_known_answers),
    TEST(jitter_decisions_are_bit_identical),
    TEST(a_split_batch_draws_the_whole_batch_noise),
    TEST(gaussian_decisions_agree_past_the_margin),
    TEST(gumbel_decisions_agree_past_the_margin),
    TEST(lavapipe_requests_rte_rounding),
    TEST(inference_mode_routes_without_noise),
    TEST(seed_and_step_replay_and_change_decisions),
    TEST(noise_has_the_right_mean_and_spread),
    TEST(bad_noise_is_rejected),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
