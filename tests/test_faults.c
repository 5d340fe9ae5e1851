/* Faults along context creation, router creation and a route: the Nth host allocation (through
 * the allocation callbacks, which the driver uses too) or the Nth device memory allocation fails,
 * for every N until none is left to fail, and a device loss; each call returns an error, nothing
 * leaks, and what exists stays usable or destroyable. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aligned_blocks.h"
#include "harness.h"
#include "moevk_testing.h"

typedef struct failing_allocator {
    long calls, fail_at, live, injected;
} failing_allocator;

static void *VKAPI_CALL fail_alloc(void *user, size_t size, size_t alignment,
                                   VkSystemAllocationScope scope) {
    (void)scope;
    failing_allocator *a = user;
    if (++a->calls == a->fail_at) {
        a->injected++;
        return NULL;
    }
    void *p = aligned_block(size, alignment);
    if (p) a->live++;
    return p;
}

static void VKAPI_CALL fail_free(void *user, void *memory) {
    failing_allocator *a = user;
    if (!memory) return;
    aligned_block_free(memory);
    a->live--;
}

static void *VKAPI_CALL fail_realloc(void *user, void *original, size_t size, size_t alignment,
                                     VkSystemAllocationScope scope) {
    if (!original) return fail_alloc(user, size, alignment, scope);
    if (size == 0) {
        fail_free(user, original);
        return NULL;
    }
    void *p = fail_alloc(user, size, alignment, scope);
    if (!p) return NULL; /* the original stays valid, as realloc promises */
    size_t old_size = aligned_block_size(original);
    memcpy(p, original, old_size < size ? old_size : size);
    fail_free(user, original);
    return p;
}

static moevk_router_info info_for_faults(void) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = 8;
    info.top_k = 2;
    info.max_tokens = 32;
    info.hidden_size = 4;
    return info;
}

/* A layer on the same router: weights set, one forward; then a trainable one through a backward
 * and an optimizer step. */
static moevk_result layer_lifecycle(moevk_context *context) {
    moevk_router_info router_info = info_for_faults();
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router_info;
    info.intermediate_size = 5;
    info.shared_intermediate_size = 3;
    info.shared_gate = 1;
    moevk_layer *layer = NULL;
    moevk_result r = moevk_layer_create(context, &info, &layer);
    static float up[8 * 5 * 4], hidden[32 * 4], out[32 * 4];
    for (int i = 0; i < 8 * 5 * 4; ++i) up[i] = (float)(i % 5) - 2.0f;
    for (int i = 0; i < 32 * 4; ++i) hidden[i] = (float)(i % 9);
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_set_weights(layer, MOEVK_WEIGHT_UP, 0, 8, moevk_host_tensor(up));
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 32;
    input.hidden = moevk_host_tensor(hidden);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    if (r == MOEVK_SUCCESS) r = moevk_layer_forward(layer, &input, &output);
    moevk_layer_destroy(layer);
    /* A trainable one: its forward, backward and an optimizer step. */
    info.trainable = 1;
    layer = NULL;
    if (r == MOEVK_SUCCESS) r = moevk_layer_create(context, &info, &layer);
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_set_weights(layer, MOEVK_WEIGHT_UP, 0, 8, moevk_host_tensor(up));
    if (r == MOEVK_SUCCESS) r = moevk_layer_forward(layer, &input, &output);
    moevk_layer_backward_info backward;
    moevk_layer_backward_info_init(&backward);
    backward.grad_output = moevk_host_tensor(hidden);
    backward.grad_hidden = moevk_host_tensor(out);
    if (r == MOEVK_SUCCESS) r = moevk_layer_backward(layer, &backward);
    moevk_optimizer_info step;
    moevk_optimizer_info_init(&step);
    step.kind = MOEVK_OPTIMIZER_ADAMW;
    step.learning_rate = 0.01f;
    step.beta1 = 0.9f;
    step.beta2 = 0.999f;
    step.epsilon = 1e-8f;
    step.max_grad_norm = 1.0f;
    step.step = 1;
    if (r == MOEVK_SUCCESS) r = moevk_layer_optimizer_step(layer, &step, NULL);
    moevk_layer_destroy(layer);
    return r;
}

