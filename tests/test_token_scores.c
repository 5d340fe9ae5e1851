/* Each token's out-of-distribution scores (moevk_route_output.token_scores: energy, entropy,
 * top-1 probability) against the CPU reference (reference/token_scores.c) on fresh random
 * logits: softmax and sigmoid, temperatures, noise on (noisy scores) and off, expert choice,
 * ties, -inf experts and rows, NaN and +inf rows, huge values, T = 0 and 1, E = 1, k = E, the
 * sizes users run (T = 4099, E = 256); the same bits on a second run; refused in the modes
 * without per-token logits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "logit_patterns.h"
#include "moevk_reference.h"
#include "route_check.h"

typedef struct scores_case {
    const char *name;
    moevk_routing_mode mode;
    uint32_t E, k, T;
    logit_pattern logits;
    moevk_score_func score;
    float temperature;
    int noise, inference; /* Gaussian noise on the scores (noisy_scores); inference: off */
    moevk_dtype logits_type;
} scores_case;

static const scores_case CASES[] = {
    {"softmax_top2_of_16", .E = 16, .k = 2, .T = 500},
    {"zero_tokens", .E = 8, .k = 2, .T = 0},
    {"one_token", .E = 8, .k = 2, .T = 1},
    {"one_expert", .E = 1, .k = 1, .T = 77},
    {"k_equals_e", .E = 5, .k = 5, .T = 64},
    {"ties", .E = 12, .k = 3, .T = 300, .logits = TIES},
    {"masked_experts_and_rows", .E = 10, .k = 2, .T = 300, .logits = MASKED},
    {"nan_and_inf_rows", .E = 9, .k = 2, .T = 300, .logits = NONFINITE},
    {"huge_values", .E = 8, .k = 2, .T = 200, .logits = HUGE_VALUES},
    {"sigmoid_temperature", .E = 16, .k = 4, .T = 333, .score = MOEVK_SCORE_SIGMOID,
     .temperature = 0.7f},
    {"softmax_temperature_2", .E = 16, .k = 2, .T = 333, .temperature = 2.0f},
    {"noisy_scores", .E = 16, .k = 2, .T = 400, .noise = 1},
    {"noise_off_in_inference", .E = 16, .k = 2, .T = 400, .noise = 1, .inference = 1},
    {"f16_logits", .E = 16, .k = 2, .T = 250, .logits_type = MOEVK_DTYPE_F16},
    {"expert_choice", .mode = MOEVK_MODE_EXPERT_CHOICE, .E = 8, .k = 1, .T = 256},
    {"sinkhorn", .mode = MOEVK_MODE_SINKHORN, .E = 16, .k = 2, .T = 300},
    {"large_t_4099_e_256", .E = 256, .k = 8, .T = 4099},
    /* Where the default kernel shares a token's experts over a subgroup's lanes (E >= 32 on a
     * GPU): experts that do not fill the lanes evenly, a temperature, masks. */
    {"odd_e_33_tempered", .E = 33, .k = 5, .T = 301, .temperature = 0.7f},
    {"e_64_masked_sigmoid", .E = 64, .k = 2, .T = 300, .logits = MASKED,
     .score = MOEVK_SCORE_SIGMOID},
};

static moevk_router_info case_info(const scores_case *c) {
    moevk_router_info info = route_case_info(c->mode, c->E, c->k, c->T ? c->T : 8, 0);
    info.score = c->score;
    if (c->temperature) info.temperature = c->temperature;
    info.logits_type = c->logits_type;
    if (c->noise) {
        info.noise = MOEVK_NOISE_GAUSSIAN;
        info.noise_amount = 0.5f;
        info.noise_seed = 99;
        info.noisy_scores = 1;
    }
    return info;
}

/* |got - want| within tol of the larger of 1 and |want|, or the same non-finite value. */
static int close_to(float got, float want, double tol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs((double)got - want) <= tol * fmax(1.0, fabs((double)want));
}

/* The same route's token scores from the selection kernel the router did not take (where the
 * device has both: moevk_selection_kernel), bit for bit. */
static int other_kernel_agrees(const moevk_router_info *info, const moevk_router *router,
                               const moevk_route_input *input, const float *scores) {
    if (test_selection_lanes() == 0) return 1;
    moevk_router_info other_info = *info;
    other_info.selection_kernel =
        moevk_router_selection_lanes(router) ? MOEVK_SELECTION_PER_TOKEN : MOEVK_SELECTION_SUBGROUP;
    moevk_router *other = NULL;
    float *other_scores = malloc((uint64_t)input->num_tokens * 12 + 4);
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.token_scores = moevk_host_tensor(other_scores);
    int agree = other_scores &&
                moevk_router_create(test_context(), &other_info, &other) == MOEVK_SUCCESS &&
                moevk_route(other, input, &output) == MOEVK_SUCCESS &&
                !memcmp(other_scores, scores, (uint64_t)input->num_tokens * 12);
    moevk_router_destroy(other);
    free(other_scores);
    return agree;
}

