/* Every routing mode at the sizes users run, against the CPU reference: sizes drawn afresh each
 * run (log-uniform T up to 65536 and E up to 1024, k, sequence length, capacity, noise; the
 * seed is printed), plus fixed cases at the largest sizes, where one invocation's loops would
 * pass lavapipe's loop limit (shaders/moevk_shared.h: LOOP_BUDGET) if a stage's work per
 * invocation grew with T. The checks are route_check.c's and choice_check.c's: decisions,
 * slots and counts bit for bit (outside near ties for noise and Sinkhorn), weights, statistics
 * and their consistency, dispatch, combine and a second run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "choice_check.h"
#include "harness.h"
#include "route_check.h"

/* The random cases keep T * E at most this, so that a run stays within CI's time (the largest
 * fixed cases go to 65536 x 64 and 4099 x 1024). */
#define RANDOM_ELEMENTS (1u << 21)

static uint32_t log_uniform(uint32_t low, uint32_t high) {
    double x = log((double)low) + (log((double)high + 1.0) - log((double)low)) * rng_uniform(0, 1);
    uint32_t value = (uint32_t)exp(x);
    return value < low ? low : value > high ? high : value;
}

static void with_gaussian_noise(moevk_router_info *info) {
    info->noise = MOEVK_NOISE_GAUSSIAN;
    info->noise_amount = 0.3f;
    info->noise_seed = rng_u32();
}

static void check(const char *name, moevk_router_info info, uint32_t T, int noisy) {
    printf("  %s: T %u, E %u, k %u, d %u%s\n", name, T, info.num_experts, info.top_k,
           info.hidden_size, noisy ? ", noise" : "");
    if (noisy) with_gaussian_noise(&info);
    if (info.mode == MOEVK_MODE_EXPERT_CHOICE) {
        run_choice(name, info, T, LOGITS_RANDOM);
        return;
    }
    route_case c = {.name = name,
                    .info = info,
                    .num_tokens = T,
                    .pattern = LOGITS_RANDOM,
                    .with_hidden = info.hidden_size > 0,
                    .step = 3,
                    .layer = 1};
    check_route_case(&c);
}

/* One random case of the mode, with and without noise. */
static void random_cases(moevk_routing_mode mode, const char *name) {
    for (int noisy = 0; noisy < 2 && !test_failed(); ++noisy) {
        uint32_t E = log_uniform(1, 1024);
        uint32_t T = log_uniform(1, 65536);
        if ((uint64_t)T * E > RANDOM_ELEMENTS) T = RANDOM_ELEMENTS / E;
        uint32_t k = 1 + rng_u32() % (E < 16 ? E : 16);
        uint32_t d = rng_u32() % 3 == 0 ? 0 : 1 + rng_u32() % 8;
        moevk_router_info info = route_case_info(mode, E, k, T + rng_u32() % 64, d);
        info.sequence_length = log_uniform(1, T);
        info.sinkhorn_iterations = rng_u32() % 2 ? 0 : 1 + rng_u32() % 20;
        if (rng_u32() % 2) info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
        info.capacity_factor = rng_uniform(0.5f, 2.0f);
        if (mode == MOEVK_MODE_EXPERT_CHOICE) info.capacity_mode = MOEVK_CAPACITY_FACTOR;
        check(name, info, T, noisy);
    }
}

static void test_token_random_sizes(void) { random_cases(MOEVK_MODE_TOKEN, "token"); }
static void test_sequence_random_sizes(void) { random_cases(MOEVK_MODE_SEQUENCE, "sequence"); }
static void test_batch_random_sizes(void) { random_cases(MOEVK_MODE_BATCH, "batch"); }
static void test_sinkhorn_random_sizes(void) { random_cases(MOEVK_MODE_SINKHORN, "sinkhorn"); }
static void test_expert_choice_random_sizes(void) {
    random_cases(MOEVK_MODE_EXPERT_CHOICE, "expert choice");
}

/* The sizes at which the single-workgroup Sinkhorn went wrong (it passed lavapipe's loop limit
 * after 1 to 3 iterations), to convergence (a cap of 10000). */
