/* Routes recorded once: a route or a layer's forward of the same shape as the router's last
 * route submits the commands that route recorded again (moevk_route_stats.resubmitted). The
 * resubmitted calls must give, on fresh inputs each time, the bits of a call that records (a
 * second router, made to record by a call of another T in between); a change of T, of a
 * tensor's kind, of the moevk_buffer a tensor is in, or of the noise's step records again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "random_weights.h"

#define E 16
#define K 4
#define D 24
#define F 20
#define MAX_T 300

static moevk_router_info small_router(moevk_capacity_mode capacity) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = K;
    info.max_tokens = MAX_T;
    info.hidden_size = D;
    info.renormalize = 1;
    info.capacity_mode = capacity;
    info.capacity_factor = 1.0f; /* drops, so that slots and counts say something */
    return info;
}

/* What a route gives, compared bit for bit. */
typedef struct routed {
    int32_t ids[MAX_T * K], slots[MAX_T * K];
    float weights[MAX_T * K];
    uint32_t counts[E], counts_before[E];
    float dispatched[MAX_T * K * D];
    moevk_route_stats stats;
} routed;

/* The outputs into r; the dispatched rows where the route has hidden states. */
static moevk_route_output output_into(routed *r, const moevk_route_input *input) {
    memset(r, 0, sizeof *r);
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.expert_ids = moevk_host_tensor(r->ids);
    output.slots = moevk_host_tensor(r->slots);
    output.weights = moevk_host_tensor(r->weights);
    output.counts = moevk_host_tensor(r->counts);
    output.counts_before = moevk_host_tensor(r->counts_before);
    if (input->hidden.kind != MOEVK_TENSOR_NONE)
        output.dispatched = moevk_host_tensor(r->dispatched);
    moevk_route_stats_init(&r->stats);
    output.stats = &r->stats;
    return output;
}

static void fill_normal(float *values, size_t count) {
    for (size_t i = 0; i < count; ++i) values[i] = rng_normal();
}

/* Whether two routes of T tokens gave the same bits. */
static int same_route(const routed *a, const routed *b, uint32_t T) {
    uint64_t tk = (uint64_t)T * K;
    return memcmp(a->ids, b->ids, tk * 4) == 0 && memcmp(a->slots, b->slots, tk * 4) == 0 &&
           memcmp(a->weights, b->weights, tk * 4) == 0 &&
           memcmp(a->counts, b->counts, sizeof a->counts) == 0 &&
           memcmp(a->counts_before, b->counts_before, sizeof a->counts_before) == 0 &&
           a->stats.dispatched_rows == b->stats.dispatched_rows &&
           memcmp(a->dispatched, b->dispatched, (uint64_t)a->stats.dispatched_rows * D * 4) == 0 &&
           a->stats.assignments == b->stats.assignments && a->stats.dropped == b->stats.dropped &&
           a->stats.aux_loss == b->stats.aux_loss && a->stats.z_loss == b->stats.z_loss;
}

/* The route of `input` on a router that records it: a route of another T first. */
static moevk_result recorded_route(moevk_router *router, const moevk_route_input *input,
                                   routed *want) {
    static const float one_row[E] = {1.0f};
    moevk_route_input other = *input;
    other.num_tokens = input->num_tokens == 1 ? 2 : 1;
    float rows[2 * E];
    memcpy(rows, one_row, sizeof one_row);
    memcpy(rows + E, one_row, sizeof one_row);
    other.logits = moevk_host_tensor(rows);
    other.hidden = moevk_host_tensor(NULL);
    moevk_route_output none;
    moevk_route_output_init(&none);
    moevk_result r = moevk_route(router, &other, &none);
    moevk_route_output output = output_into(want, input);
    return r == MOEVK_SUCCESS ? moevk_route(router, input, &output) : r;
}

/* Fresh logits and hidden states every call at a steady T, resubmitted from the second call
 * on; a new T records again, and so does going back to the first (one recording is kept). */
