/* A layer recorded into an application's command buffer (moevk_layer_record): the application
 * makes its device with volk's globals and the validation layer (synchronization validation
 * on), copies the hidden states and the selection bias into its own buffers, records moevk's
 * layer between its own commands, and reads the output and the router logits from its own
 * buffers. They must match moevk_layer_forward on the same weights and inputs bit for bit, as
 * must the route read back with moevk_route_read, with no validation message. Once per form of
 * the layer's stages: capacity layout with a gated shared expert and a bias, dropless (tile map
 * and indirect dispatch) with GELU and f16 weights, decode (matrix-vector forms) with f16
 * hidden states of odd T d, and T = 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app_vulkan.h"
#include "harness.h"
#include "moevk_reference.h"

#define E 8
#define K 2
#define MAX_T 300

typedef struct record_case {
    uint32_t T, d, f, shared_f;
    moevk_activation activation;
    moevk_dtype weight_type, hidden_type;
    moevk_capacity_mode capacity_mode;
    int bias;
} record_case;

static uint64_t bytes_of(moevk_dtype type) { return type == MOEVK_DTYPE_F32 ? 4 : 2; }
/* At least 16 bytes: the application's copies move 16-byte units, and no buffer is empty. */
static VkDeviceSize round16(VkDeviceSize bytes) {
    return bytes ? (bytes + 15) & ~(VkDeviceSize)15 : 16;
}

/* Fresh normal values times scale, in a type; NULL for no values. */
static void *random_values(uint64_t count, moevk_dtype type, float scale) {
    void *data = malloc(count * bytes_of(type) + 4);
    if (data)
        for (uint64_t i = 0; i < count; ++i) ref_store(data, i, type, rng_normal() * scale);
    return data;
}

typedef struct layer_weights {
    void *values[MOEVK_WEIGHT_SHARED_EXPERT_GATE + 1];
    uint32_t experts[MOEVK_WEIGHT_SHARED_EXPERT_GATE + 1];
} layer_weights;

static void make_weights(const record_case *c, layer_weights *w) {
    uint64_t d = c->d, f = c->f, fs = c->shared_f;
    int swiglu = c->activation == MOEVK_ACTIVATION_SWIGLU;
    memset(w, 0, sizeof *w);
    w->values[MOEVK_WEIGHT_ROUTER] = random_values(E * d, MOEVK_DTYPE_F32, 0.5f);
    if (swiglu) w->values[MOEVK_WEIGHT_GATE] = random_values(E * f * d, c->weight_type, 0.3f);
    w->values[MOEVK_WEIGHT_UP] = random_values(E * f * d, c->weight_type, 0.3f);
    w->values[MOEVK_WEIGHT_DOWN] = random_values(E * d * f, c->weight_type, 0.3f);
    w->experts[MOEVK_WEIGHT_GATE] = w->experts[MOEVK_WEIGHT_UP] = w->experts[MOEVK_WEIGHT_DOWN] = E;
    if (fs) {
        if (swiglu)
            w->values[MOEVK_WEIGHT_SHARED_GATE] = random_values(fs * d, c->weight_type, 0.3f);
        w->values[MOEVK_WEIGHT_SHARED_UP] = random_values(fs * d, c->weight_type, 0.3f);
        w->values[MOEVK_WEIGHT_SHARED_DOWN] = random_values(d * fs, c->weight_type, 0.3f);
        w->values[MOEVK_WEIGHT_SHARED_EXPERT_GATE] = random_values(d, MOEVK_DTYPE_F32, 0.3f);
    }
}

static void free_weights(layer_weights *w) {
    for (int i = 0; i <= MOEVK_WEIGHT_SHARED_EXPERT_GATE; ++i) free(w->values[i]);
}

