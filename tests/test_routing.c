/* Every routing stage on the device against the CPU reference, over a table of cases: one
 * behaviour or edge per case, fresh random inputs each run (the seed is printed on failure). */
#include "harness.h"
#include "route_check.h"

static moevk_router_info base(uint32_t E, uint32_t k, uint32_t T, uint32_t d) {
    return route_case_info(MOEVK_MODE_TOKEN, E, k, T, d);
}

static void run(const char *name, moevk_router_info info, uint32_t T, logits_pattern pattern,
                int bias, int hidden) {
    route_case c = {.name = name,
                    .info = info,
                    .num_tokens = T,
                    .pattern = pattern,
                    .with_bias = bias,
                    .with_hidden = hidden};
    check_route_case(&c);
}

static void test_softmax_top2_matches_reference(void) {
    run("softmax top-2", base(8, 2, 1000, 12), 1000, LOGITS_RANDOM, 0, 1);
}
static void test_ties_go_to_the_lower_expert(void) {
    run("ties", base(16, 4, 777, 8), 777, LOGITS_TIES, 0, 1);
}
static void test_neg_inf_masks_experts(void) {
    run("masks", base(12, 5, 500, 4), 500, LOGITS_MASKED, 1, 1);
}
static void test_nonfinite_rows_are_routed_nowhere(void) {
    run("nonfinite", base(8, 2, 600, 6), 600, LOGITS_NONFINITE, 0, 1);
}
static void test_huge_logits_stay_finite(void) {
    run("huge", base(10, 3, 400, 5), 400, LOGITS_HUGE, 0, 1);
}
static void test_bias_changes_selection_not_weights(void) {
    run("bias", base(32, 4, 900, 16), 900, LOGITS_RANDOM, 1, 1);
}
static void test_zero_tokens(void) { run("T=0", base(8, 2, 16, 8), 0, LOGITS_RANDOM, 0, 1); }
static void test_one_token(void) { run("T=1", base(8, 2, 16, 8), 1, LOGITS_RANDOM, 1, 1); }
static void test_one_expert(void) { run("E=1", base(1, 1, 333, 7), 333, LOGITS_RANDOM, 0, 1); }
static void test_k_equals_e(void) { run("k=E", base(6, 6, 301, 9), 301, LOGITS_TIES, 1, 1); }
static void test_k16_of_512_experts(void) {
    run("E=512 k=16", base(512, 16, 257, 0), 257, LOGITS_RANDOM, 1, 0);
}
static void test_1024_experts(void) {
    run("E=1024 k=8", base(1024, 8, 130, 4), 130, LOGITS_MASKED, 0, 1);
}
static void test_odd_sizes(void) { run("odd", base(13, 3, 1237, 13), 1237, LOGITS_RANDOM, 1, 1); }

static void test_group_limited_routing(void) {
    moevk_router_info info = base(64, 6, 900, 8);
    info.num_groups = 8;
    info.topk_groups = 3;
    run("groups 8, keep 3", info, 900, LOGITS_RANDOM, 1, 1);
    info.score = MOEVK_SCORE_SIGMOID;
    run("groups 8, keep 3, masked", info, 900, LOGITS_MASKED, 0, 1);
    info = base(12, 3, 333, 4);
    info.num_groups = 12; /* one expert per group */
    info.topk_groups = 3;
    run("groups of one expert", info, 333, LOGITS_TIES, 1, 1);
    info = base(30, 4, 100, 0);
    info.num_groups = 5;
    info.topk_groups = 5; /* every group kept: plain top-k */
    run("all groups kept", info, 100, LOGITS_NONFINITE, 0, 0);
}