static void test_steady_route_resubmits(void) {
    moevk_router_info info = small_router(MOEVK_CAPACITY_FIXED);
    moevk_router *router = NULL, *recording = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_result made = moevk_router_create(test_context(), &info, &recording);
    static float logits[MAX_T * E], hidden[MAX_T * D];
    static routed got, want;
    const uint32_t sizes[] = {37, 37, 37, 37, 1, 1, 1, 37, 0, 0, MAX_T, MAX_T};
    const int resubmitted[] = {0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1};
    for (size_t i = 0; made == MOEVK_SUCCESS && i < sizeof sizes / sizeof sizes[0]; ++i) {
        uint32_t T = sizes[i];
        fill_normal(logits, (size_t)T * E);
        fill_normal(hidden, (size_t)T * D);
        if (i == 2) logits[5] = logits[6]; /* a tie */
        if (i == 3) logits[7] = -1.0f / 0.0f;
        moevk_route_input input;
        moevk_route_input_init(&input);
        input.num_tokens = T;
        input.logits = moevk_host_tensor(logits);
        input.hidden = moevk_host_tensor(hidden);
        moevk_route_output output = output_into(&got, &input);
        CHECK_OK(moevk_route(router, &input, &output));
        CHECK(got.stats.resubmitted == resubmitted[i], "call %zu (T = %u): resubmitted %d", i, T,
              got.stats.resubmitted);
        CHECK_OK(recorded_route(recording, &input, &want));
        CHECK(!want.stats.resubmitted, "the recording router resubmitted");
        CHECK(same_route(&got, &want, T), "call %zu (T = %u): the resubmitted route differs", i, T);
    }
    CHECK_OK(made);
    moevk_router_destroy(recording);
    moevk_router_destroy(router);
}

/* A tensor in a moevk_buffer is part of the shape: another buffer records again, even one made
 * after the first was destroyed (it may get the same address); new data in the same buffer is
 * resubmitted; so is an output's kind (the weights to a buffer). Dropless. */
static void test_buffers_change_the_key(void) {
    moevk_router_info info = small_router(MOEVK_CAPACITY_DROPLESS);
    moevk_router *router = NULL, *recording = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_result r = moevk_router_create(test_context(), &info, &recording);
    const uint32_t T = 53;
    static float logits[MAX_T * E];
    moevk_buffer *in[3] = {NULL, NULL, NULL}, *weights_out = NULL;
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(test_context(), T * E * 4, &in[0]);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(test_context(), T * E * 4, &in[1]);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(test_context(), T * K * 4, &weights_out);
    /* Which buffer holds the logits (-1: the host), whether the weights go to a buffer, and
     * whether the call resubmits. */
    const struct {
        int buffer, weights_to_buffer, resubmitted;
    } calls[] = {{0, 0, 0},  {0, 0, 1},  {1, 0, 0}, {1, 0, 1}, {-1, 0, 0},
                 {-1, 1, 0}, {-1, 1, 1}, {2, 1, 0}, {2, 1, 1}, {1, 1, 0}};
    static routed got, want;
    for (size_t i = 0; r == MOEVK_SUCCESS && i < sizeof calls / sizeof calls[0]; ++i) {
        if (i == 7) { /* in[2], made after in[0] is destroyed */
            moevk_buffer_destroy(in[0]);
            in[0] = NULL;
            r = moevk_buffer_create(test_context(), T * E * 4, &in[2]);
            if (r != MOEVK_SUCCESS) break;
        }
        fill_normal(logits, (size_t)T * E);
        moevk_route_input input;
        moevk_route_input_init(&input);
        input.num_tokens = T;
        input.logits = moevk_host_tensor(logits);
        if (calls[i].buffer >= 0) {
            CHECK_OK(moevk_buffer_write(in[calls[i].buffer], 0, logits, T * E * 4));
            input.logits = moevk_buffer_tensor(in[calls[i].buffer], 0);
        }
        moevk_route_output output = output_into(&got, &input);
        if (calls[i].weights_to_buffer) output.weights = moevk_buffer_tensor(weights_out, 0);
        CHECK_OK(moevk_route(router, &input, &output));
        CHECK(got.stats.resubmitted == calls[i].resubmitted, "call %zu: resubmitted %d", i,
              got.stats.resubmitted);
        if (calls[i].weights_to_buffer)
            CHECK_OK(moevk_buffer_read(weights_out, 0, got.weights, T * K * 4));
        input.logits = moevk_host_tensor(logits); /* the same logits from the host, recorded */
        CHECK_OK(recorded_route(recording, &input, &want));
        CHECK(same_route(&got, &want, T), "call %zu: the route differs from the recorded one", i);
    }
    CHECK_OK(r);
    for (int b = 0; b < 3; ++b) moevk_buffer_destroy(in[b]);
    moevk_buffer_destroy(weights_out);
    moevk_router_destroy(recording);
    moevk_router_destroy(router);
}

