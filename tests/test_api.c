/* The public API's contract: versions, result names, rejected configurations with a clear
 * message and nothing leaked, routers still usable after a bad call, adopted devices left alone,
 * allocation callbacks used and balanced. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app_vulkan.h"
#include "aligned_blocks.h"
#include "harness.h"
#include "moevk_reference.h"

static moevk_router_info small_info(void) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = 8;
    info.top_k = 2;
    info.max_tokens = 64;
    info.hidden_size = 4;
    return info;
}

static void test_version_matches_header(void) {
    CHECK(moevk_version_number() == MOEVK_VERSION_NUMBER, "version number");
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", MOEVK_VERSION_MAJOR, MOEVK_VERSION_MINOR,
             MOEVK_VERSION_PATCH);
    CHECK(strcmp(moevk_version_string(), expected) == 0, "version string %s",
          moevk_version_string());
}

static void test_every_result_has_a_name(void) {
    moevk_result all[] = {MOEVK_SUCCESS,
                          MOEVK_ERROR_INVALID_ARGUMENT,
                          MOEVK_ERROR_OUT_OF_HOST_MEMORY,
                          MOEVK_ERROR_OUT_OF_DEVICE_MEMORY,
                          MOEVK_ERROR_NO_VULKAN,
                          MOEVK_ERROR_NO_DEVICE,
                          MOEVK_ERROR_UNSUPPORTED,
                          MOEVK_ERROR_TOO_LARGE,
                          MOEVK_ERROR_VULKAN,
                          MOEVK_ERROR_DEVICE_LOST,
                          MOEVK_ERROR_PEER};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) {
        CHECK(all[i] <= 0, "errors follow VkResult's sign");
        CHECK(strstr(moevk_result_string(all[i]), "MOEVK_") != NULL, "name of %d", all[i]);
    }
    CHECK(strstr(moevk_result_string((moevk_result)-999), "unknown") != NULL, "unknown result");
}

static void test_destroying_null_is_a_no_op(void) {
    moevk_router_destroy(NULL);
    moevk_context_destroy(NULL);
}

/* Each bad option: INVALID_ARGUMENT, *out NULL, a message naming the option. */
static void expect_invalid(moevk_router_info info, const char *field) {
    moevk_router *router = (moevk_router *)&info; /* must be reset to NULL */
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT, "%s: got %s", field, moevk_result_string(r));
    CHECK(router == NULL, "%s: *out not cleared", field);
    CHECK(strstr(moevk_context_last_error(test_context()), field) != NULL,
          "message '%s' does not name %s", moevk_context_last_error(test_context()), field);
}

static void test_bad_configurations_are_rejected(void) {
    moevk_router_info info = small_info();
    info.top_k = 9;
    expect_invalid(info, "top_k"); /* k > E */
    info = small_info();
    info.top_k = 0;
    expect_invalid(info, "top_k");
    info = small_info();
    info.num_experts = 0;
    expect_invalid(info, "num_experts");
    info = small_info();
    info.num_experts = MOEVK_MAX_EXPERTS + 1;
    expect_invalid(info, "num_experts");
    info = small_info();
    info.top_k = 17;
    info.num_experts = 32;
    expect_invalid(info, "top_k");
    info = small_info();
    info.temperature = 0.0f;
    expect_invalid(info, "temperature");
    info.temperature = -1.0f;
    expect_invalid(info, "temperature");
    info.temperature = NAN;
    expect_invalid(info, "temperature");
    info = small_info();
    info.capacity_mode = MOEVK_CAPACITY_FIXED;
    info.capacity = -1;
    expect_invalid(info, "capacity");
    info = small_info();
    info.min_capacity = -4;
    expect_invalid(info, "min_capacity");
    info = small_info();
    info.capacity_factor = -0.5f;
    expect_invalid(info, "capacity_factor");
    info = small_info();
    info.scale = INFINITY;
    expect_invalid(info, "scale");
    info = small_info();
    info.logits_type = MOEVK_DTYPE_BF16;
    expect_invalid(info, "logits_type");
    info = small_info();
    info.drop_policy = (moevk_drop_policy)7;
    expect_invalid(info, "drop_policy");
    info = small_info();
    info.score = (moevk_score_func)3;
    expect_invalid(info, "score");
    CHECK(moevk_router_create(test_context(), NULL, NULL) == MOEVK_ERROR_INVALID_ARGUMENT, "NULLs");
}

static void test_buffers_past_device_limits_are_refused(void) {
    moevk_router_info info = small_info();
    info.max_tokens = 1u << 22;
    info.hidden_size = 4096;
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    CHECK(r == MOEVK_ERROR_TOO_LARGE, "got %s", moevk_result_string(r));
    CHECK(router == NULL, "router not NULL");
    const char *message = moevk_context_last_error(test_context());
    CHECK(strstr(message, "hidden states") && strstr(message, "bytes"), "message: %s", message);
}

/* Token counts whose T * k or T * E pass 32 bits are refused at creation, not wrapped around. */
static void test_sizes_past_32_bit_indices_are_refused(void) {
    moevk_router_info info = small_info();
    info.max_tokens = 0xFFFFFFF0u;
    info.top_k = 2;
    info.hidden_size = 0;
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_ERROR_TOO_LARGE, "got %s", moevk_result_string(r));
    CHECK(strstr(moevk_context_last_error(test_context()), "32-bit") != NULL, "message: %s",
          moevk_context_last_error(test_context()));
}

