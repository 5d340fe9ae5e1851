/* Routes one case on the device and holds every stage to the CPU reference. */
#ifndef MOEVK_ROUTE_CHECK_H
#define MOEVK_ROUTE_CHECK_H

#include "moevk.h"

typedef enum logits_pattern {
    LOGITS_RANDOM,    /* normal(0, 2) */
    LOGITS_TIES,      /* few distinct values: many exact ties */
    LOGITS_MASKED,    /* random with about a third of the experts at -inf, some rows all -inf */
    LOGITS_NONFINITE, /* random, with NaN and +inf in some rows */
    LOGITS_HUGE,      /* +-1e30 mixed with ordinary values */
    LOGITS_SKEWED,    /* a few experts preferred by most tokens: overflowing experts */
    LOGITS_COLLAPSED, /* every token's first choice is expert 0 */
} logits_pattern;

typedef struct route_case {
    const char *name;
    moevk_router_info info; /* completed from moevk_router_info_init */
    uint32_t num_tokens;
    logits_pattern pattern;
    int with_bias;
    int with_hidden;      /* dispatch and combine too (needs info.hidden_size) */
    uint32_t step, layer; /* the noise counter, when info.noise is set */
    uint32_t noise_row_offset;
    int inference;
    const float *noise_std;     /* [E] Gaussian std per expert, or NULL */
    const float *noise_weights; /* [d, E] W_noise of a learned std (needs with_hidden), or NULL */
} route_case;

/* A router of the mode with E experts, top-k, max_tokens T and hidden size d; the rest
 * moevk_router_info_init's defaults. */
moevk_router_info route_case_info(moevk_routing_mode mode, uint32_t E, uint32_t k, uint32_t T,
                                  uint32_t d);

/* Runs the case; failures go through the harness. */
void check_route_case(const route_case *c);

/* One row of a stage's case table (tests/test_routing.c, tests/test_modes.c; ggml's
 * test-backend-ops test_case structs are the model): a router and its route, in the options
 * that differ from route_case_info's defaults. A zero option keeps the default. */
typedef struct routing_case {
    const char *name; /* the test's name */
    moevk_routing_mode mode;
    uint32_t E, k, max_tokens, d;
    uint32_t T;
    logits_pattern pattern;
    int bias, hidden;
    moevk_score_func score;
    int renormalize;
    float scale, temperature;
    moevk_dtype logits_type, hidden_type;
    moevk_capacity_mode capacity_mode;
    float capacity_factor;
    int32_t capacity; /* FIXED mode's C */
    int32_t min_capacity;
    moevk_drop_policy drop_policy;
    uint32_t pad_multiple, groups, topk_groups;
    uint32_t sequence_length; /* SEQUENCE mode; 0: 16 */
    uint32_t sinkhorn_iterations;
    moevk_noise_kind noise;
    float noise_amount;
    uint64_t noise_seed;
    int noisy_scores;
    int bias_on_scores; /* DeepSeek-V3's selection: sigmoid score + bias (needs SIGMOID) */
    uint32_t step, layer;
    int addressed; /* reach the large buffers through device addresses (max_binding_bytes) */
    moevk_selection_kernel selection; /* scores and top-k's kernel (AUTO: the default) */
    uint32_t choice_block_tokens;     /* EXPERT_CHOICE's block (0: the device's) */
} routing_case;

/* The router of a row. */
moevk_router_info routing_case_info(const routing_case *c);
/* Runs a row (a routing_case): route_check.c's checks, or in EXPERT_CHOICE mode
 * choice_check.c's. The harness's test_case.run_row. A row of the subgroup kernel is skipped,
 * and says so, on a device that offers none. */
void run_routing_case(const void *row);
/* The test binary's main for a routing_case table: runs every row with the default kernels,
 * then each again with scores and top-k's subgroup kernel (named <name>_subgroup_kernel), and
 * the functions (test_main_with_table). */
struct test_case;
int run_routing_table(const routing_case *rows, size_t count, const struct test_case *functions,
                      size_t function_count, int argc, char **argv);

#endif
