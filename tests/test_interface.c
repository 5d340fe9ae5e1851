/* The public interface's two contracts: structs that grow (struct_size: older and newer
 * layouts, defaults past a short struct, unknown fields refused unless zero, outputs filled only
 * to the caller's size) and tensors (every kind a call takes gives the same bits, from any
 * offset; the kinds it does not take are refused by name). And the bounds query, held to what
 * router creation accepts. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "route_check.h"

#define T 96u
#define E 8u
#define K 2u
#define D 6u

static moevk_router_info small_router(void) {
    return route_case_info(MOEVK_MODE_TOKEN, E, K, T, D);
}

static int last_error_names(const char *word) {
    return strstr(moevk_context_last_error(test_context()), word) != NULL;
}

/* A router info as a newer header would lay it out: this one's fields, then one more. */
typedef struct newer_router_info {
    moevk_router_info known;
    uint64_t field_of_a_later_version;
} newer_router_info;

static void test_unknown_fields_are_taken_when_zero_and_refused_otherwise(void) {
    newer_router_info newer;
    memset(&newer, 0, sizeof newer);
    newer.known = small_router();
    newer.known.struct_size = sizeof newer;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &newer.known, &router));
    moevk_router_destroy(router);
    newer.field_of_a_later_version = 1;
    moevk_result r = moevk_router_create(test_context(), &newer.known, &router);
    CHECK(r == MOEVK_ERROR_UNSUPPORTED && router == NULL,
          "a non-zero unknown field -> %s, not UNSUPPORTED", moevk_result_string(r));
    CHECK(last_error_names("moevk_router_info"), "the error does not name the struct: %s",
          moevk_context_last_error(test_context()));
    moevk_router_info tiny = small_router();
    tiny.struct_size = 3;
    r = moevk_router_create(test_context(), &tiny, &router);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT && router == NULL,
          "struct_size 3 -> %s, not INVALID_ARGUMENT", moevk_result_string(r));
}

static void test_struct_size_zero_is_the_first_layout(void) {
    moevk_router_info info = small_router();
    info.struct_size = 0;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[T * E];
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = rng_normal();
    int32_t ids[T * K], ids_zeroed[T * K];
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.logits = moevk_host_tensor(logits);
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.expert_ids = moevk_host_tensor(ids);
    moevk_result r = moevk_route(router, &input, &output);
    /* `= {0}`-style structs: struct_size 0. */
    moevk_route_input zeroed_input = {0};
    zeroed_input.num_tokens = T;
    zeroed_input.logits = moevk_host_tensor(logits);
    moevk_route_output zeroed_output = {0};
    zeroed_output.expert_ids = moevk_host_tensor(ids_zeroed);
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &zeroed_input, &zeroed_output);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s (%s)", moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(!memcmp(ids, ids_zeroed, sizeof ids), "struct_size 0 routed differently");
}

/* Stats as a newer header would lay them out: this one's fields, then more. */
typedef struct newer_route_stats {
    moevk_route_stats known;
    unsigned char later_fields[24];
} newer_route_stats;

static void test_outputs_are_filled_only_to_the_callers_size(void) {
    moevk_router_info info = small_router();
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[T * E];
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = rng_normal();
    /* A newer program's stats: what this library knows is filled, the rest stays. */
    moevk_route_stats full;
    moevk_route_stats_init(&full);
    newer_route_stats newer;
    memset(&newer, 0xAB, sizeof newer);
    newer.known.struct_size = sizeof newer;
    moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.stats = &full};
    moevk_result r = moevk_route(router, &input, &output);
    output.stats = &newer.known;
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    /* The router info's defaults, to a short size only. */
    unsigned char defaults[sizeof(moevk_router_info)];
    memset(defaults, 0xCD, sizeof defaults);
    size_t shorter = offsetof(moevk_router_info, scale);
    moevk_router_info_defaults((moevk_router_info *)defaults, shorter);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    CHECK(newer.known.struct_size == sizeof newer, "struct_size was overwritten");
    full.struct_size = newer.known.struct_size;
    /* The second route of the same shape submitted the first's commands again. */
    CHECK(!full.resubmitted && newer.known.resubmitted == 1, "resubmitted %d, then %d",
          full.resubmitted, newer.known.resubmitted);
    full.resubmitted = 1;
    CHECK(!memcmp(&full, &newer.known, sizeof full), "the fields this library knows differ");
    for (size_t i = 0; i < sizeof newer.later_fields; ++i)
        CHECK(newer.later_fields[i] == 0xAB, "byte %zu past the known fields was written", i);
    moevk_router_info filled;
    memcpy(&filled, defaults, sizeof filled);
    CHECK(filled.struct_size == shorter && filled.temperature == 1.0f,
          "moevk_router_info_defaults did not fill its size");
    for (size_t i = shorter; i < sizeof defaults; ++i)
        CHECK(defaults[i] == 0xCD, "moevk_router_info_defaults wrote byte %zu past its size", i);
}