/* A group with the single best expert but a poor second loses to two good pairs. */
static void test_group_score_is_the_top_two_sum(void) {
    moevk_router_info info = base(6, 2, 1, 0);
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

static void test_sigmoid_renormalized_scaled(void) {
    moevk_router_info info = base(24, 6, 700, 10);
    info.score = MOEVK_SCORE_SIGMOID;
    info.renormalize = 1;
    info.scale = 2.5f;
    run("sigmoid renorm scale", info, 700, LOGITS_RANDOM, 1, 1);
}

static void test_softmax_temperature(void) {
    moevk_router_info info = base(16, 2, 512, 8);
    info.temperature = 0.37f;
    run("temperature", info, 512, LOGITS_RANDOM, 0, 1);
}

static void test_f16_logits(void) {
    moevk_router_info info = base(9, 2, 501, 8);
    info.logits_type = MOEVK_DTYPE_F16;
    run("f16 logits", info, 501, LOGITS_TIES, 1, 1);
}

static void test_f16_hidden_odd_d(void) {
    moevk_router_info info = base(8, 2, 300, 7);
    info.hidden_type = MOEVK_DTYPE_F16;
    run("f16 hidden, d=7", info, 300, LOGITS_RANDOM, 0, 1);
}

static void test_bf16_hidden(void) {
    moevk_router_info info = base(8, 3, 400, 24);
    info.hidden_type = MOEVK_DTYPE_BF16;
    run("bf16 hidden", info, 400, LOGITS_RANDOM, 0, 1);
}

static void test_bf16_hidden_odd_d(void) {
    moevk_router_info info = base(5, 2, 99, 3);
    info.hidden_type = MOEVK_DTYPE_BF16;
    run("bf16 hidden, d=3", info, 99, LOGITS_SKEWED, 0, 1);
}

static void test_position_policy_drops_overflow(void) {
    moevk_router_info info = base(8, 2, 2000, 8);
    info.capacity_factor = 0.5f;
    run("position drops", info, 2000, LOGITS_SKEWED, 0, 1);
}

static void test_score_policy_keeps_highest_weights(void) {
    moevk_router_info info = base(8, 2, 2000, 8);
    info.capacity_factor = 0.5f;
    info.drop_policy = MOEVK_DROP_SCORE;
    run("score drops", info, 2000, LOGITS_SKEWED, 0, 1);
}

static void test_score_policy_with_ties(void) {
    moevk_router_info info = base(6, 3, 1500, 4);
    info.capacity_factor = 0.7f;
    info.drop_policy = MOEVK_DROP_SCORE;
    run("score drops, ties", info, 1500, LOGITS_TIES, 0, 1);
}

static void test_capacity_zero_drops_everything(void) {
    moevk_router_info info = base(8, 2, 100, 4);
    info.capacity_mode = MOEVK_CAPACITY_FIXED;
    info.capacity = 0;
    run("C=0", info, 100, LOGITS_RANDOM, 0, 1);
}

static void test_capacity_one_score_policy(void) {
    moevk_router_info info = base(8, 2, 100, 4);
    info.capacity_mode = MOEVK_CAPACITY_FIXED;
    info.capacity = 1;
    info.drop_policy = MOEVK_DROP_SCORE;
    run("C=1 score", info, 100, LOGITS_RANDOM, 0, 1);
}

static void test_min_capacity_applies(void) {
    moevk_router_info info = base(64, 1, 64, 4);
    info.min_capacity = 9;
    run("min capacity", info, 40, LOGITS_SKEWED, 0, 1);
}

static void test_dropless_padded_blocks(void) {
    moevk_router_info info = base(12, 3, 1000, 6);
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    info.pad_multiple = 16;
    run("dropless pad 16", info, 1000, LOGITS_SKEWED, 1, 1);
}

static void test_dropless_with_masks(void) {
    moevk_router_info info = base(7, 2, 500, 5);
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    run("dropless", info, 500, LOGITS_MASKED, 0, 1);
}

static void test_fewer_tokens_than_max(void) {
    run("T < max", base(8, 2, 4096, 4), 1500, LOGITS_RANDOM, 0, 1);
}

static void test_large_batch_2_20_tokens(void) {
    run("T=2^20", base(8, 2, 1u << 20, 0), 1u << 20, LOGITS_RANDOM, 1, 0);
}

static void test_large_batch_score_policy(void) {
    moevk_router_info info = base(8, 2, 1u << 18, 0);
    info.drop_policy = MOEVK_DROP_SCORE;
    info.capacity_factor = 0.9f;
    run("T=2^18 score", info, 1u << 18, LOGITS_SKEWED, 0, 0);
}

/* Buffers reached through device addresses instead of descriptors (max_binding_bytes forces it). */
static moevk_router_info addressed(moevk_router_info info) {
    info.max_binding_bytes = 1024;
    return info;
}

static void test_addresses_f32(void) {
    run("addresses f32", addressed(base(8, 2, 700, 16)), 700, LOGITS_RANDOM, 1, 1);
}

static void test_addresses_f16_logits_odd_d(void) {
    moevk_router_info info = addressed(base(9, 3, 333, 7));
    info.logits_type = MOEVK_DTYPE_F16;
    info.hidden_type = MOEVK_DTYPE_F16;
    run("addresses f16 odd d", info, 333, LOGITS_TIES, 0, 1);
}

static void test_addresses_bf16_dropless_and_score(void) {
    moevk_router_info info = addressed(base(6, 2, 500, 10));
    info.hidden_type = MOEVK_DTYPE_BF16;
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    info.pad_multiple = 8;
    run("addresses bf16 dropless", info, 500, LOGITS_SKEWED, 0, 1);
    info = addressed(base(6, 2, 500, 12));
    info.drop_policy = MOEVK_DROP_SCORE;
    info.capacity_factor = 0.6f;
    run("addresses score policy", info, 500, LOGITS_SKEWED, 0, 1);
}

/* Real sizes past lavapipe's 128 MiB maxStorageBufferRange: hidden states of 144 MB. */
static void test_hidden_states_past_max_storage_buffer_range(void) {
    run("past maxStorageBufferRange", base(8, 2, 36000, 1000), 36000, LOGITS_RANDOM, 0, 1);
}

static const test_case TESTS[] = {
    TEST(group_limited_routing),
    TEST(group_score_is_the_top_two_sum),
    TEST(addresses_f32),
    TEST(addresses_f16_logits_odd_d),
    TEST(addresses_bf16_dropless_and_score),
    {"hidden_states_past_max_storage_buffer_range",
     test_hidden_states_past_max_storage_buffer_range},
    TEST(softmax_top2_matches_reference),
    TEST(ties_go_to_the_lower_expert),
    TEST(neg_inf_masks_experts),
    TEST(nonfinite_rows_are_routed_nowhere),
    TEST(huge_logits_stay_finite),
    TEST(bias_changes_selection_not_weights),
    TEST(zero_tokens),
    TEST(one_token),
    TEST(one_expert),
    TEST(k_equals_e),
    TEST(k16_of_512_experts),
    TEST(1024_experts),
    TEST(odd_sizes),
    TEST(sigmoid_renormalized_scaled),
    TEST(softmax_temperature),
    TEST(f16_logits),
    TEST(f16_hidden_odd_d),
    TEST(bf16_hidden),
    TEST(bf16_hidden_odd_d),
    TEST(position_policy_drops_overflow),
    TEST(score_policy_keeps_highest_weights),
    TEST(score_policy_with_ties),
    TEST(capacity_zero_drops_everything),
    TEST(capacity_one_score_policy),
    TEST(min_capacity_applies),
    TEST(dropless_padded_blocks),
    TEST(dropless_with_masks),
    TEST(fewer_tokens_than_max),
    TEST(large_batch_2_20_tokens),
    TEST(large_batch_score_policy),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
