/* moevk inside an application's Vulkan: the application makes its device with volk's globals
 * and the validation layer (synchronization validation on), and moevk records a route and a
 * combine into the application's command buffers, between two of the application's own
 * dispatches, on the application's buffers. Results must match moevk's own calls bit for bit,
 * the layer must stay silent, and the application's volk state must be untouched. Once per
 * routing mode whose stages differ: token, sequence, Sinkhorn, expert choice; and with the
 * router projection, W_router in the application's buffer. */
#include <stdlib.h>
#include <string.h>

#include "app_vulkan.h"
#include "harness.h"

#define T 300
#define E 8
#define K 2
#define D 12

typedef struct fixture {
    moevk_routing_mode mode;
    int projected; /* the router projection: logits_host's first D * E floats are W_router */
    app_vulkan app;
    moevk_context *context;
    moevk_router *router;
    app_buffer staging, logits, hidden, dispatched, readback, combined;
    float logits_host[T * E], hidden_host[T * D];
    uint64_t rows;
} fixture;

static moevk_router_info router_info(moevk_routing_mode mode, int projected) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.mode = mode;
    info.sequence_length = 32;
    info.num_experts = E;
    info.top_k = K;
    info.max_tokens = T;
    info.hidden_size = D;
    info.renormalize = mode != MOEVK_MODE_EXPERT_CHOICE;
    info.router_projection = projected;
    return info;
}

static int setup(fixture *f, moevk_routing_mode mode, int projected) {
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->projected = projected;
    moevk_device_info shared = {0};
    moevk_context_device_info(test_context(), &shared);
    if (!app_create(&f->app, shared.name, test_validation())) return 0;
    moevk_context_info info = {.instance = f->app.instance,
                               .physical_device = f->app.physical,
                               .device_handle = f->app.device,
                               .queue_family_index = f->app.family,
                               .get_instance_proc_addr = vkGetInstanceProcAddr};
    moevk_router_info options = router_info(mode, projected);
    if (moevk_context_create(&info, &f->context) != MOEVK_SUCCESS ||
        moevk_router_create(f->context, &options, &f->router) != MOEVK_SUCCESS)
        return 0;
    f->rows = moevk_router_max_dispatched_rows(f->router);
    for (int i = 0; i < T * E; ++i) f->logits_host[i] = rng_normal();
    for (int i = 0; i < T * D; ++i) f->hidden_host[i] = rng_normal();
    VkDeviceSize rows_bytes = (f->rows * D * 4 + 15) & ~(VkDeviceSize)15;
    return app_buffer_create(&f->app, sizeof f->logits_host + sizeof f->hidden_host, &f->staging) &&
           app_buffer_create(&f->app, sizeof f->logits_host, &f->logits) &&
           app_buffer_create(&f->app, sizeof f->hidden_host, &f->hidden) &&
           app_buffer_create(&f->app, rows_bytes, &f->dispatched) &&
           app_buffer_create(&f->app, rows_bytes, &f->readback) &&
           app_buffer_create(&f->app, sizeof f->hidden_host, &f->combined);
}

static void teardown(fixture *f) {
    moevk_router_destroy(f->router);
    moevk_context_destroy(f->context);
    app_buffer *buffers[] = {&f->staging,    &f->logits,   &f->hidden,
                             &f->dispatched, &f->readback, &f->combined};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; ++i)
        if (f->app.device) app_buffer_destroy(&f->app, buffers[i]);
    app_destroy(&f->app);
}

/* What moevk's own calls give on the same inputs (the harness's context, same device). */
typedef struct expected { /* [T, choices]: E columns at most */
    int32_t ids[T * E], slots[T * E];
    float weights[T * E];
    moevk_route_stats stats;
    float *dispatched, *combined;
} expected;