/* The same route and combine with every input and output on the host, then in buffers at odd
 * offsets: the same bits. */
static void test_every_tensor_kind_gives_the_same_bits(void) {
    moevk_router_info info = small_router();
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 0.5f;
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_context *ctx = test_context();
    uint64_t rows = moevk_router_max_dispatched_rows(router);
    float logits[T * E], hidden[T * D], std[E], *expert_out = malloc(rows * D * 4);
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = rng_normal();
    for (uint32_t i = 0; i < T * D; ++i) hidden[i] = rng_normal();
    for (uint32_t e = 0; e < E; ++e) std[e] = rng_uniform(0.1f, 1.0f);
    for (uint64_t i = 0; i < rows * D; ++i) expert_out[i] = rng_normal();
    struct results {
        int32_t ids[T * K], slots[T * K];
        float weights[T * K];
        uint32_t counts[E], counts_before[E], offsets[E + 1];
        float combined[T * D];
    } host, device;
    float *dispatched = calloc(rows * D, 4), *dispatched_device = calloc(rows * D, 4);
    memset(&host, 0, sizeof host);
    memset(&device, 0xEE, sizeof device);
    moevk_route_input in = {.num_tokens = T,
                            .logits = moevk_host_tensor(logits),
                            .hidden = moevk_host_tensor(hidden),
                            .noise_std = moevk_host_tensor(std)};
    moevk_route_output out = {.expert_ids = moevk_host_tensor(host.ids),
                              .weights = moevk_host_tensor(host.weights),
                              .slots = moevk_host_tensor(host.slots),
                              .counts = moevk_host_tensor(host.counts),
                              .counts_before = moevk_host_tensor(host.counts_before),
                              .offsets = moevk_host_tensor(host.offsets),
                              .dispatched = moevk_host_tensor(dispatched)};
    moevk_result r = moevk_route(router, &in, &out);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(host.combined));
    /* One buffer holds every input and output, each at its own offset (not 16-aligned). */
    const uint64_t at_logits = 4, at_hidden = at_logits + sizeof logits + 8,
                   at_std = at_hidden + sizeof hidden + 4, at_out = at_std + sizeof std + 12,
                   at_expert_out = at_out + sizeof device + 4,
                   at_dispatched = at_expert_out + rows * D * 4 + 8,
                   total = at_dispatched + rows * D * 4;
    moevk_buffer *buffer = NULL;
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(ctx, total, &buffer);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, at_logits, logits, sizeof logits);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, at_hidden, hidden, sizeof hidden);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, at_std, std, sizeof std);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, at_out, &device, sizeof device);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, at_expert_out, expert_out, rows * D * 4);
    moevk_route_input device_in = {.num_tokens = T,
                                   .logits = moevk_buffer_tensor(buffer, at_logits),
                                   .hidden = moevk_buffer_tensor(buffer, at_hidden),
                                   .noise_std = moevk_buffer_tensor(buffer, at_std)};
#define OUT_AT(field) moevk_buffer_tensor(buffer, at_out + offsetof(struct results, field))
    moevk_route_output device_out = {.expert_ids = OUT_AT(ids),
                                     .weights = OUT_AT(weights),
                                     .slots = OUT_AT(slots),
                                     .counts = OUT_AT(counts),
                                     .counts_before = OUT_AT(counts_before),
                                     .offsets = OUT_AT(offsets),
                                     .dispatched = moevk_buffer_tensor(buffer, at_dispatched)};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &device_in, &device_out);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_buffer_tensor(buffer, at_expert_out), OUT_AT(combined));