static moevk_result create_layer(moevk_context *context, const record_case *c,
                                 const layer_weights *w, moevk_layer **out) {
    moevk_router_info router;
    moevk_router_info_init(&router);
    router.num_experts = E;
    router.top_k = K;
    router.max_tokens = MAX_T;
    router.hidden_size = c->d;
    router.hidden_type = c->hidden_type;
    router.capacity_mode = c->capacity_mode;
    router.renormalize = 1;
    router.profile = 1;
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router;
    info.intermediate_size = c->f;
    info.activation = c->activation;
    info.weight_type = c->weight_type;
    info.shared_intermediate_size = c->shared_f;
    info.shared_gate = c->shared_f > 0;
    moevk_result r = moevk_layer_create(context, &info, out);
    for (int i = 0; i <= MOEVK_WEIGHT_SHARED_EXPERT_GATE && r == MOEVK_SUCCESS; ++i)
        if (w->values[i])
            r = moevk_layer_set_weights(*out, (moevk_layer_weight)i, 0,
                                        w->experts[i] ? w->experts[i] : 1,
                                        moevk_host_tensor(w->values[i]));
    return r;
}

/* What the application reads back, and what moevk_layer_forward gives. */
typedef struct layer_result {
    void *output;
    float logits[MAX_T * E], weights[MAX_T * K];
    int32_t ids[MAX_T * K];
    moevk_route_stats stats;
} layer_result;

static moevk_result run_forward(const record_case *c, const layer_weights *w, const void *hidden,
                                const float *bias, layer_result *want) {
    moevk_layer *layer = NULL;
    moevk_result r = create_layer(test_context(), c, w, &layer);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    input.hidden = moevk_host_tensor(hidden);
    if (c->bias) input.bias = moevk_host_tensor(bias);
    moevk_route_output route = {.expert_ids = moevk_host_tensor(want->ids),
                                .weights = moevk_host_tensor(want->weights),
                                .stats = &want->stats};
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(want->output);
    output.router_logits = moevk_host_tensor(want->logits);
    output.route = &route;
    if (r == MOEVK_SUCCESS) r = moevk_layer_forward(layer, &input, &output);
    moevk_layer_destroy(layer);
    return r;
}

typedef struct app_side {
    app_vulkan app;
    moevk_context *context;
    app_buffer staging, hidden, bias, output, logits, readback;
} app_side;

static int app_side_create(app_side *a, const record_case *c) {
    memset(a, 0, sizeof *a);
    moevk_device_info shared = {0};
    moevk_context_device_info(test_context(), &shared);
    if (!app_create(&a->app, shared.name, test_validation())) return 0;
    moevk_context_info info = {.instance = a->app.instance,
                               .physical_device = a->app.physical,
                               .device_handle = a->app.device,
                               .queue_family_index = a->app.family,
                               .get_instance_proc_addr = vkGetInstanceProcAddr};
    VkDeviceSize hidden_bytes = round16((VkDeviceSize)c->T * c->d * bytes_of(c->hidden_type));
    return moevk_context_create(&info, &a->context) == MOEVK_SUCCESS &&
           app_buffer_create(&a->app, hidden_bytes + E * 4, &a->staging) &&
           app_buffer_create(&a->app, hidden_bytes, &a->hidden) &&
           app_buffer_create(&a->app, E * 4, &a->bias) &&
           app_buffer_create(&a->app, hidden_bytes, &a->output) &&
           app_buffer_create(&a->app, round16((VkDeviceSize)c->T * E * 4), &a->logits) &&
           app_buffer_create(&a->app, hidden_bytes, &a->readback);
}

static void app_side_destroy(app_side *a) {
    app_buffer *buffers[] = {&a->staging, &a->hidden, &a->bias,
                             &a->output,  &a->logits, &a->readback};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; ++i)
        if (a->app.device) app_buffer_destroy(&a->app, buffers[i]);
    moevk_context_destroy(a->context);
    app_destroy(&a->app);
}

/* The application's commands around moevk's: copies of the hidden states and bias in, the
 * layer, then its own dispatch reading moevk's output. Returns the recording's result. */