/* The shaders index elements in 32 bits: 16-bit logits of more than 2^32 elements (8 GiB, within
 * the 16 GiB a device address reaches) are refused, not wrapped around. */
static void test_elements_past_32_bit_indices_are_refused(void) {
    moevk_router_info info = small_info();
    info.num_experts = 1024;
    info.top_k = 2;
    info.max_tokens = (1u << 22) + 1; /* T * E = 2^32 + 1024 */
    info.logits_type = MOEVK_DTYPE_F16;
    info.hidden_size = 0;
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_ERROR_TOO_LARGE, "got %s", moevk_result_string(r));
    const char *message = moevk_context_last_error(test_context());
    CHECK(strstr(message, "logits") && strstr(message, "2^32 elements"), "message: %s", message);
}

/* A NaN in one token's hidden state stays in that token's rows and output, nowhere else. */
static void test_nan_hidden_state_stays_in_its_token(void) {
    moevk_router_info info = small_info();
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    uint64_t rows = moevk_router_max_dispatched_rows(router);
    float logits[64 * 8], hidden[64 * 4], combined[64 * 4];
    float *dispatched = calloc(rows * 4, sizeof(float));
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    for (int i = 0; i < 64 * 4; ++i) hidden[i] = rng_normal();
    const int poisoned = 17;
    hidden[poisoned * 4 + 2] = NAN;
    moevk_route_stats stats = {0};
    int32_t ids[128], slots[128];
    uint32_t offsets[9];
    moevk_route_input input = {
        .num_tokens = 64, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(hidden)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .slots = moevk_host_tensor(slots),
                                 .offsets = moevk_host_tensor(offsets),
                                 .dispatched = moevk_host_tensor(dispatched),
                                 .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    /* Identity experts: the dispatched rows come straight back. */
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(dispatched), moevk_host_tensor(combined));
    int rows_ok = 1, out_ok = 1;
    for (uint32_t row = 0; r == MOEVK_SUCCESS && row < stats.dispatched_rows; ++row) {
        int holds_poisoned = 0;
        for (int j = 0; j < 128; ++j)
            if (j / 2 == poisoned && ids[j] >= 0 && offsets[ids[j]] + (uint32_t)slots[j] == row)
                holds_poisoned = 1;
        for (int i = 0; i < 4; ++i)
            if (isnan(dispatched[row * 4 + i]) != (holds_poisoned && i == 2)) rows_ok = 0;
    }
    for (int t = 0; r == MOEVK_SUCCESS && t < 64; ++t)
        for (int i = 0; i < 4; ++i)
            if (isnan(combined[t * 4 + i]) != (t == poisoned && i == 2)) out_ok = 0;
    free(dispatched);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "%s", moevk_result_string(r));
    CHECK(stats.nonfinite_rows == 0, "hidden states do not make a row non-finite");
    CHECK(rows_ok, "the NaN reached another row, or left its own");
    CHECK(out_ok, "the NaN reached another token's output, or left its own");
}

/* Found by fuzzing: a capacity factor near FLT_MAX once overflowed the capacity's conversion. */
static void test_huge_capacity_factor_is_refused_not_overflowed(void) {
    moevk_router_info info = small_info();
    info.capacity_factor = 3e38f;
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_ERROR_TOO_LARGE, "got %s", moevk_result_string(r));
}

static void test_bad_route_calls_leave_the_router_usable(void) {
    moevk_router_info info = small_info();
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[64 * 8], hidden[64 * 4], out[64 * 4];
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    for (int i = 0; i < 64 * 4; ++i) hidden[i] = rng_normal();
    int32_t ids[128];
    uint32_t offsets[9];
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids)};
    moevk_route_input too_many = {.num_tokens = 65,
                                  .logits = moevk_host_tensor(logits),
                                  .bias = moevk_host_tensor(NULL),
                                  .hidden = moevk_host_tensor(NULL)};
    moevk_route_input no_logits = {.num_tokens = 10,
                                   .logits = moevk_host_tensor(NULL),
                                   .bias = moevk_host_tensor(NULL),
                                   .hidden = moevk_host_tensor(NULL)};
    moevk_route_input good = {.num_tokens = 64,
                              .logits = moevk_host_tensor(logits),
                              .bias = moevk_host_tensor(NULL),
                              .hidden = moevk_host_tensor(hidden)};
    moevk_route_output bad_offsets = {.offsets = moevk_host_tensor(offsets)};
    moevk_result results[] = {
        moevk_combine(router, moevk_host_tensor(hidden), moevk_host_tensor(out)), /* no route yet */
        moevk_route(router, &too_many, &output),
        moevk_route(router, &no_logits, &output),
        moevk_route(router, NULL, &output),
        moevk_route(router, &good, &bad_offsets),
    };
    for (size_t i = 0; i < sizeof results / sizeof results[0]; ++i)
        CHECK(results[i] == MOEVK_ERROR_INVALID_ARGUMENT, "bad call %zu: %s", i,
              moevk_result_string(results[i]));
    CHECK(moevk_route(NULL, &good, &output) == MOEVK_ERROR_INVALID_ARGUMENT, "NULL router");
    CHECK_OK(moevk_route(router, &good, &output));
    for (int t = 0; t < 64; ++t) CHECK(ids[2 * t] >= 0 && ids[2 * t] < 8, "ids after recovery");
    moevk_router_destroy(router);
}