#undef OUT_AT
    if (r == MOEVK_SUCCESS) r = moevk_buffer_read(buffer, at_out, &device, sizeof device);
    if (r == MOEVK_SUCCESS)
        r = moevk_buffer_read(buffer, at_dispatched, dispatched_device, rows * D * 4);
    /* A kind the call does not take is refused by name. */
    moevk_route_input vulkan_in = in;
    vulkan_in.logits = moevk_vulkan_tensor((VkBuffer)(uintptr_t)0x1000, 0, 0);
    moevk_result vulkan = router ? moevk_route(router, &vulkan_in, &out) : MOEVK_SUCCESS;
    int named = last_error_names("logits");
    moevk_route_input short_in = device_in;
    short_in.logits = moevk_buffer_tensor(buffer, total - 8); /* past the buffer's end */
    moevk_result short_buffer = router ? moevk_route(router, &short_in, &out) : MOEVK_SUCCESS;
    moevk_buffer_destroy(buffer);
    moevk_router_destroy(router);
    int same_dispatched = dispatched && !memcmp(dispatched, dispatched_device, rows * D * 4);
    free(expert_out), free(dispatched), free(dispatched_device);
    CHECK(r == MOEVK_SUCCESS, "-> %s (%s)", moevk_result_string(r), moevk_context_last_error(ctx));
    CHECK(!memcmp(host.ids, device.ids, sizeof host.ids), "expert ids differ");
    CHECK(!memcmp(host.weights, device.weights, sizeof host.weights), "weights differ");
    CHECK(!memcmp(host.slots, device.slots, sizeof host.slots), "slots differ");
    CHECK(!memcmp(host.counts, device.counts, sizeof host.counts), "counts differ");
    CHECK(!memcmp(host.counts_before, device.counts_before, sizeof host.counts_before),
          "counts before drops differ");
    CHECK(!memcmp(host.offsets, device.offsets, sizeof host.offsets), "offsets differ");
    CHECK(!memcmp(host.combined, device.combined, sizeof host.combined), "combined differs");
    CHECK(same_dispatched, "dispatched rows differ");
    CHECK(vulkan == MOEVK_ERROR_INVALID_ARGUMENT && named,
          "a VULKAN logits tensor in moevk_route -> %s", moevk_result_string(vulkan));
    CHECK(short_buffer == MOEVK_ERROR_INVALID_ARGUMENT, "a buffer past its end -> %s",
          moevk_result_string(short_buffer));
}

static void test_recording_takes_only_vulkan_tensors(void) {
    moevk_router_info info = small_router();
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[T * E] = {0};
    int32_t ids[T * K];
    moevk_route_input in = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output out = {.expert_ids = moevk_host_tensor(ids)};
    CHECK_OK(moevk_route(router, &in, &out)); /* a route to combine */
    /* Refused before the command buffer is touched: any non-null handle does. */
    VkCommandBuffer not_used = (VkCommandBuffer)(uintptr_t)0x1000;
    moevk_result host_logits = moevk_route_record(router, not_used, &in, NULL);
    int named = last_error_names("logits");
    in.logits = moevk_vulkan_tensor((VkBuffer)(uintptr_t)0x1000, 0, 0);
    moevk_result host_ids = moevk_route_record(router, not_used, &in, &out);
    moevk_result combine_host =
        moevk_combine_record(router, not_used, moevk_host_tensor(logits), moevk_host_tensor(ids));
    moevk_router_destroy(router);
    CHECK(host_logits == MOEVK_ERROR_INVALID_ARGUMENT && named,
          "host logits in moevk_route_record -> %s", moevk_result_string(host_logits));
    CHECK(host_ids == MOEVK_ERROR_INVALID_ARGUMENT, "host ids in moevk_route_record -> %s",
          moevk_result_string(host_ids));
    CHECK(combine_host == MOEVK_ERROR_INVALID_ARGUMENT,
          "host tensors in moevk_combine_record -> %s", moevk_result_string(combine_host));
}

static int creates(moevk_router_info info) {
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_router_destroy(router);
    return r == MOEVK_SUCCESS;
}

static moevk_result create_result(moevk_router_info info) {
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_router_destroy(router);
    return r;
}

/* Each bound is the edge of what creation takes: one past it is refused for its size (before
 * anything is allocated), and within it the options pass. */