/* A combine between two routes uses the router's other command buffer: the second route is
 * still resubmitted, and both combines give what a recording router's give. */
static void test_combine_between_routes(void) {
    moevk_router_info info = small_router(MOEVK_CAPACITY_FIXED);
    moevk_router *router = NULL, *recording = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_result made = moevk_router_create(test_context(), &info, &recording);
    const uint32_t T = 41;
    static float logits[MAX_T * E], hidden[MAX_T * D], expert_out[MAX_T * K * D];
    static float combined[MAX_T * D], combined_want[MAX_T * D];
    static routed got, want;
    for (int i = 0; made == MOEVK_SUCCESS && i < 3; ++i) {
        fill_normal(logits, (size_t)T * E);
        fill_normal(hidden, (size_t)T * D);
        moevk_route_input input;
        moevk_route_input_init(&input);
        input.num_tokens = T;
        input.logits = moevk_host_tensor(logits);
        input.hidden = moevk_host_tensor(hidden);
        moevk_route_output output = output_into(&got, &input);
        CHECK_OK(moevk_route(router, &input, &output));
        CHECK(got.stats.resubmitted == (i > 0), "route %d: resubmitted %d", i,
              got.stats.resubmitted);
        fill_normal(expert_out, (size_t)got.stats.dispatched_rows * D);
        CHECK_OK(moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined)));
        CHECK_OK(recorded_route(recording, &input, &want));
        CHECK(same_route(&got, &want, T), "route %d differs from the recorded one", i);
        CHECK_OK(moevk_combine(recording, moevk_host_tensor(expert_out),
                               moevk_host_tensor(combined_want)));
        CHECK(memcmp(combined, combined_want, (size_t)T * D * 4) == 0, "combine %d differs", i);
    }
    CHECK_OK(made);
    moevk_router_destroy(recording);
    moevk_router_destroy(router);
}

/* The noise's counter lives in a buffer uploaded each call, not in the recording: every call
 * after the first is resubmitted, and each step draws the noise a fresh router (which records)
 * draws at that step. */
static moevk_result route_step(moevk_router *router, const float *logits, uint32_t T, uint32_t step,
                               routed *into) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.logits = moevk_host_tensor((void *)logits);
    input.step = step;
    moevk_route_output output = output_into(into, &input);
    return moevk_route(router, &input, &output);
}

static void test_noise_steps_resubmit(void) {
    moevk_router_info info = small_router(MOEVK_CAPACITY_DROPLESS);
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 0.7f;
    info.noise_seed = 1234;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    const uint32_t T = 29;
    static float logits[MAX_T * E];
    fill_normal(logits, (size_t)T * E);
    static routed got, fresh, step_one;
    const uint32_t steps[] = {0, 1, 1, 2, 1};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; ++i) {
        CHECK_OK(route_step(router, logits, T, steps[i], &got));
        CHECK(got.stats.resubmitted == (i > 0), "step call %zu: resubmitted %d", i,
              got.stats.resubmitted);
        moevk_router *once = NULL;
        CHECK_OK(moevk_router_create(test_context(), &info, &once));
        CHECK_OK(route_step(once, logits, T, steps[i], &fresh));
        CHECK(fresh.stats.resubmitted == 0, "a fresh router resubmitted");
        moevk_router_destroy(once);
        CHECK(same_route(&got, &fresh, T),
              "call %zu (step %u): the noise differs from a fresh "
              "router's",
              i, steps[i]);
        if (i == 1) step_one = got;
        if (steps[i] == 2)
            CHECK(!same_route(&got, &step_one, T), "steps 1 and 2 drew the same noise");
    }
    moevk_router_destroy(router);
}

