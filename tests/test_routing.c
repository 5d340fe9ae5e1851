/* Every routing stage on the device against the CPU reference, over a table of cases (ggml's
 * test-backend-ops test_case structs are the model): one behaviour or edge a row, fresh random
 * inputs each run (the seed is printed on failure). */
#include <math.h>

#include "harness.h"
#include "route_check.h"

#define P_RANDOM .pattern = LOGITS_RANDOM
#define SIZES(e, k_, t_max, d_, t) .E = e, .k = k_, .max_tokens = t_max, .d = d_, .T = t

/* Every stage against the reference, one behaviour or edge a row. */
static const routing_case CASES[] = {
    {"softmax_top2_matches_reference", SIZES(8, 2, 1000, 12, 1000), P_RANDOM, .hidden = 1},
    {"ties_go_to_the_lower_expert", SIZES(16, 4, 777, 8, 777), .pattern = LOGITS_TIES, .hidden = 1},
    {"neg_inf_masks_experts", SIZES(12, 5, 500, 4, 500), .pattern = LOGITS_MASKED, .bias = 1,
     .hidden = 1},
    {"nonfinite_rows_are_routed_nowhere", SIZES(8, 2, 600, 6, 600), .pattern = LOGITS_NONFINITE,
     .hidden = 1},
    {"huge_logits_stay_finite", SIZES(10, 3, 400, 5, 400), .pattern = LOGITS_HUGE, .hidden = 1},
    {"bias_changes_selection_not_weights", SIZES(32, 4, 900, 16, 900), P_RANDOM, .bias = 1,
     .hidden = 1},
    {"zero_tokens", SIZES(8, 2, 16, 8, 0), P_RANDOM, .hidden = 1},
    {"one_token", SIZES(8, 2, 16, 8, 1), P_RANDOM, .bias = 1, .hidden = 1},
    {"one_expert", SIZES(1, 1, 333, 7, 333), P_RANDOM, .hidden = 1},
    {"k_equals_e", SIZES(6, 6, 301, 9, 301), .pattern = LOGITS_TIES, .bias = 1, .hidden = 1},
    {"k16_of_512_experts", SIZES(512, 16, 257, 0, 257), P_RANDOM, .bias = 1},
    {"1024_experts", SIZES(1024, 8, 130, 4, 130), .pattern = LOGITS_MASKED, .hidden = 1},
    /* Sizes around a subgroup's lanes (the subgroup kernel's rows below run them too): E not a
     * multiple of the lanes, k = E past 32 with ties, k = 16 of many tied experts. */
    {"odd_e_33_k_5", SIZES(33, 5, 1001, 8, 1001), P_RANDOM, .bias = 1, .hidden = 1,
     .temperature = 0.7f},
    {"k16_of_40_ties", SIZES(40, 16, 257, 0, 257), .pattern = LOGITS_TIES},
    {"k16_of_256_ties_4099_tokens", SIZES(256, 16, 4099, 0, 4099), .pattern = LOGITS_TIES,
     .bias = 1},
    {"huge_and_masked_64", SIZES(64, 4, 700, 0, 700), .pattern = LOGITS_HUGE,
     .score = MOEVK_SCORE_SIGMOID, .renormalize = 1},
    {"odd_sizes", SIZES(13, 3, 1237, 13, 1237), P_RANDOM, .bias = 1, .hidden = 1},
    {"groups_8_keep_3", SIZES(64, 6, 900, 8, 900), P_RANDOM, .bias = 1, .hidden = 1, .groups = 8,
     .topk_groups = 3},
    {"groups_8_keep_3_sigmoid_masked", SIZES(64, 6, 900, 8, 900), .pattern = LOGITS_MASKED,
     .hidden = 1, .score = MOEVK_SCORE_SIGMOID, .groups = 8, .topk_groups = 3},
    {"groups_of_one_expert", SIZES(12, 3, 333, 4, 333), .pattern = LOGITS_TIES, .bias = 1,
     .hidden = 1, .groups = 12, .topk_groups = 3},
    {"all_groups_kept_is_plain_top_k", SIZES(30, 4, 100, 0, 100), .pattern = LOGITS_NONFINITE,
     .groups = 5, .topk_groups = 5},
    /* DeepSeek-V3's routing: the bias on the sigmoid scores, groups by their top-two sums. */
    {"bias_on_scores_deepseek_v3_shape", SIZES(256, 8, 4099, 0, 4099), P_RANDOM, .bias = 1,
     .score = MOEVK_SCORE_SIGMOID, .renormalize = 1, .scale = 2.5f, .groups = 8, .topk_groups = 4,
     .bias_on_scores = 1},
    {"bias_on_scores_masked_and_ties", SIZES(16, 4, 600, 4, 600), .pattern = LOGITS_TIES, .bias = 1,
     .hidden = 1, .score = MOEVK_SCORE_SIGMOID, .renormalize = 1, .bias_on_scores = 1},
    {"bias_on_scores_neg_inf_never_selected", SIZES(12, 5, 500, 0, 500), .pattern = LOGITS_MASKED,
     .bias = 1, .score = MOEVK_SCORE_SIGMOID, .groups = 4, .topk_groups = 2, .bias_on_scores = 1},
    {"bias_on_scores_nonfinite_rows", SIZES(8, 2, 300, 0, 300), .pattern = LOGITS_NONFINITE,
     .bias = 1, .score = MOEVK_SCORE_SIGMOID, .bias_on_scores = 1},
    {"bias_on_scores_saturated_huge", SIZES(10, 3, 400, 5, 400), .pattern = LOGITS_HUGE, .bias = 1,
     .hidden = 1, .score = MOEVK_SCORE_SIGMOID, .renormalize = 1, .bias_on_scores = 1},
    {"bias_on_scores_without_bias_k_equals_e", SIZES(6, 6, 301, 0, 301), P_RANDOM,
     .score = MOEVK_SCORE_SIGMOID, .renormalize = 1, .temperature = 0.7f, .bias_on_scores = 1},
    {"bias_on_scores_one_expert_one_token", SIZES(1, 1, 16, 3, 1), P_RANDOM, .bias = 1, .hidden = 1,
     .score = MOEVK_SCORE_SIGMOID, .renormalize = 1, .bias_on_scores = 1},
    {"bias_on_scores_dropless_odd", SIZES(13, 3, 1237, 13, 1237), .pattern = LOGITS_SKEWED,
     .bias = 1, .hidden = 1, .score = MOEVK_SCORE_SIGMOID, .capacity_mode = MOEVK_CAPACITY_DROPLESS,
     .bias_on_scores = 1},
    {"sigmoid_renormalized_scaled", SIZES(24, 6, 700, 10, 700), P_RANDOM, .bias = 1, .hidden = 1,
     .score = MOEVK_SCORE_SIGMOID, .renormalize = 1, .scale = 2.5f},
    {"softmax_temperature", SIZES(16, 2, 512, 8, 512), P_RANDOM, .hidden = 1, .temperature = 0.37f},
    {"f16_logits", SIZES(9, 2, 501, 8, 501), .pattern = LOGITS_TIES, .bias = 1, .hidden = 1,
     .logits_type = MOEVK_DTYPE_F16},
    {"f16_hidden_odd_d", SIZES(8, 2, 300, 7, 300), P_RANDOM, .hidden = 1,
     .hidden_type = MOEVK_DTYPE_F16},
    {"bf16_hidden", SIZES(8, 3, 400, 24, 400), P_RANDOM, .hidden = 1,
     .hidden_type = MOEVK_DTYPE_BF16},
    {"bf16_hidden_odd_d", SIZES(5, 2, 99, 3, 99), .pattern = LOGITS_SKEWED, .hidden = 1,
     .hidden_type = MOEVK_DTYPE_BF16},
    {"position_policy_drops_overflow", SIZES(8, 2, 2000, 8, 2000), .pattern = LOGITS_SKEWED,
     .hidden = 1, .capacity_factor = 0.5f},
    {"score_policy_keeps_highest_weights", SIZES(8, 2, 2000, 8, 2000), .pattern = LOGITS_SKEWED,
     .hidden = 1, .capacity_factor = 0.5f, .drop_policy = MOEVK_DROP_SCORE},
    {"score_policy_with_ties", SIZES(6, 3, 1500, 4, 1500), .pattern = LOGITS_TIES, .hidden = 1,
     .capacity_factor = 0.7f, .drop_policy = MOEVK_DROP_SCORE},
    {"capacity_zero_drops_everything", SIZES(8, 2, 100, 4, 100), P_RANDOM, .hidden = 1,
     .capacity_mode = MOEVK_CAPACITY_FIXED, .capacity = 0},
    {"capacity_one_score_policy", SIZES(8, 2, 100, 4, 100), P_RANDOM, .hidden = 1,
     .capacity_mode = MOEVK_CAPACITY_FIXED, .capacity = 1, .drop_policy = MOEVK_DROP_SCORE},
    {"min_capacity_applies", SIZES(64, 1, 64, 4, 40), .pattern = LOGITS_SKEWED, .hidden = 1,
     .min_capacity = 9},
    {"dropless_padded_blocks", SIZES(12, 3, 1000, 6, 1000), .pattern = LOGITS_SKEWED, .bias = 1,
     .hidden = 1, .capacity_mode = MOEVK_CAPACITY_DROPLESS, .pad_multiple = 16},
    {"dropless_with_masks", SIZES(7, 2, 500, 5, 500), .pattern = LOGITS_MASKED, .hidden = 1,
     .capacity_mode = MOEVK_CAPACITY_DROPLESS},
    {"fewer_tokens_than_max", SIZES(8, 2, 4096, 4, 1500), P_RANDOM, .hidden = 1},
    {"large_batch_2_20_tokens", SIZES(8, 2, 1u << 20, 0, 1u << 20), P_RANDOM, .bias = 1},
    {"large_batch_score_policy", SIZES(8, 2, 1u << 18, 0, 1u << 18), .pattern = LOGITS_SKEWED,
     .drop_policy = MOEVK_DROP_SCORE, .capacity_factor = 0.9f},
    {"addresses_f32", SIZES(8, 2, 700, 16, 700), P_RANDOM, .bias = 1, .hidden = 1, .addressed = 1},
    {"addresses_f16_logits_odd_d", SIZES(9, 3, 333, 7, 333), .pattern = LOGITS_TIES, .hidden = 1,
     .logits_type = MOEVK_DTYPE_F16, .hidden_type = MOEVK_DTYPE_F16, .addressed = 1},
    {"addresses_bf16_dropless", SIZES(6, 2, 500, 10, 500), .pattern = LOGITS_SKEWED, .hidden = 1,
     .hidden_type = MOEVK_DTYPE_BF16, .capacity_mode = MOEVK_CAPACITY_DROPLESS, .pad_multiple = 8,
     .addressed = 1},
    {"addresses_score_policy", SIZES(6, 2, 500, 12, 500), .pattern = LOGITS_SKEWED, .hidden = 1,
     .drop_policy = MOEVK_DROP_SCORE, .capacity_factor = 0.6f, .addressed = 1},
    /* Real sizes past lavapipe's 128 MiB maxStorageBufferRange: hidden states of 144 MB. */
    {"hidden_states_past_max_storage_buffer_range", SIZES(8, 2, 36000, 1000, 36000), P_RANDOM,
     .hidden = 1},
};