static void test_bounds_are_the_edge_of_what_creation_takes(void) {
    moevk_router_info info = small_router();
    info.max_binding_bytes = 1u << 16; /* small enough that the large buffers need addresses */
    moevk_router_bounds bounds;
    moevk_router_bounds_init(&bounds);
    CHECK_OK(moevk_router_bounds_query(test_context(), &info, &bounds));
    CHECK(bounds.max_experts == MOEVK_MAX_EXPERTS, "max_experts %u", bounds.max_experts);
    CHECK(bounds.max_top_k == E, "max_top_k %u with E = %u", bounds.max_top_k, E);
    CHECK(bounds.max_tokens > T && bounds.max_hidden_size > D, "max_tokens %u, max_hidden_size %u",
          bounds.max_tokens, bounds.max_hidden_size);
    moevk_router_info past = info;
    past.max_tokens = bounds.max_tokens + 1;
    moevk_result r = bounds.max_tokens < UINT32_MAX ? create_result(past) : MOEVK_ERROR_TOO_LARGE;
    CHECK(r == MOEVK_ERROR_TOO_LARGE, "max_tokens one past the bound -> %s",
          moevk_result_string(r));
    past = info;
    past.hidden_size = bounds.max_hidden_size + 1;
    r = bounds.max_hidden_size < UINT32_MAX ? create_result(past) : MOEVK_ERROR_TOO_LARGE;
    CHECK(r == MOEVK_ERROR_TOO_LARGE, "hidden_size one past the bound -> %s",
          moevk_result_string(r));
    past = info;
    past.top_k = bounds.max_top_k + 1;
    CHECK(!creates(past), "top_k one past the bound was taken");
    /* Expert choice's selection splits the tokens into blocks, so lavapipe's loop limit no
     * longer bounds its T (it did at about 1.9 million tokens over two experts). */
    moevk_router_info choice = small_router();
    choice.num_experts = 2;
    choice.top_k = 1;
    choice.hidden_size = 0;
    choice.mode = MOEVK_MODE_EXPERT_CHOICE;
    CHECK_OK(moevk_router_bounds_query(test_context(), &choice, &bounds));
    CHECK(bounds.max_tokens > 4000000, "expert choice over 2 experts bounded at %u tokens",
          bounds.max_tokens);
    /* Groups: E in multiples of the groups. */
    moevk_router_info grouped = small_router();
    grouped.num_groups = 4;
    grouped.topk_groups = 2;
    CHECK_OK(moevk_router_bounds_query(test_context(), &grouped, &bounds));
    CHECK(bounds.max_experts == MOEVK_MAX_EXPERTS && bounds.max_top_k == 4,
          "with 4 groups of 2, 2 kept: max_experts %u, max_top_k %u", bounds.max_experts,
          bounds.max_top_k);
}

/* One route's capacity and selections, with a capacity factor of its own (0: the router's). */
static moevk_result route_with_factor(moevk_router *router, const float *logits, int inference,
                                      float factor, moevk_route_stats *stats, int32_t *ids,
                                      int32_t *slots, float *weights) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.logits = moevk_host_tensor(logits);
    input.inference = inference;
    input.capacity_factor = factor;
    moevk_route_stats_init(stats);
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.expert_ids = moevk_host_tensor(ids);
    output.slots = moevk_host_tensor(slots);
    output.weights = moevk_host_tensor(weights);
    output.stats = stats;
    return moevk_route(router, &input, &output);
}

/* moevk 0.3's two fields: the router's eval_capacity_factor for inference routes, and a route's
 * own capacity_factor, which routes as a router made with that factor does. */