static moevk_result make_layer(moevk_layer **out, void **weights, int count) {
    moevk_router_info router = small_router(MOEVK_CAPACITY_DROPLESS);
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router;
    info.intermediate_size = F;
    info.activation = MOEVK_ACTIVATION_SWIGLU;
    info.weight_type = MOEVK_DTYPE_BF16;
    info.shared_intermediate_size = F;
    info.shared_gate = 1;
    moevk_result r = moevk_layer_create(test_context(), &info, out);
    const moevk_layer_weight which[] = {MOEVK_WEIGHT_ROUTER,      MOEVK_WEIGHT_GATE,
                                        MOEVK_WEIGHT_UP,          MOEVK_WEIGHT_DOWN,
                                        MOEVK_WEIGHT_SHARED_GATE, MOEVK_WEIGHT_SHARED_UP,
                                        MOEVK_WEIGHT_SHARED_DOWN, MOEVK_WEIGHT_SHARED_EXPERT_GATE};
    const uint32_t experts[] = {1, E, E, E, 1, 1, 1, 1};
    for (int i = 0; i < count && r == MOEVK_SUCCESS; ++i)
        r = moevk_layer_set_weights(*out, which[i], 0, experts[i], moevk_host_tensor(weights[i]));
    return r;
}

/* The decode case: a layer's forward of one token at a time, resubmitted from the second on,
 * the same bits as a forward that records. */
static void test_layer_decode_resubmits(void) {
    const moevk_dtype types[] = {MOEVK_DTYPE_F32,  MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16,
                                 MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16, MOEVK_DTYPE_BF16,
                                 MOEVK_DTYPE_BF16, MOEVK_DTYPE_F32};
    const uint64_t counts[] = {E * D, E * F * D, E * F * D, E * D * F, F * D, F * D, D * F, D};
    void *weights[8] = {NULL};
    int ready = 1;
    for (int i = 0; i < 8; ++i)
        ready &= (weights[i] = random_weights(counts[i], types[i], 0.3f)) != NULL;
    moevk_layer *layer = NULL, *recording = NULL;
    moevk_result r = ready ? make_layer(&layer, weights, 8) : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS) r = make_layer(&recording, weights, 8);
    float hidden[2 * D], out[2 * D], out_want[2 * D];
    for (int i = 0; r == MOEVK_SUCCESS && i < 5; ++i) {
        fill_normal(hidden, 2 * D);
        moevk_route_input input;
        moevk_route_input_init(&input);
        input.num_tokens = 1;
        input.hidden = moevk_host_tensor(hidden);
        moevk_route_stats stats;
        moevk_route_stats_init(&stats);
        moevk_route_output route;
        moevk_route_output_init(&route);
        route.stats = &stats;
        moevk_layer_output output;
        moevk_layer_output_init(&output);
        output.output = moevk_host_tensor(out);
        output.route = &route;
        CHECK_OK(moevk_layer_forward(layer, &input, &output));
        CHECK(stats.resubmitted == (i > 0), "token %d: resubmitted %d", i, stats.resubmitted);
        /* The recording layer: two tokens first, then this one. */
        input.num_tokens = 2;
        output.output = moevk_host_tensor(out_want);
        CHECK_OK(moevk_layer_forward(recording, &input, &output));
        input.num_tokens = 1;
        CHECK_OK(moevk_layer_forward(recording, &input, &output));
        CHECK(!stats.resubmitted, "the recording layer resubmitted");
        CHECK(memcmp(out, out_want, D * 4) == 0, "token %d: the output differs", i);
    }
    CHECK_OK(r);
    moevk_layer_destroy(recording);
    moevk_layer_destroy(layer);
    for (int i = 0; i < 8; ++i) free(weights[i]);
}

/* The front end's dispatches and barriers are a property of the recording: set by the shape's
 * bucketing blocks and E alone, and a resubmitted route reports the recording it submitted.
 * The fused front end (blocks^2 E <= FUSED_FRONT_END_WORK): scores + top-k with bucketing's
 * per-block counts, then the assignment, which scans the counts itself; past it scores + top-k,
 * then bucketing's count, scan and assignment. A barrier after the fills and after each.
 * Expert choice: scores + top-k, then its selection's 13 phases (the scratch cleared, four
 * rounds of a histogram and a select, the blocks' counts, their scan, the taking, the rows),
 * at any T. */