static void test_bad_device_selector_is_a_clear_error(void) {
    moevk_context_info info = {.device = "no such device anywhere"};
    moevk_context *context = (moevk_context *)&info;
    moevk_result r = moevk_context_create(&info, &context);
    CHECK(r == MOEVK_ERROR_NO_DEVICE, "got %s", moevk_result_string(r));
    CHECK(context == NULL, "context not NULL");
}

static void test_devices_are_listed_two_calls(void) {
    uint32_t count = 0;
    CHECK_OK(moevk_devices_enumerate(&count, NULL));
    CHECK(count >= 1, "no device listed");
    moevk_device_info infos[16] = {{0}};
    uint32_t asked = count < 16 ? count : 16;
    CHECK_OK(moevk_devices_enumerate(&asked, infos));
    CHECK(asked >= 1 && infos[0].name[0] && infos[0].subgroup_size >= 1, "device info");
    moevk_device_info mine = {0};
    moevk_context_device_info(test_context(), &mine);
    CHECK(mine.max_storage_buffer_range > 0 && mine.api_version >= VK_API_VERSION_1_2, "limits");
}

/* Where the loader offers VK_KHR_portability_enumeration (the Khronos loader does, on Linux too),
 * moevk's own instances ask for it (so MoltenVK's devices are listed); lavapipe is no
 * portability-subset device. */
static void test_portability_enumeration_is_asked_for(void) {
    CHECK(volkInitialize() == VK_SUCCESS, "no Vulkan loader");
    uint32_t count = 0;
    vkEnumerateInstanceExtensionProperties(NULL, &count, NULL);
    VkExtensionProperties *list = calloc(count + 1, sizeof *list);
    CHECK(list, "out of memory");
    vkEnumerateInstanceExtensionProperties(NULL, &count, list);
    int offered = 0;
    for (uint32_t i = 0; i < count; ++i)
        offered |=
            strcmp(list[i].extensionName, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME) == 0;
    free(list);
    moevk_device_info mine;
    moevk_device_info_init(&mine);
    moevk_context_device_info(test_context(), &mine);
    CHECK(mine.portability_enumeration == offered,
          "the loader %s portability enumeration; the "
          "context says %d",
          offered ? "offers" : "does not offer", mine.portability_enumeration);
    if (strstr(mine.name, "llvmpipe"))
        CHECK(!mine.portability_subset, "lavapipe marked a portability-subset device");
    moevk_device_info listed[16];
    uint32_t asked = 16;
    moevk_device_info_init(&listed[0]);
    CHECK_OK(moevk_devices_enumerate(&asked, listed));
    for (uint32_t i = 0; i < asked; ++i)
        CHECK(listed[i].portability_enumeration == offered, "device %u listed without it", i);
}

/* ---- allocation callbacks ---- */
typedef struct counting_allocator {
    long allocations, frees, live;
} counting_allocator;

static void *VKAPI_CALL count_alloc(void *user, size_t size, size_t alignment,
                                    VkSystemAllocationScope scope) {
    (void)scope;
    counting_allocator *c = user;
    void *p = aligned_block(size, alignment);
    if (!p) return NULL;
    c->allocations++;
    c->live++;
    return p;
}

static void *VKAPI_CALL count_realloc(void *user, void *original, size_t size, size_t alignment,
                                      VkSystemAllocationScope scope) {
    counting_allocator *c = user;
    if (!original) return count_alloc(user, size, alignment, scope);
    if (size == 0) {
        aligned_block_free(original);
        c->frees++;
        c->live--;
        return NULL;
    }
    void *p = count_alloc(user, size, alignment, scope);
    if (p) {
        size_t old_size = aligned_block_size(original);
        memcpy(p, original, old_size < size ? old_size : size);
        aligned_block_free(original);
        c->frees++;
        c->live--;
    }
    return p;
}

static void VKAPI_CALL count_free(void *user, void *memory) {
    counting_allocator *c = user;
    if (!memory) return;
    aligned_block_free(memory);
    c->frees++;
    c->live--;
}

static VkAllocationCallbacks counting_callbacks(counting_allocator *counter) {
    return (VkAllocationCallbacks){.pUserData = counter,
                                   .pfnAllocation = count_alloc,
                                   .pfnReallocation = count_realloc,
                                   .pfnFree = count_free};
}

/* A context whose driver allocates through the callbacks, and a small router on it. */
static moevk_result counted_router(const VkAllocationCallbacks *callbacks, moevk_context **context,
                                   moevk_router **router) {
    moevk_context_info info = {.allocator = callbacks, .validation = test_validation()};
    moevk_result r = moevk_context_create(&info, context);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router_info router_info = small_info();
    return moevk_router_create(*context, &router_info, router);
}

static void test_allocation_callbacks_are_used_and_balanced(void) {
    counting_allocator counter = {0};
    VkAllocationCallbacks callbacks = counting_callbacks(&counter);
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_result r = counted_router(&callbacks, &context, &router);
    float logits[64 * 8];
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    moevk_route_input input = {.num_tokens = 64,
                               .logits = moevk_host_tensor(logits),
                               .bias = moevk_host_tensor(NULL),
                               .hidden = moevk_host_tensor(NULL)};
    moevk_route_output output = {0};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    uint32_t messages = moevk_context_validation_messages(context);
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    CHECK(r == MOEVK_SUCCESS, "route with callbacks: %s", moevk_result_string(r));
    CHECK(messages == 0, "%u validation messages", messages);
    CHECK(counter.allocations > 0, "the callbacks were never used");
    CHECK(counter.live == 0, "%ld allocations still live after destroy (%ld made)", counter.live,
          counter.allocations);
}