static void test_sinkhorn_large(void) {
    const struct {
        uint32_t T, E, k;
    } sizes[] = {{2600, 256, 2}, {4099, 256, 6}, {16384, 32, 2}, {65536, 8, 2}, {4099, 1024, 8}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && !test_failed(); ++i) {
        moevk_router_info info =
            route_case_info(MOEVK_MODE_SINKHORN, sizes[i].E, sizes[i].k, sizes[i].T, 0);
        info.sinkhorn_iterations = 10000;
        info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
        check("sinkhorn large", info, sizes[i].T, 0);
    }
    moevk_router_info info = route_case_info(MOEVK_MODE_SINKHORN, 64, 2, 65536, 4);
    check("sinkhorn 65536 x 64, noise", info, 65536, 1);
    /* Noise adds Philox's ten rounds to every kernel entry. */
    info = route_case_info(MOEVK_MODE_SINKHORN, 1024, 4, 2048, 0);
    check("sinkhorn 2048 x 1024, noise", info, 2048, 1);
}

/* One sequence of 65536 tokens: the mean's token-order sum spans four dispatches. */
static void test_batch_large(void) {
    check("batch 65536", route_case_info(MOEVK_MODE_BATCH, 16, 2, 65536, 2), 65536, 0);
    moevk_router_info info = route_case_info(MOEVK_MODE_SEQUENCE, 8, 2, 65536, 0);
    info.sequence_length = 40000; /* two chunks, then a shorter last sequence of one */
    check("sequence 40000", info, 65536, 1);
}

static void test_token_and_choice_large(void) {
    check("token 16384 x 1024", route_case_info(MOEVK_MODE_TOKEN, 1024, 16, 16384, 0), 16384, 0);
    check("token 65536 x 64", route_case_info(MOEVK_MODE_TOKEN, 64, 8, 65536, 4), 65536, 1);
    check("expert choice 65536 x 64", route_case_info(MOEVK_MODE_EXPERT_CHOICE, 64, 1, 65536, 2),
          65536, 0);
    check("expert choice 4099 x 1024", route_case_info(MOEVK_MODE_EXPERT_CHOICE, 1024, 1, 4099, 0),
          4099, 1);
    check("token 4096 x 1024, noise", route_case_info(MOEVK_MODE_TOKEN, 1024, 16, 4096, 0), 4096,
          1);
}

/* On lavapipe, routers whose stages would pass its loop limit are refused with the bound; just
 * below the bound they route correctly (the score policy with every token on one expert, where
 * the radix select walks all T choices, in wide workgroups: stage_workgroup_size). Expert
 * choice's selection, split into blocks of tokens, routes past its old bound of about 1.9
 * million tokens over two experts. */
static void test_lavapipe_loop_limit(void) {
    moevk_device_info device = {0};
    moevk_context_device_info(test_context(), &device);
    if (strcmp(device.driver_name, "llvmpipe") != 0) return;
    moevk_router_info score = route_case_info(MOEVK_MODE_TOKEN, 2, 1, 1100000, 0);
    score.drop_policy = MOEVK_DROP_SCORE;
    score.capacity_factor = 0.5f;
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &score, &router);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_ERROR_TOO_LARGE && !router, "max_tokens %u accepted on lavapipe",
          score.max_tokens);
    const char *message = moevk_context_last_error(test_context());
    CHECK(strstr(message, "lavapipe") && strstr(message, "at most"), "message: %s", message);
    check("expert choice 2100000 x 2", route_case_info(MOEVK_MODE_EXPERT_CHOICE, 2, 1, 2100000, 0),
          2100000, 0);
    score.max_tokens = 850000;
    route_case c = {.name = "score policy, 850000 tokens on one expert",
                    .info = score,
                    .num_tokens = 850000,
                    .pattern = LOGITS_COLLAPSED};
    check_route_case(&c);
}

static const test_case TESTS[] = {
    TEST(token_random_sizes),    TEST(sequence_random_sizes),      TEST(batch_random_sizes),
    TEST(sinkhorn_random_sizes), TEST(expert_choice_random_sizes), TEST(sinkhorn_large),
    TEST(batch_large),           TEST(token_and_choice_large),     TEST(lavapipe_loop_limit),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