/* A group with the single best expert but a poor second loses to two good pairs. */
static void test_group_score_is_the_top_two_sum(void) {
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 6, 2, 1, 0);
    info.num_groups = 3;
    info.topk_groups = 2;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    /* groups {0,1} = 9 + (-9), {2,3} = 5 + 4, {4,5} = 3 + 3: groups 1 and 2 kept. */
    const float logits[6] = {9, -9, 5, 4, 3, 3};
    int32_t ids[2];
    moevk_route_input input = {.num_tokens = 1, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids)};
    CHECK_OK(moevk_route(router, &input, &output));
    moevk_router_destroy(router);
    CHECK(ids[0] == 2 && ids[1] == 3, "ids %d %d, want 2 3", ids[0], ids[1]);
    info.num_groups = 4; /* does not divide 6 */
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "num_groups must divide E");
    info.num_groups = 3;
    info.topk_groups = 1;
    info.top_k = 3; /* more than one group of two holds */
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "k past the kept groups");
}

/* bias_on_scores against DeepSeek-V3's own algorithm, written out here as its MoEGate does it
 * (noaux_tc): scores = sigmoid(logits); keys = scores + bias; each group's score the sum of its
 * two largest keys; the top_k of the keys in the topk_group best groups; weights the unbiased
 * scores of those, over their sum + 1e-20, times routed_scaling_factor. DeepSeek's top-k is
 * unsorted: the sets and each expert's weight must agree. */