/* ---- adoption: the application's own instance and device (tests/app_vulkan.c) ---- */
static void route_small(moevk_context *context, const float *logits, int32_t *ids, float *weights,
                        moevk_result *result) {
    moevk_router_info info = small_info();
    moevk_router *router = NULL;
    *result = moevk_router_create(context, &info, &router);
    moevk_route_input input = {.num_tokens = 64,
                               .logits = moevk_host_tensor(logits),
                               .bias = moevk_host_tensor(NULL),
                               .hidden = moevk_host_tensor(NULL)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .weights = moevk_host_tensor(weights)};
    if (*result == MOEVK_SUCCESS) *result = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
}

static void test_adopted_device_routes_and_is_left_alive(void) {
    app_vulkan app;
    moevk_device_info shared = {0};
    moevk_context_device_info(test_context(), &shared); /* the same device: the same bits */
    int created = app_create(&app, shared.name, test_validation());
    if (!created) {
        app_destroy(&app);
        CHECK(0, "the test could not create its own Vulkan device");
    }
    float logits[64 * 8];
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    int32_t ids[128], own_ids[128];
    float weights[128], own_weights[128];
    moevk_result r_own, r_adopted;
    route_small(test_context(), logits, own_ids, own_weights, &r_own);

    moevk_context_info info = {.instance = app.instance,
                               .physical_device = app.physical,
                               .device_handle = app.device,
                               .queue_family_index = app.family,
                               .get_instance_proc_addr = vkGetInstanceProcAddr};
    moevk_context *context = NULL;
    r_adopted = moevk_context_create(&info, &context);
    if (r_adopted == MOEVK_SUCCESS) route_small(context, logits, ids, weights, &r_adopted);
    moevk_context_destroy(context);

    /* The application's device still works after moevk is gone. */
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence = VK_NULL_HANDLE;
    VkResult alive = vkCreateFence(app.device, &fci, NULL, &fence);
    if (alive == VK_SUCCESS) vkDestroyFence(app.device, fence, NULL);
    unsigned messages = app.messages;
    app_destroy(&app);
    CHECK(r_own == MOEVK_SUCCESS && r_adopted == MOEVK_SUCCESS, "routes: %s / %s",
          moevk_result_string(r_own), moevk_result_string(r_adopted));
    CHECK(memcmp(ids, own_ids, sizeof ids) == 0 &&
              memcmp(weights, own_weights, sizeof weights) == 0,
          "the adopted device routes differently");
    CHECK(alive == VK_SUCCESS, "the application's device was disturbed");
    CHECK(messages == 0, "%u validation messages in the application's instance", messages);
}

/* Scores and top-k's kernels (moevk_selection_kernel): a router of 64 experts with each, on
 * moevk's own device and on an adopted one with and without subgroup size control. */
static uint32_t lanes_of(moevk_context *context, moevk_selection_kernel kernel,
                         moevk_result *result) {
    moevk_router_info info = small_info();
    info.num_experts = 64;
    info.selection_kernel = kernel;
    moevk_router *router = NULL;
    *result = moevk_router_create(context, &info, &router);
    uint32_t lanes = moevk_router_selection_lanes(router);
    moevk_router_destroy(router);
    return lanes;
}

static void test_selection_kernels_follow_the_device(void) {
    moevk_device_info own;
    moevk_device_info_init(&own);
    moevk_context_device_info(test_context(), &own);
    if (!strcmp(own.driver_name, "llvmpipe"))
        CHECK(own.selection_lanes == own.subgroup_size,
              "lavapipe offers the subgroup kernel at %u lanes, its subgroup size is %u",
              own.selection_lanes, own.subgroup_size);
    moevk_result r;
    uint32_t lanes = lanes_of(test_context(), MOEVK_SELECTION_SUBGROUP, &r);
    if (own.selection_lanes)
        CHECK(r == MOEVK_SUCCESS && lanes == own.selection_lanes, "SUBGROUP: %s, %u lanes",
              moevk_result_string(r), lanes);
    else
        CHECK(r == MOEVK_ERROR_UNSUPPORTED &&
                  strstr(moevk_context_last_error(test_context()), "selection_lanes"),
              "SUBGROUP without the device's offer: %s", moevk_result_string(r));
    CHECK(lanes_of(test_context(), MOEVK_SELECTION_PER_TOKEN, &r) == 0 && r == MOEVK_SUCCESS,
          "PER_TOKEN ran a subgroup per token");
    lanes = lanes_of(test_context(), MOEVK_SELECTION_AUTO, &r);
    CHECK(r == MOEVK_SUCCESS &&
              lanes == (own.type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 0 : own.selection_lanes),
          "AUTO took %u lanes on a device offering %u", lanes, own.selection_lanes);

    for (int size_control = 0; size_control < 2; ++size_control) {
        app_vulkan app;
        int enabled = 0;
        if (!app_create_with_size_control(&app, own.name, test_validation(), &enabled)) {
            app_destroy(&app);
            CHECK(0, "the test could not create its own Vulkan device");
        }
        moevk_context_info info;
        moevk_context_info_init(&info);
        info.instance = app.instance;
        info.physical_device = app.physical;
        info.device_handle = app.device;
        info.queue_family_index = app.family;
        info.get_instance_proc_addr = vkGetInstanceProcAddr;
        info.subgroup_size_control = size_control && enabled;
        moevk_context *context = NULL;
        moevk_result created = moevk_context_create(&info, &context);
        moevk_device_info adopted;
        moevk_device_info_init(&adopted);
        moevk_context_device_info(context, &adopted);
        lanes = created == MOEVK_SUCCESS ? lanes_of(context, MOEVK_SELECTION_SUBGROUP, &r) : 0;
        moevk_context_destroy(context);
        unsigned messages = app.messages;
        app_destroy(&app);
        CHECK(created == MOEVK_SUCCESS, "adoption: %s", moevk_result_string(created));
        if (info.subgroup_size_control)
            CHECK(adopted.selection_lanes == own.selection_lanes && r == MOEVK_SUCCESS &&
                      lanes == own.selection_lanes,
                  "an adopted device with size control: %u lanes offered, SUBGROUP %s",
                  adopted.selection_lanes, moevk_result_string(r));
        else
            CHECK(adopted.selection_lanes == 0 && r == MOEVK_ERROR_UNSUPPORTED,
                  "an adopted device without size control offered %u lanes (SUBGROUP: %s)",
                  adopted.selection_lanes, moevk_result_string(r));
        CHECK(messages == 0, "%u validation messages in the application's instance", messages);
    }
}

