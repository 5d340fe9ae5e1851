/* The routing modes against the CPU reference: SEQUENCE and BATCH (one decision per sequence,
 * bit-exact), and SINKHORN (balanced selection; decisions agree outside near ties). Every case
 * also goes through bucketing, dispatch, combine and the statistics (route_check.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"
#include "choice_check.h"
#include "route_check.h"

static moevk_router_info base(moevk_routing_mode mode, uint32_t E, uint32_t k, uint32_t T,
                              uint32_t d) {
    moevk_router_info info = route_case_info(mode, E, k, T, d);
    info.sequence_length = 16;
    return info;
}

static void run(const char *name, moevk_router_info info, uint32_t T, logits_pattern pattern,
                int hidden) {
    route_case c = {.name = name,
                    .info = info,
                    .num_tokens = T,
                    .pattern = pattern,
                    .with_hidden = hidden,
                    .step = 3,
                    .layer = 1};
    check_route_case(&c);
}

/* ---- SEQUENCE and BATCH ---- */
static void test_sequence_random(void) {
    run("sequence 16", base(MOEVK_MODE_SEQUENCE, 8, 2, 640, 12), 640, LOGITS_RANDOM, 1);
}
static void test_sequence_last_one_shorter(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 13, 3, 1000, 5);
    info.sequence_length = 37; /* 1000 = 27 * 37 + 1 */
    run("sequence 37, odd sizes", info, 1000, LOGITS_RANDOM, 1);
}
static void test_sequence_masked_and_nonfinite_tokens(void) {
    run("sequence masked", base(MOEVK_MODE_SEQUENCE, 12, 4, 500, 4), 500, LOGITS_MASKED, 1);
    run("sequence nonfinite", base(MOEVK_MODE_SEQUENCE, 8, 2, 600, 4), 600, LOGITS_NONFINITE, 1);
}
static void test_sequence_ties_and_huge(void) {
    run("sequence ties", base(MOEVK_MODE_SEQUENCE, 6, 6, 300, 3), 300, LOGITS_TIES, 1);
    run("sequence huge", base(MOEVK_MODE_SEQUENCE, 10, 3, 400, 0), 400, LOGITS_HUGE, 0);
}
static void test_sequence_edges(void) {
    run("sequence T=0", base(MOEVK_MODE_SEQUENCE, 8, 2, 32, 4), 0, LOGITS_RANDOM, 1);
    run("sequence T=1", base(MOEVK_MODE_SEQUENCE, 8, 2, 32, 4), 1, LOGITS_RANDOM, 1);
    run("sequence E=1", base(MOEVK_MODE_SEQUENCE, 1, 1, 100, 4), 100, LOGITS_RANDOM, 1);
    moevk_router_info one = base(MOEVK_MODE_SEQUENCE, 9, 2, 300, 0);
    one.sequence_length = 1;
    run("sequence of 1", one, 300, LOGITS_RANDOM, 0);
}
static void test_sequence_f16_sigmoid_dropless(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 16, 4, 777, 6);
    info.logits_type = MOEVK_DTYPE_F16;
    info.score = MOEVK_SCORE_SIGMOID;
    info.renormalize = 1;
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    info.sequence_length = 100;
    run("sequence f16 sigmoid dropless", info, 777, LOGITS_RANDOM, 1);
}
static void test_sequence_jitter_is_exact(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 16, 2, 512, 0);
    info.noise = MOEVK_NOISE_JITTER;
    info.noise_amount = 0.3f;
    info.noise_seed = 0x1234567890ull;
    info.noisy_scores = 1;
    info.sequence_length = 8;
    run("sequence jitter", info, 512, LOGITS_TIES, 0);
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 0.5f;
    run("sequence gaussian", info, 512, LOGITS_RANDOM, 0);
}
static void test_batch(void) {
    run("batch", base(MOEVK_MODE_BATCH, 8, 3, 999, 4), 999, LOGITS_RANDOM, 1);
    run("batch masked", base(MOEVK_MODE_BATCH, 8, 3, 300, 4), 300, LOGITS_MASKED, 1);
    run("batch T=1", base(MOEVK_MODE_BATCH, 8, 3, 16, 4), 1, LOGITS_RANDOM, 1);
}