static moevk_result record_in_application(app_side *a, moevk_layer *layer, const record_case *c,
                                          const void *hidden, const float *bias) {
    VkDeviceSize hidden_bytes = (VkDeviceSize)c->T * c->d * bytes_of(c->hidden_type);
    memcpy(a->staging.mapped, hidden, hidden_bytes);
    memcpy((char *)a->staging.mapped + a->hidden.size, bias, E * 4);
    VkCommandBuffer cmd = app_begin(&a->app);
    if (hidden_bytes) {
        VkBufferCopy region = {0, 0, hidden_bytes};
        vkCmdCopyBuffer(cmd, a->staging.buffer, a->hidden.buffer, 1, &region);
    }
    VkBufferCopy bias_region = {a->hidden.size, 0, E * 4};
    vkCmdCopyBuffer(cmd, a->staging.buffer, a->bias.buffer, 1, &bias_region);
    app_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    if (c->T) input.hidden = moevk_vulkan_tensor(a->hidden.buffer, 0, 0);
    if (c->bias) input.bias = moevk_vulkan_tensor(a->bias.buffer, 0, 0);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    if (c->T) output.output = moevk_vulkan_tensor(a->output.buffer, 0, 0);
    if (c->T) output.router_logits = moevk_vulkan_tensor(a->logits.buffer, 0, 0);
    moevk_result recorded = moevk_layer_record(layer, cmd, &input, &output);
    app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    if (hidden_bytes)
        app_record_copy(&a->app, cmd, a->output.buffer, a->readback.buffer, a->readback.size);
    app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    if (!app_submit_and_wait(&a->app, cmd) && recorded == MOEVK_SUCCESS)
        recorded = MOEVK_ERROR_VULKAN;
    return recorded;
}

static void check_layer_recorded(const record_case *c) {
    layer_weights w;
    make_weights(c, &w);
    uint64_t output_bytes = (uint64_t)c->T * c->d * bytes_of(c->hidden_type);
    void *hidden = random_values((uint64_t)c->T * c->d, c->hidden_type, 1.0f);
    float bias[E];
    for (int e = 0; e < E; ++e) bias[e] = 0.2f * rng_normal();
    layer_result *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    want->output = calloc(1, output_bytes + 4);
    moevk_result direct = run_forward(c, &w, hidden, bias, want);

    app_side a;
    int ready = app_side_create(&a, c);
    moevk_layer *layer = NULL;
    moevk_result created = ready ? create_layer(a.context, c, &w, &layer) : MOEVK_ERROR_VULKAN;
    moevk_result recorded = MOEVK_ERROR_VULKAN, read = MOEVK_ERROR_VULKAN,
                 timed = MOEVK_ERROR_VULKAN;
    moevk_timings timings;
    moevk_timings_init(&timings);
    int same_output = 0, same_logits = 0;
    if (created == MOEVK_SUCCESS) {
        recorded = record_in_application(&a, layer, c, hidden, bias);
        moevk_route_output route = {.expert_ids = moevk_host_tensor(got->ids),
                                    .weights = moevk_host_tensor(got->weights),
                                    .stats = &got->stats};
        if (recorded == MOEVK_SUCCESS) read = moevk_route_read(moevk_layer_router(layer), &route);
        if (recorded == MOEVK_SUCCESS)
            timed = moevk_router_timings(moevk_layer_router(layer), &timings);
        same_output = !memcmp(a.readback.mapped, want->output, output_bytes);
        same_logits = !memcmp(a.logits.mapped, want->logits, (size_t)c->T * E * 4);
    }
    char error[256] = "";
    if (a.context) snprintf(error, sizeof error, "%s", moevk_context_last_error(a.context));
    moevk_layer_destroy(layer);
    unsigned messages = a.app.messages;
    app_side_destroy(&a);
    messages = a.app.messages > messages ? a.app.messages : messages;
    CHECK(ready, "the test could not set up its application (Vulkan device, buffers, moevk)");
    CHECK(direct == MOEVK_SUCCESS && created == MOEVK_SUCCESS, "forward %s, create %s",
          moevk_result_string(direct), moevk_result_string(created));
    CHECK(recorded == MOEVK_SUCCESS && read == MOEVK_SUCCESS, "record %s (%s), read %s",
          moevk_result_string(recorded), error, moevk_result_string(read));
    CHECK(same_output, "the recorded layer's output differs from moevk_layer_forward's");
    CHECK(same_logits, "the recorded router logits differ");
    CHECK(!memcmp(got->ids, want->ids, sizeof got->ids) &&
              !memcmp(got->weights, want->weights, sizeof got->weights),
          "the recorded route differs");
    CHECK(got->stats.aux_loss == want->stats.aux_loss &&
              got->stats.dispatched_rows == want->stats.dispatched_rows,
          "the recorded route's statistics differ");
    CHECK(timed == MOEVK_SUCCESS && (c->T == 0 || timings.layer_ms > 0.0),
          "timings %s, layer_ms %g", moevk_result_string(timed), timings.layer_ms);
    CHECK(messages == 0, "%u validation messages in the application's instance", messages);
    free(want->output);
    free(want);
    free(got);
    free(hidden);
    free_weights(&w);
}