static void test_adopting_needs_all_handles(void) {
    moevk_context_info info = {.instance = (VkInstance)(uintptr_t)1};
    moevk_context *context = NULL;
    CHECK(moevk_context_create(&info, &context) == MOEVK_ERROR_INVALID_ARGUMENT && !context,
          "partial adoption accepted");
}

static void test_profiling_router_reports_stage_times(void) {
    moevk_router_info info = small_info();
    info.profile = 1;
    moevk_router *router = NULL, *plain = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    info.profile = 0;
    moevk_result plain_created = moevk_router_create(test_context(), &info, &plain);
    float logits[64 * 8], hidden[64 * 4], combined[64 * 4];
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    for (int i = 0; i < 64 * 4; ++i) hidden[i] = rng_normal();
    float *dispatched = calloc(moevk_router_max_dispatched_rows(router) * 4, sizeof(float));
    moevk_route_input input = {.num_tokens = 64,
                               .logits = moevk_host_tensor(logits),
                               .bias = moevk_host_tensor(NULL),
                               .hidden = moevk_host_tensor(hidden)};
    moevk_route_output output = {.dispatched = moevk_host_tensor(dispatched)};
    moevk_timings before = {0}, timings = {0}, none = {0};
    moevk_result early = moevk_router_timings(router, &before);
    moevk_result r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(dispatched), moevk_host_tensor(combined));
    moevk_result read = moevk_router_timings(router, &timings);
    moevk_result unsupported = MOEVK_ERROR_UNSUPPORTED;
    if (plain_created == MOEVK_SUCCESS && moevk_route(plain, &input, &output) == MOEVK_SUCCESS)
        unsupported = moevk_router_timings(plain, &none);
    free(dispatched);
    moevk_router_destroy(router);
    moevk_router_destroy(plain);
    CHECK(early == MOEVK_ERROR_INVALID_ARGUMENT, "timings before a route: %s",
          moevk_result_string(early));
    CHECK(r == MOEVK_SUCCESS && read == MOEVK_SUCCESS, "route/timings: %s / %s",
          moevk_result_string(r), moevk_result_string(read));
    CHECK(unsupported == MOEVK_ERROR_UNSUPPORTED, "timings without profile: %s",
          moevk_result_string(unsupported));
    double parts =
        timings.scores_topk_ms + timings.bucketing_ms + timings.dispatch_ms + timings.stats_ms;
    CHECK(timings.scores_topk_ms >= 0 && timings.bucketing_ms >= 0 && timings.dispatch_ms >= 0 &&
              timings.stats_ms >= 0 && timings.combine_ms > 0 && timings.route_ms > 0,
          "stage times %g %g %g %g %g", timings.scores_topk_ms, timings.bucketing_ms,
          timings.dispatch_ms, timings.stats_ms, timings.combine_ms);
    CHECK(fabs(parts - timings.route_ms) <= 1e-6 * timings.route_ms + 1e-9, "stages do not add up");
}

static void test_buffers_round_trip_and_check_bounds(void) {
    moevk_buffer *buffer = NULL, *none = (moevk_buffer *)1;
    CHECK(moevk_buffer_create(test_context(), 0, &none) == MOEVK_ERROR_INVALID_ARGUMENT && !none,
          "a zero-size buffer was accepted");
    CHECK_OK(moevk_buffer_create(test_context(), 1000, &buffer));
    unsigned char in[1000], out[1000];
    for (int i = 0; i < 1000; ++i) in[i] = (unsigned char)rng_u32();
    moevk_result w = moevk_buffer_write(buffer, 0, in, 1000);
    moevk_result part = moevk_buffer_write(buffer, 10, in + 500, 7);
    moevk_result r = moevk_buffer_read(buffer, 0, out, 1000);
    moevk_result past = moevk_buffer_write(buffer, 995, in, 6);
    moevk_result past_read = moevk_buffer_read(buffer, 1001, out, 0);
    uint64_t size = moevk_buffer_size(buffer);
    moevk_buffer_destroy(buffer);
    moevk_buffer_destroy(NULL);
    CHECK(w == MOEVK_SUCCESS && part == MOEVK_SUCCESS && r == MOEVK_SUCCESS, "copies failed");
    memcpy(in + 10, in + 500, 7);
    CHECK(memcmp(in, out, 1000) == 0, "the buffer did not hold what was written");
    CHECK(past == MOEVK_ERROR_INVALID_ARGUMENT && past_read == MOEVK_ERROR_INVALID_ARGUMENT,
          "out-of-range copies accepted");
    CHECK(size == 1000, "size %llu", (unsigned long long)size);
}