/* A sequence's tokens share one decision, and it is the top-k of their mean logits. */
static void test_sequence_tokens_share_the_decision(void) {
    enum { E = 4, S = 3, T = 6 };
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, E, 2, T, 0);
    info.sequence_length = S;
    /* Sequence 0: token 1 alone prefers expert 3, but the mean favours 0 then 2. Sequence 1:
     * token 4 is masked (routed nowhere, left out of the mean); the others average to 3, 1. */
    const float logits[T * E] = {
        4,      0, 3, 0, /**/ 1,    0,         1,         5,         /**/ 4, 0, 2, 0,
        /**/ 0, 2, 0, 1, -INFINITY, -INFINITY, -INFINITY, -INFINITY, /**/ 0, 2, 0, 4,
    };
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    int32_t ids[T * 2];
    moevk_route_stats stats = {0};
    moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids), .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    const int32_t want[T * 2] = {0, 2, 0, 2, 0, 2, 3, 1, -1, -1, 3, 1};
    for (int i = 0; i < T * 2; ++i)
        CHECK(ids[i] == want[i], "ids[%d] is %d, expected %d", i, ids[i], want[i]);
    CHECK(stats.masked_rows == 1, "masked rows %u", stats.masked_rows);
}

/* ---- SINKHORN ---- */
static void test_sinkhorn_random(void) {
    run("sinkhorn", base(MOEVK_MODE_SINKHORN, 8, 2, 500, 8), 500, LOGITS_RANDOM, 1);
    run("sinkhorn odd", base(MOEVK_MODE_SINKHORN, 13, 3, 301, 5), 301, LOGITS_RANDOM, 1);
}
static void test_sinkhorn_edges(void) {
    run("sinkhorn masked", base(MOEVK_MODE_SINKHORN, 12, 3, 400, 4), 400, LOGITS_MASKED, 1);
    run("sinkhorn nonfinite", base(MOEVK_MODE_SINKHORN, 8, 2, 300, 4), 300, LOGITS_NONFINITE, 1);
    run("sinkhorn huge", base(MOEVK_MODE_SINKHORN, 6, 2, 200, 0), 200, LOGITS_HUGE, 0);
    run("sinkhorn ties", base(MOEVK_MODE_SINKHORN, 6, 6, 200, 3), 200, LOGITS_TIES, 1);
    run("sinkhorn T=0", base(MOEVK_MODE_SINKHORN, 8, 2, 16, 4), 0, LOGITS_RANDOM, 1);
    run("sinkhorn T=1", base(MOEVK_MODE_SINKHORN, 8, 2, 16, 4), 1, LOGITS_RANDOM, 1);
    run("sinkhorn E=1", base(MOEVK_MODE_SINKHORN, 1, 1, 100, 4), 100, LOGITS_RANDOM, 1);
}
static void test_sinkhorn_with_noise(void) {
    moevk_router_info info = base(MOEVK_MODE_SINKHORN, 8, 2, 300, 0);
    info.noise = MOEVK_NOISE_JITTER;
    info.noise_amount = 0.2f;
    info.noise_seed = 99;
    run("sinkhorn jitter", info, 300, LOGITS_RANDOM, 0);
}