static void test_front_end_counts_are_the_recordings(void) {
    const struct {
        uint32_t tokens, experts, k;
        moevk_capacity_mode capacity;
        uint32_t dispatches, barriers;
        moevk_routing_mode mode;
    } shapes[] = {
        {1, 64, 2, MOEVK_CAPACITY_FIXED, 2, 3, MOEVK_MODE_TOKEN},
        {1024, 256, 8, MOEVK_CAPACITY_FIXED, 2, 3, MOEVK_MODE_TOKEN},   /* 32 blocks */
        {2048, 256, 8, MOEVK_CAPACITY_FIXED, 4, 5, MOEVK_MODE_TOKEN},   /* 64 blocks */
        {4099, 256, 8, MOEVK_CAPACITY_FIXED, 4, 5, MOEVK_MODE_TOKEN},   /* 129 blocks */
        {4099, 64, 2, MOEVK_CAPACITY_DROPLESS, 2, 3, MOEVK_MODE_TOKEN}, /* 33 blocks */
        {8192, 64, 2, MOEVK_CAPACITY_FIXED, 2, 3, MOEVK_MODE_TOKEN},    /* 64 blocks */
        {16384, 64, 2, MOEVK_CAPACITY_FIXED, 4, 5, MOEVK_MODE_TOKEN},   /* 128 blocks */
        {16384, 1, 1, MOEVK_CAPACITY_FIXED, 2, 3, MOEVK_MODE_TOKEN},    /* 64 blocks of E = 1 */
        {1, 8, 1, MOEVK_CAPACITY_FIXED, 14, 15, MOEVK_MODE_EXPERT_CHOICE},
        {70000, 2, 1, MOEVK_CAPACITY_FIXED, 14, 15, MOEVK_MODE_EXPERT_CHOICE}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
        moevk_router_info info;
        moevk_router_info_init(&info);
        info.num_experts = shapes[i].experts;
        info.top_k = shapes[i].k;
        info.max_tokens = shapes[i].tokens;
        info.capacity_mode = shapes[i].capacity;
        info.mode = shapes[i].mode;
        moevk_router *router = NULL;
        CHECK_OK(moevk_router_create(test_context(), &info, &router));
        moevk_recording_counts counts[2];
        float *logits = malloc((size_t)shapes[i].tokens * shapes[i].experts * 4);
        moevk_result r = logits ? MOEVK_SUCCESS : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
        if (r == MOEVK_SUCCESS) {
            moevk_recording_counts_init(&counts[0]);
            r = moevk_router_recording_counts(router, &counts[0]);
            CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT, "counts before any route: %s",
                  moevk_result_string(r));
            r = MOEVK_SUCCESS;
        }
        for (int call = 0; r == MOEVK_SUCCESS && call < 2; ++call) {
            fill_normal(logits, (size_t)shapes[i].tokens * shapes[i].experts);
            moevk_route_input input;
            moevk_route_input_init(&input);
            input.num_tokens = shapes[i].tokens;
            input.logits = moevk_host_tensor(logits);
            moevk_route_output output;
            moevk_route_output_init(&output);
            r = moevk_route(router, &input, &output);
            moevk_recording_counts_init(&counts[call]);
            if (r == MOEVK_SUCCESS) r = moevk_router_recording_counts(router, &counts[call]);
        }
        free(logits);
        moevk_router_destroy(router);
        CHECK_OK(r);
        if (i == 0)
            printf("  (front end: %u dispatches, %u barriers; the route: %u dispatches, %u "
                   "barriers)\n",
                   counts[0].front_end_dispatches, counts[0].front_end_barriers,
                   counts[0].route_dispatches, counts[0].route_barriers);
        CHECK(!memcmp(&counts[0], &counts[1], sizeof counts[0]),
              "shape %zu: the resubmitted route's counts differ", i);
        CHECK(counts[0].front_end_dispatches == shapes[i].dispatches &&
                  counts[0].front_end_barriers == shapes[i].barriers,
              "shape %zu: the front end recorded %u dispatches and %u barriers", i,
              counts[0].front_end_dispatches, counts[0].front_end_barriers);
        CHECK(counts[0].route_dispatches > counts[0].front_end_dispatches,
              "shape %zu: the route's dispatches", i);
    }
}

int main(int argc, char **argv) {
    static const test_case tests[] = {
        TEST(steady_route_resubmits), TEST(buffers_change_the_key),
        TEST(combine_between_routes), TEST(noise_steps_resubmit),
        TEST(layer_decode_resubmits), TEST(front_end_counts_are_the_recordings),
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