/* Context, router, route, combine (with_layer: context and a layer's lifecycle) with the given
 * hooks and allocator; everything destroyed. */
static moevk_result lifecycle(const VkAllocationCallbacks *allocator, const moevk_test_hooks *hooks,
                              int with_layer) {
    moevk_context_info info = {.allocator = allocator, .test_hooks = hooks};
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_result r = moevk_context_create(&info, &context);
    if (with_layer) {
        if (r == MOEVK_SUCCESS) r = layer_lifecycle(context);
        moevk_context_destroy(context);
        return r;
    }
    moevk_router_info router_info = info_for_faults();
    if (r == MOEVK_SUCCESS) r = moevk_router_create(context, &router_info, &router);
    float logits[32 * 8], hidden[32 * 4], combined[32 * 4];
    static float expert_out[8 * 32 * 4];
    for (int i = 0; i < 32 * 8; ++i) logits[i] = (float)(i % 7);
    for (int i = 0; i < 32 * 4; ++i) hidden[i] = (float)i;
    int32_t ids[64];
    moevk_route_input input = {
        .num_tokens = 32, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(hidden)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids)};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined));
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return r;
}

/* moevk's own host allocations (the fail_host_allocation hook), every one of a whole run. */
static void host_allocation_faults(int with_layer) {
    failing_allocator a = {0};
    VkAllocationCallbacks callbacks = {.pUserData = &a,
                                       .pfnAllocation = fail_alloc,
                                       .pfnReallocation = fail_realloc,
                                       .pfnFree = fail_free};
    moevk_context_info probe = {0};
    moevk_context *context = NULL;
    CHECK_OK(moevk_context_create(&probe, &context));
    moevk_router_info router_info = info_for_faults();
    moevk_router *router = NULL;
    moevk_result r =
        with_layer ? layer_lifecycle(context) : moevk_router_create(context, &router_info, &router);
    uint64_t total = moevk_context_host_allocations(context); /* the route adds none */
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    CHECK(r == MOEVK_SUCCESS && total >= 3, "a clean run: %s, %llu allocations",
          moevk_result_string(r), (unsigned long long)total);
    for (uint32_t n = 1; n <= total; ++n) {
        moevk_test_hooks hooks = {.fail_host_allocation = n};
        r = lifecycle(&callbacks, &hooks, with_layer);
        CHECK(r == MOEVK_ERROR_OUT_OF_HOST_MEMORY, "failing allocation %u of %llu gave %s", n,
              (unsigned long long)total, moevk_result_string(r));
        CHECK(a.live == 0, "failing allocation %u: %ld allocations left live", n, a.live);
    }
    printf("  %llu host allocation faults injected, each MOEVK_ERROR_OUT_OF_HOST_MEMORY, none "
           "leaked\n",
           (unsigned long long)total);
}

static void device_allocation_faults(int with_layer) {
    moevk_result r = MOEVK_ERROR_OUT_OF_DEVICE_MEMORY;
    uint32_t n = 1;
    for (; n < 1000 && r != MOEVK_SUCCESS; ++n) {
        moevk_test_hooks hooks = {.fail_device_allocation = n};
        r = lifecycle(NULL, &hooks, with_layer);
        CHECK(r == MOEVK_SUCCESS || r == MOEVK_ERROR_OUT_OF_DEVICE_MEMORY,
              "failing device allocation %u gave %s", n, moevk_result_string(r));
    }
    CHECK(r == MOEVK_SUCCESS && n > 2, "no device allocation was failed (%u)", n);
    printf("  %u device allocation faults injected\n", n - 2);
}

static void test_every_host_allocation_failure_is_an_error_and_leaks_nothing(void) {
    host_allocation_faults(0);
}
static void test_every_device_allocation_failure_is_an_error(void) { device_allocation_faults(0); }
/* The layer's too: its weight buffers, the zero fill, the weights' upload, its forward. */
static void test_every_layer_host_allocation_failure_is_an_error(void) {
    host_allocation_faults(1);
}
static void test_every_layer_device_allocation_failure_is_an_error(void) {
    device_allocation_faults(1);
}