/* Skewed logits: plain top-k piles onto the favoured experts; Sinkhorn spreads the load. */
static void test_sinkhorn_balances(void) {
    enum { E = 8, T = 512 };
    float *logits = malloc(sizeof(float) * T * E);
    CHECK(logits, "out of memory");
    for (int i = 0; i < T * E; ++i) logits[i] = rng_normal() + (i % E < 2 ? 3.0f : 0.0f);
    uint32_t counts[2][E];
    moevk_route_stats stats[2] = {{0}};
    for (int m = 0; m < 2; ++m) {
        moevk_router_info info = base(m ? MOEVK_MODE_SINKHORN : MOEVK_MODE_TOKEN, E, 2, T, 0);
        moevk_router *router = NULL;
        moevk_result r = moevk_router_create(test_context(), &info, &router);
        moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
        moevk_route_output output = {.counts_before = moevk_host_tensor(counts[m]),
                                     .stats = &stats[m]};
        if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
        moevk_router_destroy(router);
        if (r != MOEVK_SUCCESS) free(logits);
        CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    }
    /* The reference's factors: the same iterations (or one apart, near the tolerance). */
    moevk_router_info info = base(MOEVK_MODE_SINKHORN, E, 2, T, 0);
    ref_sinkhorn_factors factors;
    int made = ref_sinkhorn(&info, NULL, T, logits, &factors);
    free(logits);
    CHECK(made, "out of memory");
    free(factors.d0);
    uint32_t max_count[2] = {0, 0};
    for (int m = 0; m < 2; ++m)
        for (int e = 0; e < E; ++e)
            if (counts[m][e] > max_count[m]) max_count[m] = counts[m][e];
    CHECK(max_count[0] > 300, "plain top-k should pile up: max %u", max_count[0]);
    CHECK(max_count[1] < 200, "Sinkhorn should balance (mean 128): max %u", max_count[1]);
    CHECK(stats[0].sinkhorn_iterations == 0, "token mode reports Sinkhorn iterations");
    uint32_t got = stats[1].sinkhorn_iterations, want = factors.iterations;
    CHECK(got > 1 && got + 1 >= want && got <= want + 1, "%u iterations, reference %u", got, want);
    CHECK(stats[1].sinkhorn_error < 1e-4f && stats[1].sinkhorn_error >= 0.0f, "error %g",
          (double)stats[1].sinkhorn_error);
}

/* The iteration cap holds; inference mode routes by the plain top-k. */
static void test_sinkhorn_cap_and_inference(void) {
    enum { E = 6, T = 200 };
    float logits[T * E];
    for (int i = 0; i < T * E; ++i) logits[i] = 2.0f * rng_normal();
    moevk_router_info info = base(MOEVK_MODE_SINKHORN, E, 2, T, 0);
    info.sinkhorn_iterations = 2;
    moevk_router_info plain = base(MOEVK_MODE_TOKEN, E, 2, T, 0);
    moevk_router *router = NULL, *token_router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_result r = moevk_router_create(test_context(), &plain, &token_router);
    int32_t ids[T * 2], token_ids[T * 2];
    float weights[T * 2], token_weights[T * 2];
    moevk_route_stats stats = {0};
    moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.stats = &stats};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    uint32_t capped = stats.sinkhorn_iterations;
    input.inference = 1;
    output = (moevk_route_output){.expert_ids = moevk_host_tensor(ids),
                                  .weights = moevk_host_tensor(weights),
                                  .stats = &stats};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    moevk_route_output token_output = {.expert_ids = moevk_host_tensor(token_ids),
                                       .weights = moevk_host_tensor(token_weights)};
    if (r == MOEVK_SUCCESS) r = moevk_route(token_router, &input, &token_output);
    moevk_router_destroy(router);
    moevk_router_destroy(token_router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    CHECK(capped == 2, "%u iterations past a cap of 2", capped);
    CHECK(stats.sinkhorn_iterations == 0, "inference ran Sinkhorn");
    CHECK(!memcmp(ids, token_ids, sizeof ids) && !memcmp(weights, token_weights, sizeof weights),
          "inference differs from plain top-k");
}

/* Logits past max_binding_bytes: the modes' stages read them through device addresses. */
static void test_modes_through_addresses(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 8, 2, 700, 16);
    info.max_binding_bytes = 1024;
    run("sequence, addresses", info, 700, LOGITS_RANDOM, 1);
    info.mode = MOEVK_MODE_SINKHORN;
    run("sinkhorn, addresses", info, 700, LOGITS_RANDOM, 1);
}