static moevk_result run_directly(const fixture *f, expected *want) {
    moevk_router_info options = router_info(f->mode, f->projected);
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &options, &router);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.hidden = moevk_host_tensor(f->hidden_host);
    if (f->projected)
        input.router_weights = moevk_host_tensor(f->logits_host);
    else
        input.logits = moevk_host_tensor(f->logits_host);
    moevk_route_output output = {.expert_ids = moevk_host_tensor(want->ids),
                                 .weights = moevk_host_tensor(want->weights),
                                 .slots = moevk_host_tensor(want->slots),
                                 .dispatched = moevk_host_tensor(want->dispatched),
                                 .stats = &want->stats};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(want->dispatched),
                          moevk_host_tensor(want->combined));
    moevk_router_destroy(router);
    return r;
}

static void check_recorded(moevk_routing_mode mode, int projected) {
    fixture f;
    int ready = setup(&f, mode, projected);
    expected want = {0};
    want.dispatched = calloc(f.rows ? f.rows * D : 1, 4);
    want.combined = calloc(T * D, 4);
    moevk_result direct = ready ? run_directly(&f, &want) : MOEVK_ERROR_VULKAN;
    moevk_result recorded = MOEVK_ERROR_VULKAN, combined_r = MOEVK_ERROR_VULKAN,
                 read = MOEVK_ERROR_VULKAN;
    int32_t ids[T * E] = {0}, slots[T * E] = {0};
    float weights[T * E] = {0};
    moevk_route_stats stats = {0};
    int same_dispatch = 0, same_combine = 0, volk_intact = 0;
    if (ready && direct == MOEVK_SUCCESS) {
        memcpy(f.staging.mapped, f.logits_host, sizeof f.logits_host);
        memcpy((char *)f.staging.mapped + sizeof f.logits_host, f.hidden_host,
               sizeof f.hidden_host);
        VkCommandBuffer cmd = app_begin(&f.app);
        /* The application's first dispatch writes the logits; a copy brings the hidden states. */
        app_record_copy(&f.app, cmd, f.staging.buffer, f.logits.buffer, sizeof f.logits_host);
        VkBufferCopy region = {sizeof f.logits_host, 0, sizeof f.hidden_host};
        vkCmdCopyBuffer(cmd, f.staging.buffer, f.hidden.buffer, 1, &region);
        app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                    VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
        moevk_route_input info;
        moevk_route_input_init(&info);
        info.num_tokens = T;
        info.hidden = moevk_vulkan_tensor(f.hidden.buffer, 0, 0);
        if (projected)
            info.router_weights = moevk_vulkan_tensor(f.logits.buffer, 0, 0);
        else
            info.logits = moevk_vulkan_tensor(f.logits.buffer, 0, 0);
        moevk_route_output info_output = {.dispatched =
                                              moevk_vulkan_tensor(f.dispatched.buffer, 0, 0)};
        recorded = moevk_route_record(f.router, cmd, &info, &info_output);
        /* The application's second dispatch reads what moevk wrote. */
        app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
        app_record_copy(&f.app, cmd, f.dispatched.buffer, f.readback.buffer, f.readback.size);
        app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                    VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        int submitted = app_submit_and_wait(&f.app, cmd);
        moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                     .weights = moevk_host_tensor(weights),
                                     .slots = moevk_host_tensor(slots),
                                     .stats = &stats};
        if (submitted && recorded == MOEVK_SUCCESS) read = moevk_route_read(f.router, &output);
        same_dispatch = memcmp(f.readback.mapped, want.dispatched, f.rows * D * 4) == 0;

        /* Identity experts: combine the dispatched rows straight back. */
        cmd = app_begin(&f.app);
        combined_r =
            moevk_combine_record(f.router, cmd, moevk_vulkan_tensor(f.dispatched.buffer, 0, 0),
                                 moevk_vulkan_tensor(f.combined.buffer, 0, 0));
        app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                    VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        if (!app_submit_and_wait(&f.app, cmd)) combined_r = MOEVK_ERROR_VULKAN;
        same_combine = memcmp(f.combined.mapped, want.combined, sizeof f.hidden_host) == 0;

        /* The application's volk globals still point at its own device and work. */
        VkFenceCreateInfo fence_info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
        VkFence fence = VK_NULL_HANDLE;
        volk_intact = volkGetLoadedDevice() == f.app.device &&
                      volkGetLoadedInstance() == f.app.instance &&
                      vkCreateFence(f.app.device, &fence_info, NULL, &fence) == VK_SUCCESS;
        if (fence) vkDestroyFence(f.app.device, fence, NULL);
    }
    unsigned messages = f.app.messages;
    teardown(&f);
    messages = f.app.messages > messages ? f.app.messages : messages;
    CHECK(ready, "the test could not set up its application (Vulkan device, buffers, moevk)");
    CHECK(direct == MOEVK_SUCCESS, "moevk_route: %s", moevk_result_string(direct));
    CHECK(recorded == MOEVK_SUCCESS && read == MOEVK_SUCCESS && combined_r == MOEVK_SUCCESS,
          "record %s, read %s, combine %s", moevk_result_string(recorded),
          moevk_result_string(read), moevk_result_string(combined_r));
    CHECK(!memcmp(ids, want.ids, sizeof ids) && !memcmp(slots, want.slots, sizeof slots) &&
              !memcmp(weights, want.weights, sizeof weights),
          "recorded routing differs from moevk_route");
    CHECK(stats.aux_loss == want.stats.aux_loss && stats.dropped == want.stats.dropped,
          "statistics differ");
    CHECK(same_dispatch, "dispatched rows differ");
    CHECK(same_combine, "combined rows differ");
    CHECK(volk_intact, "the application's volk state was disturbed");
    CHECK(messages == 0, "%u validation messages in the application's instance", messages);
    free(want.dispatched);
    free(want.combined);
}