static void test_inference_and_per_call_capacity_factors(void) {
    moevk_router_info info = small_router();
    info.capacity_factor = 1.0f;
    info.eval_capacity_factor = 2.0f;
    info.min_capacity = 0;
    moevk_router *router = NULL, *at_factor = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_router_info plain = info;
    plain.capacity_factor = 1.5f;
    plain.eval_capacity_factor = 0.0f;
    moevk_result r = moevk_router_create(test_context(), &plain, &at_factor);
    float logits[T * E];
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = rng_normal();
    int32_t ids[T * K], slots[T * K], ids2[T * K], slots2[T * K];
    float weights[T * K], weights2[T * K];
    moevk_route_stats training, inference, per_call, reference, refused_stats;
    if (r == MOEVK_SUCCESS)
        r = route_with_factor(router, logits, 0, 0.0f, &training, ids, slots, weights);
    if (r == MOEVK_SUCCESS)
        r = route_with_factor(router, logits, 1, 0.0f, &inference, ids, slots, weights);
    if (r == MOEVK_SUCCESS)
        r = route_with_factor(router, logits, 0, 1.5f, &per_call, ids, slots, weights);
    if (r == MOEVK_SUCCESS)
        r = route_with_factor(at_factor, logits, 0, 0.0f, &reference, ids2, slots2, weights2);
    moevk_result too_large =
        router ? route_with_factor(router, logits, 0, 3.0f, &refused_stats, ids2, slots2, weights2)
               : MOEVK_SUCCESS;
    int named = last_error_names("capacity_factor");
    /* The noise counter's rows past 32 bits (the place reserved_0_3 had). */
    moevk_route_input reserved = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    reserved.struct_size = sizeof reserved;
    reserved.noise_row_offset = UINT32_MAX;
    moevk_route_output no_output = {0};
    moevk_result reserved_taken =
        router ? moevk_route(router, &reserved, &no_output) : MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router_destroy(router);
    moevk_router_destroy(at_factor);
    CHECK(r == MOEVK_SUCCESS, "-> %s (%s)", moevk_result_string(r),
          moevk_context_last_error(test_context()));
    /* C = ceil(factor * T * k / E) */
    CHECK(training.capacity == 24 && inference.capacity == 48 && per_call.capacity == 36,
          "capacities %u (training), %u (inference), %u (per call); want 24, 48, 36",
          training.capacity, inference.capacity, per_call.capacity);
    CHECK(reference.capacity == 36, "the router made with factor 1.5 has C = %u",
          reference.capacity);
    CHECK(!memcmp(ids, ids2, sizeof ids) && !memcmp(slots, slots2, sizeof slots) &&
              !memcmp(weights, weights2, sizeof weights),
          "a per-call factor routes differently from a router made with it");
    CHECK(too_large == MOEVK_ERROR_INVALID_ARGUMENT && named,
          "a per-call factor past the router's buffers -> %s", moevk_result_string(too_large));
    CHECK(reserved_taken == MOEVK_ERROR_INVALID_ARGUMENT,
          "a noise_row_offset whose rows pass 32 bits was taken");
    moevk_router_info bad = small_router();
    bad.eval_capacity_factor = -1.0f;
    moevk_router *refused = NULL;
    CHECK(moevk_router_create(test_context(), &bad, &refused) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a negative eval_capacity_factor was taken");
}

/* moevk 0.4's router fields: a 0.3 program's struct (ending before bias_on_scores) takes their
 * defaults whatever follows it in memory, and 0.7's selection_kernel (in the place of 0.4's
 * reserved field, which was zero) must be a moevk_selection_kernel. */
static void test_a_0_3_router_info_takes_the_0_4_defaults(void) {
    moevk_router_info info = small_router();
    info.score = MOEVK_SCORE_SOFTMAX; /* bias_on_scores would refuse softmax if it were read */
    info.bias_on_scores = 1;
    info.selection_kernel = (moevk_selection_kernel)7;
    info.struct_size = (uint32_t)offsetof(moevk_router_info, bias_on_scores);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_router_destroy(router);
    info.struct_size = sizeof info;
    info.bias_on_scores = 0;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT &&
              last_error_names("selection_kernel"),
          "an unknown selection_kernel was taken");
    info.selection_kernel = MOEVK_SELECTION_AUTO;
    info.bias_on_scores = 1;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT &&
              last_error_names("SIGMOID"),
          "bias_on_scores with softmax scores was taken");
}

/* The later 0.7 fields: a struct ending at selection_kernel takes choice_block_tokens' default
 * whatever follows; a full one's must be 0 to 262144, and reserved_0_7 zero. */
static void test_choice_block_tokens_is_checked(void) {
    moevk_router_info info = small_router();
    info.mode = MOEVK_MODE_EXPERT_CHOICE;
    moevk_device_info device;
    moevk_device_info_init(&device);
    moevk_context_device_info(test_context(), &device);
    /* Where the device offers it, the kernel AUTO would not pick on a CPU or for few experts. */
    info.selection_kernel =
        device.selection_lanes ? MOEVK_SELECTION_SUBGROUP : MOEVK_SELECTION_PER_TOKEN;
    info.choice_block_tokens = 262145;
    info.reserved_0_7 = 5;
    info.struct_size = (uint32_t)offsetof(moevk_router_info, choice_block_tokens);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    CHECK(router && moevk_router_selection_lanes(router) == device.selection_lanes,
          "a struct ending at selection_kernel lost it");
    moevk_router_destroy(router);
    router = NULL;
    info.struct_size = sizeof info;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT &&
              last_error_names("choice_block_tokens"),
          "choice_block_tokens 262145 was taken");
    info.choice_block_tokens = 262144;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT &&
              last_error_names("reserved_0_7"),
          "a non-zero reserved_0_7 was taken");
    info.reserved_0_7 = 0;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_router_destroy(router);
}

static const test_case TESTS[] = {
    TEST(a_0_3_router_info_takes_the_0_4_defaults),
    TEST(choice_block_tokens_is_checked),
    TEST(inference_and_per_call_capacity_factors),
    TEST(unknown_fields_are_taken_when_zero_and_refused_otherwise),
    TEST(struct_size_zero_is_the_first_layout),
    TEST(outputs_are_filled_only_to_the_callers_size),
    TEST(every_tensor_kind_gives_the_same_bits),
    TEST(recording_takes_only_vulkan_tensors),
    TEST(bounds_are_the_edge_of_what_creation_takes),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