/* ---- EXPERT_CHOICE ---- */
static void test_expert_choice_random(void) {
    run_choice("choice", base(MOEVK_MODE_EXPERT_CHOICE, 8, 2, 500, 12), 500, LOGITS_RANDOM);
    moevk_router_info odd = base(MOEVK_MODE_EXPERT_CHOICE, 13, 1, 1001, 5);
    odd.capacity_factor = 2.0f;
    run_choice("choice odd, factor 2", odd, 1001, LOGITS_RANDOM);
}
static void test_expert_choice_edges(void) {
    run_choice("choice masked", base(MOEVK_MODE_EXPERT_CHOICE, 12, 1, 400, 4), 400, LOGITS_MASKED);
    run_choice("choice nonfinite", base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 300, 4), 300,
               LOGITS_NONFINITE);
    run_choice("choice huge", base(MOEVK_MODE_EXPERT_CHOICE, 6, 1, 200, 0), 200, LOGITS_HUGE);
    run_choice("choice ties", base(MOEVK_MODE_EXPERT_CHOICE, 6, 1, 300, 3), 300, LOGITS_TIES);
    run_choice("choice T=0", base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 16, 4), 0, LOGITS_RANDOM);
    run_choice("choice T=1", base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 16, 4), 1, LOGITS_RANDOM);
    run_choice("choice E=1", base(MOEVK_MODE_EXPERT_CHOICE, 1, 1, 100, 4), 100, LOGITS_RANDOM);
    moevk_router_info fixed = base(MOEVK_MODE_EXPERT_CHOICE, 16, 1, 700, 0);
    fixed.capacity_mode = MOEVK_CAPACITY_FIXED;
    fixed.capacity = 700; /* C = T: every eligible token */
    run_choice("choice C=T", fixed, 700, LOGITS_RANDOM);
    fixed.capacity = 0;
    run_choice("choice C=0", fixed, 700, LOGITS_RANDOM);
}
static void test_expert_choice_sigmoid_and_noise(void) {
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, 10, 1, 600, 6);
    info.score = MOEVK_SCORE_SIGMOID;
    info.temperature = 0.7f;
    info.scale = 2.5f;
    run_choice("choice sigmoid", info, 600, LOGITS_RANDOM);
    info.score = MOEVK_SCORE_SOFTMAX;
    info.noise = MOEVK_NOISE_GUMBEL;
    info.noise_amount = 0.5f;
    info.noise_seed = 77;
    run_choice("choice gumbel", info, 600, LOGITS_RANDOM);
    info.noisy_scores = 1;
    run_choice("choice gumbel, noisy scores", info, 600, LOGITS_RANDOM);
}
static void test_expert_choice_16_bit_rows(void) {
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 300, 7); /* odd d */
    info.hidden_type = MOEVK_DTYPE_BF16;
    run_choice("choice bf16, odd d", info, 300, LOGITS_RANDOM);
    info.hidden_type = MOEVK_DTYPE_F16;
    info.hidden_size = 16;
    run_choice("choice f16", info, 300, LOGITS_RANDOM);
}

static void test_expert_choice_addresses(void) {
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 300, 16);
    info.max_binding_bytes = 1024;
    run_choice("choice, addresses", info, 300, LOGITS_RANDOM);
}