static void test_route_and_combine_recorded_between_application_dispatches(void) {
    check_recorded(MOEVK_MODE_TOKEN, 0);
}
static void test_sequence_mode_recorded(void) { check_recorded(MOEVK_MODE_SEQUENCE, 0); }
static void test_sinkhorn_mode_recorded(void) { check_recorded(MOEVK_MODE_SINKHORN, 0); }
static void test_expert_choice_recorded(void) { check_recorded(MOEVK_MODE_EXPERT_CHOICE, 0); }
/* W_router from the application's buffer: the logits are projected into the router's own. */
static void test_router_projection_recorded(void) { check_recorded(MOEVK_MODE_TOKEN, 1); }

/* The losses and dL/dlogits of a recorded route, recorded after it into the same command buffer
 * with dL/dweights from the application's buffer and dL/dlogits into another: the same bits as
 * moevk_route and moevk_router_losses give on the same inputs. */
static void test_losses_recorded_after_a_recorded_route(void) {
    fixture f;
    int ready = setup(&f, MOEVK_MODE_TOKEN, 0);
    moevk_router_info info = router_info(MOEVK_MODE_TOKEN, 0);
    info.losses = 1;
    moevk_router *router = NULL, *direct = NULL;
    app_buffer grad_weights = {0}, grad_logits = {0};
    moevk_result created =
        ready ? moevk_router_create(f.context, &info, &router) : MOEVK_ERROR_VULKAN;
    if (created == MOEVK_SUCCESS) created = moevk_router_create(test_context(), &info, &direct);
    if (created == MOEVK_SUCCESS && (!app_buffer_create(&f.app, T * K * 4, &grad_weights) ||
                                     !app_buffer_create(&f.app, T * E * 4, &grad_logits)))
        created = MOEVK_ERROR_VULKAN;
    static float dweights[T * K], want_grad[T * E];
    for (int i = 0; i < T * K; ++i) dweights[i] = rng_normal();
    moevk_loss_info loss;
    moevk_loss_info_init(&loss);
    loss.aux_coef = 0.01f;
    loss.z_coef = 0.001f;
    loss.importance_coef = 0.1f;
    loss.entropy_coef = -0.05f;
    moevk_losses want, got;
    moevk_losses_init(&want);
    moevk_losses_init(&got);
    moevk_result direct_r = MOEVK_ERROR_VULKAN, recorded = MOEVK_ERROR_VULKAN,
                 read = MOEVK_ERROR_VULKAN;
    if (created == MOEVK_SUCCESS) {
        moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(f.logits_host)};
        moevk_route_output output = {0};
        direct_r = moevk_route(direct, &input, &output);
        loss.grad_weights = moevk_host_tensor(dweights);
        if (direct_r == MOEVK_SUCCESS)
            direct_r = moevk_router_losses(direct, &loss, &want, moevk_host_tensor(want_grad));

        memcpy(f.staging.mapped, f.logits_host, sizeof f.logits_host);
        memcpy(grad_weights.mapped, dweights, sizeof dweights);
        VkCommandBuffer cmd = app_begin(&f.app);
        app_record_copy(&f.app, cmd, f.staging.buffer, f.logits.buffer, sizeof f.logits_host);
        app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
        moevk_route_input record = {.num_tokens = T,
                                    .logits = moevk_vulkan_tensor(f.logits.buffer, 0, 0)};
        recorded = moevk_route_record(router, cmd, &record, NULL);
        loss.grad_weights = moevk_vulkan_tensor(grad_weights.buffer, 0, 0);
        if (recorded == MOEVK_SUCCESS)
            recorded = moevk_router_losses_record(router, cmd, &loss,
                                                  moevk_vulkan_tensor(grad_logits.buffer, 0, 0));
        app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                    VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        int submitted = app_submit_and_wait(&f.app, cmd);
        if (submitted && recorded == MOEVK_SUCCESS) read = moevk_router_losses_read(router, &got);
    }
    int same_grad =
        read == MOEVK_SUCCESS && !memcmp(grad_logits.mapped, want_grad, sizeof want_grad);
    unsigned messages = f.app.messages;
    if (f.app.device) {
        app_buffer_destroy(&f.app, &grad_weights);
        app_buffer_destroy(&f.app, &grad_logits);
    }
    moevk_router_destroy(router);
    moevk_router_destroy(direct);
    teardown(&f);
    messages = f.app.messages > messages ? f.app.messages : messages;
    CHECK(created == MOEVK_SUCCESS, "set-up: %s", moevk_result_string(created));
    CHECK(direct_r == MOEVK_SUCCESS, "moevk_router_losses: %s", moevk_result_string(direct_r));
    CHECK(recorded == MOEVK_SUCCESS && read == MOEVK_SUCCESS, "record %s, read %s",
          moevk_result_string(recorded), moevk_result_string(read));
    CHECK(!memcmp(&want, &got, sizeof want), "recorded losses differ: total %.9g, want %.9g",
          got.total, want.total);
    CHECK(same_grad, "recorded dL/dlogits differs");
    CHECK(messages == 0, "%u validation messages in the application's instance", messages);
}