/* A router that fails for want of device memory leaves its context as it was. */
static void test_context_stays_usable_after_a_failed_router(void) {
    moevk_test_hooks hooks = {.fail_device_allocation = 3};
    moevk_context_info info = {.test_hooks = &hooks};
    moevk_context *context = NULL;
    CHECK_OK(moevk_context_create(&info, &context));
    moevk_router_info router_info = info_for_faults();
    moevk_router *failed = NULL, *router = NULL;
    moevk_result first = moevk_router_create(context, &router_info, &failed);
    const char *message = moevk_context_last_error(context);
    int names_it = strstr(message, "VkResult -2") != NULL || strstr(message, "memory") != NULL;
    moevk_result second = moevk_router_create(context, &router_info, &router);
    float logits[32 * 8] = {0};
    moevk_route_input input = {.num_tokens = 32, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {0};
    moevk_result routed = second == MOEVK_SUCCESS ? moevk_route(router, &input, &output) : second;
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    CHECK(first == MOEVK_ERROR_OUT_OF_DEVICE_MEMORY && failed == NULL, "first: %s",
          moevk_result_string(first));
    CHECK(names_it, "the message does not say what ran out");
    CHECK(second == MOEVK_SUCCESS && routed == MOEVK_SUCCESS, "then: %s, %s",
          moevk_result_string(second), moevk_result_string(routed));
}

static void test_lost_device_is_reported_from_then_on(void) {
    moevk_test_hooks hooks = {.lose_device_at_submit = 2};
    moevk_context_info info = {.test_hooks = &hooks};
    moevk_context *context = NULL;
    CHECK_OK(moevk_context_create(&info, &context));
    moevk_router_info router_info = info_for_faults();
    moevk_router *router = NULL, *late = NULL;
    moevk_buffer *buffer = NULL;
    moevk_result created = moevk_router_create(context, &router_info, &router);
    float logits[32 * 8] = {0};
    moevk_route_input input = {.num_tokens = 32, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {0};
    moevk_result first = created == MOEVK_SUCCESS ? moevk_route(router, &input, &output) : created;
    moevk_result second = moevk_route(router, &input, &output);
    moevk_result third = moevk_route(router, &input, &output);
    moevk_result another = moevk_router_create(context, &router_info, &late);
    moevk_result buffer_r = moevk_buffer_create(context, 64, &buffer);
    moevk_timings timings = {0};
    moevk_result timings_r = moevk_router_timings(router, &timings);
    moevk_router_destroy(router);
    moevk_router_destroy(late);
    moevk_buffer_destroy(buffer);
    moevk_context_destroy(context);
    CHECK(first == MOEVK_SUCCESS, "the first route: %s", moevk_result_string(first));
    CHECK(second == MOEVK_ERROR_DEVICE_LOST && third == MOEVK_ERROR_DEVICE_LOST &&
              another == MOEVK_ERROR_DEVICE_LOST && buffer_r == MOEVK_ERROR_DEVICE_LOST &&
              timings_r == MOEVK_ERROR_DEVICE_LOST,
          "after the loss: %s, %s, %s, %s, %s", moevk_result_string(second),
          moevk_result_string(third), moevk_result_string(another), moevk_result_string(buffer_r),
          moevk_result_string(timings_r));
    CHECK(late == NULL && buffer == NULL, "objects handed out after the loss");
}

static const test_case TESTS[] = {
    TEST(every_host_allocation_failure_is_an_error_and_leaks_nothing),
    TEST(every_device_allocation_failure_is_an_error),
    TEST(every_layer_host_allocation_failure_is_an_error),
    TEST(every_layer_device_allocation_failure_is_an_error),
    TEST(context_stays_usable_after_a_failed_router),
    TEST(lost_device_is_reported_from_then_on),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