static void test_capacity_layout_shared_gate_and_bias(void) {
    check_layer_recorded(&(record_case){.T = 300, .d = 24, .f = 40, .shared_f = 32, .bias = 1});
}

static void test_dropless_gelu_f16_weights(void) {
    check_layer_recorded(&(record_case){.T = 257,
                                        .d = 33,
                                        .f = 65,
                                        .activation = MOEVK_ACTIVATION_GELU,
                                        .weight_type = MOEVK_DTYPE_F16,
                                        .capacity_mode = MOEVK_CAPACITY_DROPLESS});
}

/* Five tokens take the matrix-vector forms; 5 x 13 f16 values end in half a word. */
static void test_decode_f16_hidden_odd_size(void) {
    check_layer_recorded(&(record_case){.T = 5,
                                        .d = 13,
                                        .f = 21,
                                        .shared_f = 8,
                                        .hidden_type = MOEVK_DTYPE_F16,
                                        .weight_type = MOEVK_DTYPE_BF16,
                                        .capacity_mode = MOEVK_CAPACITY_DROPLESS,
                                        .bias = 1});
}

static void test_zero_tokens(void) {
    check_layer_recorded(&(record_case){.T = 0, .d = 16, .f = 16});
}

/* A layer's router is recorded through the layer; a recorded layer takes only VULKAN tensors
 * and never logits. */
static void test_misuse_is_refused(void) {
    record_case c = {.T = 4, .d = 16, .f = 16};
    layer_weights w;
    make_weights(&c, &w);
    moevk_layer *layer = NULL;
    moevk_result created = create_layer(test_context(), &c, &w, &layer);
    float host[4 * 16] = {0};
    VkCommandBuffer not_used = (VkCommandBuffer)(uintptr_t)1;
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 4;
    input.hidden = moevk_host_tensor(host);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(host);
    moevk_result host_tensors = moevk_layer_record(layer, not_used, &input, &output);
    input.hidden = moevk_vulkan_tensor((VkBuffer)(uintptr_t)1, 0, 0);
    input.logits = input.hidden;
    output.output = input.hidden;
    moevk_result logits = moevk_layer_record(layer, not_used, &input, &output);
    input.logits = (moevk_tensor){0};
    output.output = (moevk_tensor){0};
    moevk_result no_output = moevk_layer_record(layer, not_used, &input, &output);
    moevk_result route = moevk_route_record(moevk_layer_router(layer), not_used, &input, NULL);
    moevk_result no_buffer = moevk_layer_record(layer, VK_NULL_HANDLE, &input, &output);
    moevk_layer_destroy(layer);
    free_weights(&w);
    CHECK(created == MOEVK_SUCCESS, "create: %s", moevk_result_string(created));
    CHECK(host_tensors == MOEVK_ERROR_INVALID_ARGUMENT, "host tensors -> %s",
          moevk_result_string(host_tensors));
    CHECK(logits == MOEVK_ERROR_INVALID_ARGUMENT, "logits -> %s", moevk_result_string(logits));
    CHECK(no_output == MOEVK_ERROR_INVALID_ARGUMENT, "no output -> %s",
          moevk_result_string(no_output));
    CHECK(route == MOEVK_ERROR_INVALID_ARGUMENT, "moevk_route_record on a layer's router -> %s",
          moevk_result_string(route));
    CHECK(no_buffer == MOEVK_ERROR_INVALID_ARGUMENT, "no command buffer -> %s",
          moevk_result_string(no_buffer));
    CHECK(moevk_layer_record(NULL, not_used, &input, &output) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a NULL layer is refused");
}

static const test_case TESTS[] = {
    TEST(capacity_layout_shared_gate_and_bias),
    TEST(dropless_gelu_f16_weights),
    TEST(decode_f16_hidden_odd_size),
    TEST(zero_tokens),
    TEST(misuse_is_refused),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