/* Noise in a recorded route: the step's counter goes into the application's command buffer
 * with the route, so routes recorded at step 5, then at step 7 into a second command buffer,
 * draw what moevk_route draws at those steps. */
static moevk_router_info noisy_info(void) {
    moevk_router_info info = router_info(MOEVK_MODE_TOKEN, 0);
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 0.8f;
    return info;
}

/* The ids and weights of a route, into the host. */
static moevk_route_output ids_and_weights(int32_t *ids, float *weights) {
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.expert_ids = moevk_host_tensor(ids);
    output.weights = moevk_host_tensor(weights);
    return output;
}

static moevk_result noisy_direct(const float *logits, uint32_t step, int32_t *ids, float *weights) {
    moevk_router_info info = noisy_info();
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.step = step;
    input.logits = moevk_host_tensor((void *)logits);
    moevk_route_output output = ids_and_weights(ids, weights);
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    return r;
}

static moevk_result noisy_recorded(fixture *f, moevk_router *router, uint32_t step, int32_t *ids,
                                   float *weights) {
    memcpy(f->staging.mapped, f->logits_host, sizeof f->logits_host);
    VkCommandBuffer cmd = app_begin(&f->app);
    app_record_copy(&f->app, cmd, f->staging.buffer, f->logits.buffer, sizeof f->logits_host);
    app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
    moevk_route_input record;
    moevk_route_input_init(&record);
    record.num_tokens = T;
    record.step = step;
    record.logits = moevk_vulkan_tensor(f->logits.buffer, 0, 0);
    moevk_result r = moevk_route_record(router, cmd, &record, NULL);
    app_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    if (!app_submit_and_wait(&f->app, cmd) && r == MOEVK_SUCCESS) r = MOEVK_ERROR_VULKAN;
    moevk_route_output output = ids_and_weights(ids, weights);
    return r == MOEVK_SUCCESS ? moevk_route_read(router, &output) : r;
}