static void test_bias_on_scores_routes_as_deepseek_v3(void) {
    enum { T = 300, E = 32, K = 4, G = 8, KEPT_GROUPS = 3 };
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, E, K, T, 0);
    info.score = MOEVK_SCORE_SIGMOID;
    info.renormalize = 1;
    info.scale = 2.5f;
    info.num_groups = G;
    info.topk_groups = KEPT_GROUPS;
    info.bias_on_scores = 1;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    static float logits[T * E], weights[T * K], bias[E];
    static int32_t ids[T * K];
    for (int i = 0; i < T * E; ++i) logits[i] = 2.0f * rng_normal();
    for (int e = 0; e < E; ++e) bias[e] = rng_uniform(-0.3f, 0.3f);
    moevk_route_input input = {
        .num_tokens = T, .logits = moevk_host_tensor(logits), .bias = moevk_host_tensor(bias)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .weights = moevk_host_tensor(weights)};
    moevk_result r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK_OK(r);
    int wrong_sets = 0, wrong_weights = 0;
    for (int t = 0; t < T; ++t) {
        float scores[E], keys[E], group_score[G];
        for (int e = 0; e < E; ++e) {
            scores[e] = 1.0f / (1.0f + expf(-logits[t * E + e]));
            keys[e] = scores[e] + bias[e];
        }
        for (int g = 0; g < G; ++g) {
            float first = -INFINITY, second = -INFINITY;
            for (int e = g * (E / G); e < (g + 1) * (E / G); ++e) {
                if (keys[e] > first)
                    second = first, first = keys[e];
                else if (keys[e] > second)
                    second = keys[e];
            }
            group_score[g] = first + second;
        }
        int kept[G] = {0};
        for (int n = 0; n < KEPT_GROUPS; ++n) {
            int best = -1;
            for (int g = 0; g < G; ++g)
                if (!kept[g] && (best < 0 || group_score[g] > group_score[best])) best = g;
            kept[best] = 1;
        }
        int chosen[E] = {0};
        float sum = 0.0f;
        for (int n = 0; n < K; ++n) {
            int best = -1;
            for (int e = 0; e < E; ++e)
                if (kept[e / (E / G)] && !chosen[e] && (best < 0 || keys[e] > keys[best])) best = e;
            chosen[best] = 1;
            sum += scores[best];
        }
        for (int j = 0; j < K; ++j) {
            int e = ids[t * K + j];
            if (e < 0 || e >= E || !chosen[e]) {
                ++wrong_sets;
                continue;
            }
            double want = scores[e] / (sum + 1e-20f) * 2.5f;
            if (fabs(weights[t * K + j] - want) > 1e-5 * want) ++wrong_weights;
        }
    }
    CHECK(wrong_sets == 0, "%d of %d choices outside DeepSeek-V3's selected set", wrong_sets,
          T * K);
    CHECK(wrong_weights == 0, "%d weights differ from DeepSeek-V3's", wrong_weights);
    /* The options it needs. */
    info.score = MOEVK_SCORE_SOFTMAX;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "bias_on_scores with softmax scores was accepted");
    info.score = MOEVK_SCORE_SIGMOID;
    info.num_groups = info.topk_groups = 0;
    info.mode = MOEVK_MODE_SINKHORN;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "bias_on_scores in the SINKHORN mode was accepted");
    /* The load loss compares noisy logits with logit-space keys: refused. */
    info.mode = MOEVK_MODE_TOKEN;
    info.losses = 1;
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 1.0f;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    r = moevk_route(router, &input, &output);
    moevk_loss_info loss;
    moevk_loss_info_init(&loss);
    loss.load_coef = 0.01f;
    moevk_losses losses;
    moevk_losses_init(&losses);
    moevk_result refused =
        r == MOEVK_SUCCESS ? moevk_router_losses(router, &loss, &losses, moevk_host_tensor(NULL))
                           : r;
    moevk_router_destroy(router);
    CHECK(refused == MOEVK_ERROR_INVALID_ARGUMENT, "the load loss with bias_on_scores -> %s",
          moevk_result_string(refused));
}

/* The tests written as functions: what a table row cannot say. */
static const test_case FUNCTIONS[] = {
    TEST(group_score_is_the_top_two_sum),
    TEST(bias_on_scores_routes_as_deepseek_v3),
};

int main(int argc, char **argv) {
    return run_routing_table(CASES, sizeof CASES / sizeof CASES[0], FUNCTIONS,
                             sizeof FUNCTIONS / sizeof FUNCTIONS[0], argc, argv);
}