/* Equal keys go to the lower token: identical rows, so each expert takes tokens 0 .. C-1. */
static void test_expert_choice_ties_to_the_lower_token(void) {
    enum { E = 3, T = 10 };
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, E, 1, T, 0);
    info.capacity_mode = MOEVK_CAPACITY_FIXED;
    info.capacity = 4;
    float logits[T * E];
    for (int i = 0; i < T * E; ++i) logits[i] = (float)(i % E) * 0.25f;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    int32_t slots[T * E];
    moevk_route_stats stats = {0};
    moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.slots = moevk_host_tensor(slots), .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    for (int t = 0; t < T; ++t)
        for (int e = 0; e < E; ++e)
            CHECK(slots[t * E + e] == (t < 4 ? t : -1), "slot (%d, %d) is %d", t, e,
                  slots[t * E + e]);
    CHECK(stats.unrouted_tokens == T - 4, "unrouted %u", stats.unrouted_tokens);
}

/* ---- Options the modes refuse ---- */
static void test_mode_errors(void) {
    moevk_context *context = test_context();
    moevk_router *router = NULL;
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 8, 2, 64, 0);
    info.sequence_length = 0;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "sequence_length 0 accepted");
    CHECK(strstr(moevk_context_last_error(context), "sequence_length"), "message: %s",
          moevk_context_last_error(context));
    info = base((moevk_routing_mode)7, 8, 2, 64, 0);
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "an unknown mode accepted");
    info = base(MOEVK_MODE_SINKHORN, 8, 2, 64, 0);
    info.num_groups = 2;
    info.topk_groups = 1;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "groups with Sinkhorn accepted");
    CHECK(router == NULL, "router left set after a failure");
    info = base(MOEVK_MODE_SINKHORN, 8, 2, 64, 0);
    info.sinkhorn_iterations = 10001;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "10001 Sinkhorn iterations accepted");
    info = base(MOEVK_MODE_EXPERT_CHOICE, 8, 2, 64, 0);
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a dropless expert choice accepted");
    info.capacity_mode = MOEVK_CAPACITY_FACTOR;
    info.renormalize = 1;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "renormalize with expert choice accepted");

    info = base(MOEVK_MODE_BATCH, 8, 2, 64, 0);
    info.losses = 1;
    CHECK_OK(moevk_router_create(context, &info, &router));
    float logits[64 * 8], bias[8] = {0};
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    moevk_route_input input = {
        .num_tokens = 64, .logits = moevk_host_tensor(logits), .bias = moevk_host_tensor(bias)};
    moevk_route_output output = {0};
    moevk_result with_bias = moevk_route(router, &input, &output);
    input.bias = moevk_host_tensor(NULL);
    moevk_result plain = moevk_route(router, &input, &output);
    moevk_loss_info loss = {.aux_coef = 1.0f};
    moevk_losses values = {0};
    moevk_result losses = moevk_router_losses(router, &loss, &values, moevk_buffer_tensor(NULL, 0));
    moevk_router_destroy(router);
    CHECK(with_bias == MOEVK_ERROR_INVALID_ARGUMENT, "a bias in BATCH mode accepted");
    CHECK(plain == MOEVK_SUCCESS, "route -> %s", moevk_result_string(plain));
    CHECK(losses == MOEVK_ERROR_INVALID_ARGUMENT, "losses in BATCH mode accepted");
}

static const test_case TESTS[] = {
    TEST(sequence_random),
    TEST(sequence_last_one_shorter),
    TEST(sequence_masked_and_nonfinite_tokens),
    TEST(sequence_ties_and_huge),
    TEST(sequence_edges),
    TEST(sequence_f16_sigmoid_dropless),
    TEST(sequence_jitter_is_exact),
    TEST(batch),
    TEST(sequence_tokens_share_the_decision),
    TEST(sinkhorn_random),
    TEST(sinkhorn_edges),
    TEST(sinkhorn_with_noise),
    TEST(sinkhorn_balances),
    TEST(sinkhorn_cap_and_inference),
    TEST(modes_through_addresses),
    TEST(expert_choice_random),
    TEST(expert_choice_edges),
    TEST(expert_choice_sigmoid_and_noise),
    TEST(expert_choice_16_bit_rows),
    TEST(expert_choice_addresses),
    TEST(expert_choice_ties_to_the_lower_token),
    TEST(mode_errors),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