static void test_noise_steps_recorded(void) {
    fixture f;
    int ready = setup(&f, MOEVK_MODE_TOKEN, 0);
    moevk_router_info info = noisy_info();
    moevk_router *router = NULL;
    moevk_result r = ready ? moevk_router_create(f.context, &info, &router) : MOEVK_ERROR_VULKAN;
    static int32_t want_ids[2][T * K], got_ids[2][T * K];
    static float want_weights[2][T * K], got_weights[2][T * K];
    if (r == MOEVK_SUCCESS) r = noisy_direct(f.logits_host, 5, want_ids[0], want_weights[0]);
    if (r == MOEVK_SUCCESS) r = noisy_direct(f.logits_host, 7, want_ids[1], want_weights[1]);
    if (r == MOEVK_SUCCESS) r = noisy_recorded(&f, router, 5, got_ids[0], got_weights[0]);
    if (r == MOEVK_SUCCESS) r = noisy_recorded(&f, router, 7, got_ids[1], got_weights[1]);
    unsigned messages = f.app.messages;
    moevk_router_destroy(router);
    teardown(&f);
    messages = f.app.messages > messages ? f.app.messages : messages;
    CHECK(r == MOEVK_SUCCESS, "noisy routes: %s", moevk_result_string(r));
    for (int i = 0; i < 2; ++i)
        CHECK(!memcmp(got_ids[i], want_ids[i], sizeof got_ids[i]) &&
                  !memcmp(got_weights[i], want_weights[i], sizeof got_weights[i]),
              "the route recorded at step %d differs from moevk_route's", i ? 7 : 5);
    CHECK(memcmp(want_ids[0], want_ids[1], sizeof want_ids[0]) != 0,
          "steps 5 and 7 drew the same noise");
    CHECK(messages == 0, "%u validation messages in the application's instance", messages);
}

/* A learned noise std needs W_noise uploaded, which a recording cannot do: refused. */
static void test_learned_noise_is_refused(void) {
    fixture f;
    int ready = setup(&f, MOEVK_MODE_TOKEN, 0);
    moevk_router_info info = router_info(MOEVK_MODE_TOKEN, 0);
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.learned_noise = 1;
    moevk_router *router = NULL;
    moevk_result created =
        ready ? moevk_router_create(f.context, &info, &router) : MOEVK_ERROR_VULKAN;
    moevk_result recorded = MOEVK_ERROR_VULKAN;
    if (created == MOEVK_SUCCESS) {
        VkCommandBuffer cmd = app_begin(&f.app);
        moevk_route_input record = {.num_tokens = T,
                                    .logits = moevk_vulkan_tensor(f.logits.buffer, 0, 0),
                                    .hidden = moevk_vulkan_tensor(f.hidden.buffer, 0, 0)};
        moevk_route_output record_output = {.dispatched =
                                                moevk_vulkan_tensor(f.dispatched.buffer, 0, 0)};
        recorded = moevk_route_record(router, cmd, &record, &record_output);
        app_submit_and_wait(&f.app, cmd);
    }
    moevk_router_destroy(router);
    teardown(&f);
    CHECK(created == MOEVK_SUCCESS, "router: %s", moevk_result_string(created));
    CHECK(recorded == MOEVK_ERROR_UNSUPPORTED, "record -> %s", moevk_result_string(recorded));
}

static const test_case TESTS[] = {
    TEST(learned_noise_is_refused),
    TEST(noise_steps_recorded),
    TEST(route_and_combine_recorded_between_application_dispatches),
    TEST(sequence_mode_recorded),
    TEST(sinkhorn_mode_recorded),
    TEST(expert_choice_recorded),
    TEST(router_projection_recorded),
    TEST(losses_recorded_after_a_recorded_route),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