/* Inputs and outputs in device buffers give the same bits as host pointers. */
static void test_device_buffers_route_like_host_pointers(void) {
    moevk_router_info info = small_info();
    info.hidden_size = 6;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    uint64_t rows = moevk_router_max_dispatched_rows(router);
    float logits[64 * 8], hidden[64 * 6], *expert_out = malloc(rows * 6 * 4);
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    for (int i = 0; i < 64 * 6; ++i) hidden[i] = rng_normal();
    for (uint64_t i = 0; i < rows * 6; ++i) expert_out[i] = rng_normal();
    int32_t ids[128], ids2[128];
    float *dispatched = calloc(rows * 6, 4), *dispatched2 = calloc(rows * 6, 4);
    float combined[64 * 6], combined2[64 * 6];
    moevk_buffer *logits_buf = NULL, *hidden_buf = NULL, *dispatched_buf = NULL, *out_buf = NULL,
                 *combined_buf = NULL;
    moevk_result r = MOEVK_SUCCESS;
    moevk_context *ctx = test_context();
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(ctx, sizeof logits, &logits_buf);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(ctx, sizeof hidden, &hidden_buf);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(ctx, rows * 6 * 4, &dispatched_buf);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(ctx, rows * 6 * 4, &out_buf);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(ctx, sizeof combined, &combined_buf);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(logits_buf, 0, logits, sizeof logits);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(hidden_buf, 0, hidden, sizeof hidden);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(out_buf, 0, expert_out, rows * 6 * 4);
    moevk_route_input host_in = {
        .num_tokens = 64, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(hidden)};
    moevk_route_output host_out = {.expert_ids = moevk_host_tensor(ids),
                                   .dispatched = moevk_host_tensor(dispatched)};
    moevk_route_input device_in = {.num_tokens = 64,
                                   .logits = moevk_buffer_tensor(logits_buf, 0),
                                   .hidden = moevk_buffer_tensor(hidden_buf, 0)};
    moevk_route_output device_out = {.expert_ids = moevk_host_tensor(ids2),
                                     .dispatched = moevk_buffer_tensor(dispatched_buf, 0)};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &host_in, &host_out);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined));
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &device_in, &device_out);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_buffer_tensor(out_buf, 0),
                          moevk_buffer_tensor(combined_buf, 0));
    if (r == MOEVK_SUCCESS) r = moevk_buffer_read(dispatched_buf, 0, dispatched2, rows * 6 * 4);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_read(combined_buf, 0, combined2, sizeof combined2);
    moevk_route_input short_in = {.num_tokens = 64, .logits = moevk_buffer_tensor(hidden_buf, 0)};
    moevk_result too_small = moevk_route(router, &short_in, &device_out);
    int same = r == MOEVK_SUCCESS && !memcmp(ids, ids2, sizeof ids) &&
               !memcmp(dispatched, dispatched2, rows * 6 * 4) &&
               !memcmp(combined, combined2, sizeof combined);
    moevk_buffer_destroy(logits_buf);
    moevk_buffer_destroy(hidden_buf);
    moevk_buffer_destroy(dispatched_buf);
    moevk_buffer_destroy(out_buf);
    moevk_buffer_destroy(combined_buf);
    moevk_router_destroy(router);
    free(expert_out);
    free(dispatched);
    free(dispatched2);
    CHECK(r == MOEVK_SUCCESS, "%s: %s", moevk_result_string(r), moevk_context_last_error(ctx));
    CHECK(same, "device buffers give other results than host pointers");
    CHECK(too_small == MOEVK_ERROR_INVALID_ARGUMENT, "an undersized logits buffer was accepted");
}

/* Makes a context (optionally from a cache), builds one router so pipelines exist, returns the
 * cache state, and the cache's bytes when asked. */
static moevk_result context_with_cache(const void *data, size_t size, const char *path, int *state,
                                       void **blob, size_t *blob_size) {
    moevk_context_info info = {.validation = test_validation(),
                               .pipeline_cache_data = data,
                               .pipeline_cache_size = size,
                               .pipeline_cache_path = path};
    moevk_context *context = NULL;
    moevk_result r = moevk_context_create(&info, &context);
    moevk_router_info router_info = small_info();
    moevk_router *router = NULL;
    if (r == MOEVK_SUCCESS) r = moevk_router_create(context, &router_info, &router);
    if (r == MOEVK_SUCCESS) *state = moevk_context_pipeline_cache_state(context);
    if (r == MOEVK_SUCCESS && blob) {
        r = moevk_context_pipeline_cache(context, blob_size, NULL);
        *blob = malloc(*blob_size ? *blob_size : 1);
        if (r == MOEVK_SUCCESS) r = moevk_context_pipeline_cache(context, blob_size, *blob);
    }
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return r;
}