static void run_case(const void *row) {
    const scores_case *c = row;
    moevk_router_info info = case_info(c);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    uint64_t T = c->T, E = c->E, k = moevk_router_choices(router);
    size_t item = c->logits_type == MOEVK_DTYPE_F16 ? 2 : 4;
    void *logits = malloc(T * E * item + 4);
    for (uint64_t i = 0; i < T * E; ++i)
        ref_store(logits, i, c->logits_type,
                  pattern_logit(c->logits, (uint32_t)(i / E), (uint32_t)(i % E)));
    float *got = malloc(T * 3 * 4 + 4), *again = malloc(T * 3 * 4 + 4), *want = malloc(T * 12 + 4);
    int32_t *ids = malloc(T * k * 4 + 4);
    float *weights = malloc(T * k * 4 + 4);
    ref_row_stats *rows = malloc(T * sizeof *rows + sizeof *rows);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    input.logits = moevk_host_tensor(logits);
    input.step = 3;
    input.inference = c->inference;
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.token_scores = moevk_host_tensor(got);
    moevk_result r = moevk_route(router, &input, &output);
    output.token_scores = moevk_host_tensor(again);
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    int kernels_agree = other_kernel_agrees(&info, router, &input, got);
    /* The reference's row stats come from its TOKEN-mode scores (expert choice's too). */
    moevk_router_info token_info = info;
    token_info.mode = MOEVK_MODE_TOKEN;
    ref_call call = {.step = 3, .inference = c->inference};
    int referenced = ref_scores_topk(&token_info, &call, c->T, logits, NULL, ids, weights, rows);
    if (referenced) ref_token_scores(&info, &call, c->T, logits, rows, want);
    int64_t bad = -1;
    for (uint64_t t = 0; r == MOEVK_SUCCESS && referenced && t < T && bad < 0; ++t)
        if (!close_to(got[3 * t], want[3 * t], 1e-5) ||
            !close_to(got[3 * t + 1], want[3 * t + 1], 2e-5) ||
            !close_to(got[3 * t + 2], want[3 * t + 2], 2e-6))
            bad = (int64_t)t;
    float seen[3] = {0}, expected[3] = {0};
    if (bad >= 0) memcpy(seen, got + 3 * bad, 12), memcpy(expected, want + 3 * bad, 12);
    int same = r == MOEVK_SUCCESS && !memcmp(got, again, T * 12);
    moevk_router_destroy(router);
    free(logits), free(got), free(again), free(want), free(ids), free(weights), free(rows);
    CHECK(r == MOEVK_SUCCESS, "%s: route -> %s (%s)", c->name, moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(referenced, "out of memory");
    CHECK(bad < 0,
          "%s: token %lld: energy %.9g entropy %.9g top-1 %.9g; the reference %.9g %.9g %.9g",
          c->name, (long long)bad, seen[0], seen[1], seen[2], expected[0], expected[1],
          expected[2]);
    CHECK(same, "%s: a second run gave other bits", c->name);
    CHECK(kernels_agree, "%s: the other selection kernel gave other token scores", c->name);
}

/* A worked example: logits (0, ln 3) at temperature 1 give p = (1/4, 3/4): energy
 * -ln(1 + 3) = -ln 4, entropy -(1/4 ln 1/4 + 3/4 ln 3/4), top-1 3/4. */
static void test_worked_example(void) {
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 2, 1, 1, 0);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[2] = {0.0f, logf(3.0f)}, scores[3] = {0};
    moevk_route_input input = {.num_tokens = 1, .logits = moevk_host_tensor(logits)};
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.token_scores = moevk_host_tensor(scores);
    CHECK_OK(moevk_route(router, &input, &output));
    double entropy = -(0.25 * log(0.25) + 0.75 * log(0.75));
    CHECK(fabs(scores[0] + log(4.0)) < 1e-6 && fabs(scores[1] - entropy) < 1e-6 &&
              fabs(scores[2] - 0.75) < 1e-6,
          "energy %.9g entropy %.9g top-1 %.9g; want %.9g %.9g 0.75", scores[0], scores[1],
          scores[2], -log(4.0), entropy);
    moevk_router_destroy(router);
}

/* Modes whose decisions are not per token, and reading them back after a route, are refused. */
static void test_other_modes_are_refused(void) {
    moevk_routing_mode modes[2] = {MOEVK_MODE_SEQUENCE, MOEVK_MODE_BATCH};
    float logits[16 * 4] = {0}, scores[16 * 3];
    for (int m = 0; m < 2; ++m) {
        moevk_router_info info = route_case_info(modes[m], 4, 1, 16, 0);
        info.sequence_length = 8;
        moevk_router *router = NULL;
        CHECK_OK(moevk_router_create(test_context(), &info, &router));
        moevk_route_input input = {.num_tokens = 16, .logits = moevk_host_tensor(logits)};
        moevk_route_output output;
        moevk_route_output_init(&output);
        output.token_scores = moevk_host_tensor(scores);
        moevk_result r = moevk_route(router, &input, &output);
        CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT &&
                  strstr(moevk_context_last_error(test_context()), "token_scores need"),
              "mode %d: token scores -> %s", (int)modes[m], moevk_result_string(r));
        moevk_router_destroy(router);
    }
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 4, 1, 16, 0);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_route_input input = {.num_tokens = 16, .logits = moevk_host_tensor(logits)};
    moevk_route_output output;
    moevk_route_output_init(&output);
    CHECK_OK(moevk_route(router, &input, &output));
    output.token_scores = moevk_host_tensor(scores);
    CHECK(moevk_route_read(router, &output) == MOEVK_ERROR_INVALID_ARGUMENT,
          "moevk_route_read took token_scores");
    moevk_router_destroy(router);
}

static const test_case FUNCTIONS[] = {
    TEST(worked_example),
    TEST(other_modes_are_refused),
};

int main(int argc, char **argv) {
    return test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0], run_case,
                                FUNCTIONS, sizeof FUNCTIONS / sizeof FUNCTIONS[0], argc, argv);
}
