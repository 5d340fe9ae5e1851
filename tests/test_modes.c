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

/* ---- SEQUENCE and BATCH ---- */
/* The modes against the reference, one behaviour or edge a row (route_check.c, and
 * choice_check.c for expert choice; the noise counter at step 3, layer 1). */
#define SIZES(e, k_, t_max, d_, t) .E = e, .k = k_, .max_tokens = t_max, .d = d_, .T = t
#define SEQ .mode = MOEVK_MODE_SEQUENCE, .step = 3, .layer = 1
#define BATCH .mode = MOEVK_MODE_BATCH, .step = 3, .layer = 1
#define SINK .mode = MOEVK_MODE_SINKHORN, .step = 3, .layer = 1
#define CHOICE .mode = MOEVK_MODE_EXPERT_CHOICE

static const routing_case CASES[] = {
    /* SEQUENCE and BATCH: one decision per sequence, bit-exact. */
    {"sequence_16", SEQ, SIZES(8, 2, 640, 12, 640), .hidden = 1},
    {"sequence_37_the_last_one_shorter", SEQ, SIZES(13, 3, 1000, 5, 1000), .hidden = 1,
     .sequence_length = 37}, /* 1000 = 27 * 37 + 1 */
    {"sequence_masked_tokens", SEQ, SIZES(12, 4, 500, 4, 500), .pattern = LOGITS_MASKED,
     .hidden = 1},
    {"sequence_nonfinite_tokens", SEQ, SIZES(8, 2, 600, 4, 600), .pattern = LOGITS_NONFINITE,
     .hidden = 1},
    {"sequence_ties", SEQ, SIZES(6, 6, 300, 3, 300), .pattern = LOGITS_TIES, .hidden = 1},
    {"sequence_huge", SEQ, SIZES(10, 3, 400, 0, 400), .pattern = LOGITS_HUGE},
    {"sequence_zero_tokens", SEQ, SIZES(8, 2, 32, 4, 0), .hidden = 1},
    {"sequence_one_token", SEQ, SIZES(8, 2, 32, 4, 1), .hidden = 1},
    {"sequence_one_expert", SEQ, SIZES(1, 1, 100, 4, 100), .hidden = 1},
    {"sequences_of_one_token", SEQ, SIZES(9, 2, 300, 0, 300), .sequence_length = 1},
    {"sequence_f16_sigmoid_dropless", SEQ, SIZES(16, 4, 777, 6, 777), .hidden = 1,
     .logits_type = MOEVK_DTYPE_F16, .score = MOEVK_SCORE_SIGMOID, .renormalize = 1,
     .capacity_mode = MOEVK_CAPACITY_DROPLESS, .sequence_length = 100},
    {"sequence_jitter_is_exact", SEQ, SIZES(16, 2, 512, 0, 512), .pattern = LOGITS_TIES,
     .noise = MOEVK_NOISE_JITTER, .noise_amount = 0.3f, .noise_seed = 0x1234567890ull,
     .noisy_scores = 1, .sequence_length = 8},
    {"sequence_gaussian", SEQ, SIZES(16, 2, 512, 0, 512), .noise = MOEVK_NOISE_GAUSSIAN,
     .noise_amount = 0.5f, .noise_seed = 0x1234567890ull, .noisy_scores = 1, .sequence_length = 8},
    {"batch", BATCH, SIZES(8, 3, 999, 4, 999), .hidden = 1},
    {"batch_masked", BATCH, SIZES(8, 3, 300, 4, 300), .pattern = LOGITS_MASKED, .hidden = 1},
    {"batch_one_token", BATCH, SIZES(8, 3, 16, 4, 1), .hidden = 1},
    {"sequence_through_addresses", SEQ, SIZES(8, 2, 700, 16, 700), .hidden = 1, .addressed = 1},
    /* SINKHORN: balanced selection; decisions agree outside near ties. */
    {"sinkhorn", SINK, SIZES(8, 2, 500, 8, 500), .hidden = 1},
    {"sinkhorn_odd_sizes", SINK, SIZES(13, 3, 301, 5, 301), .hidden = 1},
    {"sinkhorn_masked", SINK, SIZES(12, 3, 400, 4, 400), .pattern = LOGITS_MASKED, .hidden = 1},
    {"sinkhorn_nonfinite", SINK, SIZES(8, 2, 300, 4, 300), .pattern = LOGITS_NONFINITE,
     .hidden = 1},
    {"sinkhorn_huge", SINK, SIZES(6, 2, 200, 0, 200), .pattern = LOGITS_HUGE},
    {"sinkhorn_ties", SINK, SIZES(6, 6, 200, 3, 200), .pattern = LOGITS_TIES, .hidden = 1},
    {"sinkhorn_zero_tokens", SINK, SIZES(8, 2, 16, 4, 0), .hidden = 1},
    {"sinkhorn_one_token", SINK, SIZES(8, 2, 16, 4, 1), .hidden = 1},
    {"sinkhorn_one_expert", SINK, SIZES(1, 1, 100, 4, 100), .hidden = 1},
    {"sinkhorn_jitter", SINK, SIZES(8, 2, 300, 0, 300), .noise = MOEVK_NOISE_JITTER,
     .noise_amount = 0.2f, .noise_seed = 99},
    {"sinkhorn_through_addresses", SINK, SIZES(8, 2, 700, 16, 700), .hidden = 1, .addressed = 1},
    /* EXPERT_CHOICE: each expert takes its top-C tokens. */
    {"expert_choice", CHOICE, SIZES(8, 2, 500, 12, 500)},
    {"expert_choice_odd_sizes_factor_2", CHOICE, SIZES(13, 1, 1001, 5, 1001),
     .capacity_factor = 2.0f},
    {"expert_choice_masked", CHOICE, SIZES(12, 1, 400, 4, 400), .pattern = LOGITS_MASKED},
    {"expert_choice_nonfinite", CHOICE, SIZES(8, 1, 300, 4, 300), .pattern = LOGITS_NONFINITE},
    {"expert_choice_huge", CHOICE, SIZES(6, 1, 200, 0, 200), .pattern = LOGITS_HUGE},
    {"expert_choice_ties", CHOICE, SIZES(6, 1, 300, 3, 300), .pattern = LOGITS_TIES},
    /* Over several blocks of a GPU's 1024 tokens (choice_block_tokens): ties that span blocks,
     * masked keys, a last block of one token, and fewer tokens than the router was made for. */
    {"expert_choice_ties_over_blocks", CHOICE, SIZES(5, 1, 6000, 0, 5000), .pattern = LOGITS_TIES,
     .choice_block_tokens = 1024},
    {"expert_choice_ties_over_many_blocks", CHOICE, SIZES(2, 1, 140000, 0, 140000),
     .pattern = LOGITS_TIES, .choice_block_tokens = 1024}, /* 137 blocks: lanes scan several */
    {"expert_choice_masked_over_blocks", CHOICE, SIZES(7, 1, 4099, 3, 4099),
     .pattern = LOGITS_MASKED, .choice_block_tokens = 1024},
    {"expert_choice_c_equals_t_over_blocks", CHOICE, SIZES(3, 1, 2049, 0, 2049),
     .capacity_mode = MOEVK_CAPACITY_FIXED, .capacity = 2049, .choice_block_tokens = 1024},
    /* A CPU's blocks of 16384 (the default on lavapipe) and odd sizes: blocks of fewer tokens
     * than a workgroup's lanes, of a prime count, and the largest. */
    {"expert_choice_ties_over_cpu_blocks", CHOICE, SIZES(3, 1, 140000, 0, 140000),
     .pattern = LOGITS_TIES}, /* 9 blocks, the last of 8928 tokens */
    {"expert_choice_blocks_of_7", CHOICE, SIZES(6, 1, 500, 2, 500), .pattern = LOGITS_TIES,
     .choice_block_tokens = 7},
    {"expert_choice_blocks_of_1", CHOICE, SIZES(3, 1, 70, 0, 70), .pattern = LOGITS_TIES,
     .choice_block_tokens = 1},
    {"expert_choice_blocks_of_997", CHOICE, SIZES(9, 1, 5000, 4, 5000), .pattern = LOGITS_MASKED,
     .choice_block_tokens = 997},
    {"expert_choice_blocks_of_the_largest", CHOICE, SIZES(2, 1, 300000, 0, 300000),
     .pattern = LOGITS_TIES, .choice_block_tokens = 262144},
    {"expert_choice_zero_tokens", CHOICE, SIZES(8, 1, 16, 4, 0)},
    {"expert_choice_one_token", CHOICE, SIZES(8, 1, 16, 4, 1)},
    {"expert_choice_one_expert", CHOICE, SIZES(1, 1, 100, 4, 100)},
    {"expert_choice_c_equals_t", CHOICE, SIZES(16, 1, 700, 0, 700),
     .capacity_mode = MOEVK_CAPACITY_FIXED, .capacity = 700}, /* every eligible token */
    {"expert_choice_c_zero", CHOICE, SIZES(16, 1, 700, 0, 700),
     .capacity_mode = MOEVK_CAPACITY_FIXED, .capacity = 0},
    {"expert_choice_sigmoid", CHOICE, SIZES(10, 1, 600, 6, 600), .score = MOEVK_SCORE_SIGMOID,
     .temperature = 0.7f, .scale = 2.5f},
    {"expert_choice_gumbel", CHOICE, SIZES(10, 1, 600, 6, 600), .temperature = 0.7f, .scale = 2.5f,
     .noise = MOEVK_NOISE_GUMBEL, .noise_amount = 0.5f, .noise_seed = 77},
    {"expert_choice_gumbel_noisy_scores", CHOICE, SIZES(10, 1, 600, 6, 600), .temperature = 0.7f,
     .scale = 2.5f, .noise = MOEVK_NOISE_GUMBEL, .noise_amount = 0.5f, .noise_seed = 77,
     .noisy_scores = 1},
    {"expert_choice_bf16_odd_d", CHOICE, SIZES(8, 1, 300, 7, 300), .hidden_type = MOEVK_DTYPE_BF16},
    {"expert_choice_f16", CHOICE, SIZES(8, 1, 300, 16, 300), .hidden_type = MOEVK_DTYPE_F16},
    {"expert_choice_through_addresses", CHOICE, SIZES(8, 1, 300, 16, 300), .addressed = 1},
};

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

/* The tests written as functions: what a table row cannot say. */
static const test_case FUNCTIONS[] = {
    TEST(sequence_tokens_share_the_decision),
    TEST(sinkhorn_balances),
    TEST(sinkhorn_cap_and_inference),
    TEST(expert_choice_ties_to_the_lower_token),
    TEST(mode_errors),
};

int main(int argc, char **argv) {
    return run_routing_table(CASES, sizeof CASES / sizeof CASES[0], FUNCTIONS,
                             sizeof FUNCTIONS / sizeof FUNCTIONS[0], argc, argv);
}