static void test_pipeline_cache_is_reused_and_stale_ones_ignored(void) {
    void *blob = NULL;
    size_t size = 0;
    int none = 9, used = 9, stale = 9, short_one = 9, from_file = 9;
    moevk_result r = context_with_cache(NULL, 0, NULL, &none, &blob, &size);
    if (r == MOEVK_SUCCESS) r = context_with_cache(blob, size, NULL, &used, NULL, NULL);
    if (r == MOEVK_SUCCESS && size >= 32) {
        ((unsigned char *)blob)[20] ^= 0xFF; /* inside pipelineCacheUUID: another driver's cache */
        r = context_with_cache(blob, size, NULL, &stale, NULL, NULL);
    }
    if (r == MOEVK_SUCCESS) r = context_with_cache(blob, 10, NULL, &short_one, NULL, NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s", test_temp_path("pipeline-cache"));
    remove(path); /* a path that does not exist yet: written at destroy */
    int first = 9;
    if (r == MOEVK_SUCCESS) r = context_with_cache(NULL, 0, path, &first, NULL, NULL);
    if (r == MOEVK_SUCCESS) r = context_with_cache(NULL, 0, path, &from_file, NULL, NULL);
    remove(path);
    free(blob);
    CHECK(r == MOEVK_SUCCESS, "%s", moevk_result_string(r));
    CHECK(size >= 32, "the pipeline cache lacks even its header"); /* lavapipe keeps just that */
    CHECK(none == 0 && used == 1 && stale == -1 && short_one == -1, "states %d %d %d %d", none,
          used, stale, short_one);
    CHECK(first == 0 && from_file == 1, "cache file states %d %d", first, from_file);
}

static void test_submitted_route_completes_on_wait(void) {
    moevk_router_info info = small_info();
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[64 * 8];
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    int32_t ids[128], ids_sync[128];
    memset(ids, 0x7F, sizeof ids);
    moevk_route_input input = {.num_tokens = 64, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids)},
                       sync_output = {.expert_ids = moevk_host_tensor(ids_sync)};
    moevk_result idle = moevk_router_wait(router, 0); /* nothing submitted */
    moevk_result submitted = moevk_route_submit(router, &input, &output);
    memset(logits, 0, sizeof logits);     /* the input may go at once */
    int untouched = ids[0] == 0x7F7F7F7F; /* outputs are written only by the wait */
    moevk_result polled = moevk_router_wait(router, 0);
    moevk_result done = polled == MOEVK_NOT_READY ? moevk_router_wait(router, UINT64_MAX) : polled;
    VkFence fence = moevk_router_fence(router);
    for (int i = 0; i < 64 * 8; ++i) logits[i] = 0;
    moevk_result again = moevk_route(router, &input, &sync_output);
    moevk_router_destroy(router);
    /* A combine submitted too, on a router with hidden states. */
    info.hidden_size = 4;
    router = NULL;
    float hidden[64 * 4], combined[64 * 4], combined_sync[64 * 4];
    static float expert_out[8 * 80 * 4];
    for (int i = 0; i < 64 * 4; ++i) hidden[i] = rng_normal();
    for (size_t i = 0; i < sizeof expert_out / sizeof expert_out[0]; ++i)
        expert_out[i] = rng_normal();
    moevk_result c = moevk_router_create(test_context(), &info, &router);
    moevk_route_input with_hidden = {
        .num_tokens = 64, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(hidden)};
    moevk_route_output none = {0};
    if (c == MOEVK_SUCCESS) c = moevk_route(router, &with_hidden, &none);
    if (c == MOEVK_SUCCESS)
        c = moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined_sync));
    if (c == MOEVK_SUCCESS)
        c = moevk_combine_submit(router, moevk_host_tensor(expert_out),
                                 moevk_host_tensor(combined));
    if (c == MOEVK_SUCCESS) c = moevk_router_wait(router, UINT64_MAX);
    moevk_router_destroy(router);
    CHECK(c == MOEVK_SUCCESS && memcmp(combined, combined_sync, sizeof combined) == 0,
          "submitted combine: %s", moevk_result_string(c));
    CHECK(idle == MOEVK_SUCCESS, "waiting with nothing submitted: %s", moevk_result_string(idle));
    CHECK(submitted == MOEVK_SUCCESS && (polled == MOEVK_SUCCESS || polled == MOEVK_NOT_READY) &&
              done == MOEVK_SUCCESS && again == MOEVK_SUCCESS,
          "submit %s, poll %s, wait %s", moevk_result_string(submitted),
          moevk_result_string(polled), moevk_result_string(done));
    CHECK(untouched, "outputs written before the wait");
    CHECK(fence != VK_NULL_HANDLE, "no fence");
    for (int t = 0; t < 64; ++t) CHECK(ids[2 * t] >= 0 && ids[2 * t] < 8, "ids after the wait");
    CHECK(strstr(moevk_result_string(MOEVK_NOT_READY), "MOEVK_NOT_READY") != NULL, "name");
}

/* A persistent router's route makes no host allocation of moevk's own once it runs, whatever T.
 * (The driver may: lavapipe allocates while moevk records the command buffer again.) */
static void test_steady_routes_allocate_nothing(void) {
    counting_allocator counter = {0};
    VkAllocationCallbacks callbacks = {.pUserData = &counter,
                                       .pfnAllocation = count_alloc,
                                       .pfnReallocation = count_realloc,
                                       .pfnFree = count_free};
    moevk_context_info info = {.allocator = &callbacks};
    moevk_context *context = NULL;
    CHECK_OK(moevk_context_create(&info, &context));
    moevk_router_info router_info = small_info();
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(context, &router_info, &router);
    float logits[64 * 8], hidden[64 * 4];
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    for (int i = 0; i < 64 * 4; ++i) hidden[i] = rng_normal();
    int32_t ids[128];
    moevk_route_stats stats = {0};
    moevk_route_input input = {
        .num_tokens = 64, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(hidden)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids), .stats = &stats};
    static float expert_out[8 * 80 * 4], combined[64 * 4]; /* up to E * C rows of d */
    for (size_t i = 0; i < sizeof expert_out / sizeof expert_out[0]; ++i)
        expert_out[i] = rng_normal();
    uint64_t before = moevk_context_host_allocations(context);
    long driver_before = counter.allocations;
    for (int i = 0; r == MOEVK_SUCCESS && i < 20; ++i) {
        input.num_tokens = 40 + (uint32_t)i; /* varying T on the steady path */
        r = moevk_route(router, &input, &output);
        if (r == MOEVK_SUCCESS)
            r = moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined));
    }
    uint64_t during = moevk_context_host_allocations(context) - before;
    long driver = counter.allocations - driver_before;
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    CHECK(r == MOEVK_SUCCESS, "%s", moevk_result_string(r));
    CHECK(before > 2, "moevk's own allocations are not counted");
    CHECK(during == 0, "%llu host allocations of moevk's in 20 steady routes and combines",
          (unsigned long long)during);
    printf("  (the driver made %ld allocations through the callbacks meanwhile)\n", driver);
}

/* Routes recorded once: a route of the router's last shape submits that recording again, so
 * the driver makes none of the allocations of recording (lavapipe's: about 80 a route), and
 * the results follow the fresh logits. */
static void test_resubmitted_routes_skip_recording(void) {
    counting_allocator counter = {0};
    VkAllocationCallbacks callbacks = counting_callbacks(&counter);
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_result r = counted_router(&callbacks, &context, &router);
    float logits[64 * 8];
    int32_t ids[128];
    moevk_route_stats stats = {0};
    moevk_route_input input = {.num_tokens = 64, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids), .stats = &stats};
    long recorded = 0, resubmitted = 0;
    int wrong = -1;
    for (int i = 0; r == MOEVK_SUCCESS && i < 10; ++i) {
        for (int j = 0; j < 64 * 8; ++j) logits[j] = rng_normal();
        logits[8 * 3 + i % 8] = 50.0f; /* token 3's first choice, a new one each call */
        long before = counter.allocations;
        moevk_route_stats_init(&stats);
        r = moevk_route(router, &input, &output);
        if (i == 0)
            recorded = counter.allocations - before;
        else
            resubmitted += counter.allocations - before;
        if (r == MOEVK_SUCCESS && (stats.resubmitted != (i > 0) || ids[2 * 3] != i % 8) &&
            wrong < 0)
            wrong = i;
    }
    uint32_t messages = moevk_context_validation_messages(context);
    moevk_device_info device = {0};
    moevk_context_device_info(context, &device);
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    CHECK(r == MOEVK_SUCCESS, "%s", moevk_result_string(r));
    CHECK(messages == 0, "%u validation messages", messages);
    CHECK(wrong < 0, "route %d: not resubmitted, or token 3 did not follow its logits", wrong);
    printf("  (the driver allocated %ld times for the recorded route, %ld for 9 resubmitted)\n",
           recorded, resubmitted);
    CHECK(resubmitted <= 9 * recorded, "resubmitted routes allocated more than recorded ones");
    /* lavapipe allocates once per submission as it runs it (after vkQueueSubmit returned:
     * moevk-bench --host-cost counts none during the submission), the recorded route's too. */
    if (strstr(device.name, "llvmpipe"))
        CHECK(resubmitted <= 9, "lavapipe allocated %ld times for 9 resubmitted routes",
              resubmitted);
}

static const test_case TESTS[] = {
    TEST(steady_routes_allocate_nothing),
    TEST(resubmitted_routes_skip_recording),
    TEST(submitted_route_completes_on_wait),
    TEST(pipeline_cache_is_reused_and_stale_ones_ignored),
    TEST(buffers_round_trip_and_check_bounds),
    TEST(device_buffers_route_like_host_pointers),
    TEST(profiling_router_reports_stage_times),
    TEST(version_matches_header),
    TEST(every_result_has_a_name),
    TEST(destroying_null_is_a_no_op),
    TEST(bad_configurations_are_rejected),
    TEST(buffers_past_device_limits_are_refused),
    TEST(huge_capacity_factor_is_refused_not_overflowed),
    TEST(sizes_past_32_bit_indices_are_refused),
    TEST(elements_past_32_bit_indices_are_refused),
    TEST(nan_hidden_state_stays_in_its_token),
    TEST(bad_route_calls_leave_the_router_usable),
    TEST(bad_device_selector_is_a_clear_error),
    TEST(devices_are_listed_two_calls),
    TEST(portability_enumeration_is_asked_for),
    TEST(allocation_callbacks_are_used_and_balanced),
    TEST(adopted_device_routes_and_is_left_alive),
    TEST(adopting_needs_all_handles),
    TEST(selection_kernels_follow_the_device),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
