/* moevk-bench --back-to-back: routes timed as the MoE layers of a model see them. A GPU's clock
 * drops between synchronous submissions (an H100 ran at 345 MHz between routes, 1980 MHz under
 * load), so a route timed alone can be slower than the same route among others. LAYERS routers
 * (one per MoE layer) record route + combine one after another into one command buffer, with
 * the barrier between layers an application records; against each layer's route + combine
 * recorded alone, submitted and waited for before the next. Both are the same recordings timed
 * by the bench's own timestamps: medians of the time per layer. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define LAYERS 8

typedef struct layer_shape {
    uint32_t T, E, k, d;
} layer_shape;

static const layer_shape SHAPES[] = {
    {4096, 64, 2, 1024}, {16384, 64, 2, 1024}, {4096, 256, 8, 1024}};
static const layer_shape QUICK_SHAPES[] = {{1024, 64, 2, 256}, {4096, 64, 2, 1024}};

typedef struct app_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
} app_buffer;

typedef struct layers_run {
    const layer_shape *shape;
    moevk_router *routers[LAYERS];
    app_buffer logits, hidden, rows, combined;
    int first, count; /* the layers a recording holds */
    moevk_result result;
} layers_run;

static int buffer_make(const bench_device *device, VkDeviceSize size, int host_visible,
                       app_buffer *out) {
    out->size = size;
    return bench_buffer_make(device, size, host_visible, &out->buffer, &out->memory);
}

static void buffer_free(const bench_device *device, app_buffer *b) {
    if (b->buffer) vkDestroyBuffer(device->device, b->buffer, NULL);
    if (b->memory) vkFreeMemory(device->device, b->memory, NULL);
    memset(b, 0, sizeof *b);
}

static void compute_barrier(VkCommandBuffer cmd) {
    VkMemoryBarrier barrier = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                               .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                               .dstAccessMask =
                                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &barrier, 0, NULL, 0, NULL);
}

static void record_layers(VkCommandBuffer cmd, void *user) {
    layers_run *run = user;
    for (int i = run->first; i < run->first + run->count && run->result == MOEVK_SUCCESS; ++i) {
        moevk_route_input input;
        moevk_route_input_init(&input);
        input.num_tokens = run->shape->T;
        input.logits = moevk_vulkan_tensor(run->logits.buffer, 0, 0);
        input.hidden = moevk_vulkan_tensor(run->hidden.buffer, 0, 0);
        moevk_route_output output;
        moevk_route_output_init(&output);
        output.dispatched = moevk_vulkan_tensor(run->rows.buffer, 0, 0);
        run->result = moevk_route_record(run->routers[i], cmd, &input, &output);
        compute_barrier(cmd);
        if (run->result == MOEVK_SUCCESS)
            run->result = moevk_combine_record(run->routers[i], cmd,
                                               moevk_vulkan_tensor(run->rows.buffer, 0, 0),
                                               moevk_vulkan_tensor(run->combined.buffer, 0, 0));
        compute_barrier(cmd); /* the next layer writes the same rows */
    }
}

typedef struct upload {
    app_buffer *from, *to;
} upload;

static void record_upload(VkCommandBuffer cmd, void *user) {
    upload *u = user;
    VkBufferCopy region = {0, 0, u->to->size};
    vkCmdCopyBuffer(cmd, u->from->buffer, u->to->buffer, 1, &region);
}

/* Fresh uniform values in [-2, 2) into a device buffer, through a host-visible one. */
static int fill_buffer(const bench_device *device, bench_timer *timer, app_buffer *to,
                       uint32_t seed) {
    app_buffer staging = {0};
    void *mapped = NULL;
    int ok = buffer_make(device, to->size, 1, &staging) &&
             vkMapMemory(device->device, staging.memory, 0, to->size, 0, &mapped) == VK_SUCCESS;
    uint32_t state = seed | 1u;
    for (VkDeviceSize i = 0; ok && i < to->size / 4; ++i) {
        state ^= state << 13, state ^= state >> 17, state ^= state << 5;
        ((float *)mapped)[i] = (float)(state >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    upload u = {&staging, to};
    if (ok) ok = bench_timed_ms(device, timer, record_upload, &u) >= 0;
    buffer_free(device, &staging);
    return ok;
}

static int layers_open(const bench_device *device, moevk_context *context, bench_timer *timer,
                       const layer_shape *s, layers_run *run) {
    memset(run, 0, sizeof *run);
    run->shape = s;
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = s->E;
    info.top_k = s->k;
    info.max_tokens = s->T;
    info.hidden_size = s->d;
    info.renormalize = 1;
    for (int i = 0; i < LAYERS; ++i)
        if (moevk_router_create(context, &info, &run->routers[i]) != MOEVK_SUCCESS) return 0;
    uint64_t rows = moevk_router_max_dispatched_rows(run->routers[0]);
    return buffer_make(device, (uint64_t)s->T * s->E * 4, 0, &run->logits) &&
           buffer_make(device, (uint64_t)s->T * s->d * 4, 0, &run->hidden) &&
           buffer_make(device, rows * s->d * 4, 0, &run->rows) &&
           buffer_make(device, (uint64_t)s->T * s->d * 4, 0, &run->combined) &&
           fill_buffer(device, timer, &run->logits, 2463534242u) &&
           fill_buffer(device, timer, &run->hidden, 88675123u) &&
           fill_buffer(device, timer, &run->rows, 521288629u);
}

static void layers_close(const bench_device *device, layers_run *run) {
    for (int i = 0; i < LAYERS; ++i) moevk_router_destroy(run->routers[i]);
    buffer_free(device, &run->logits);
    buffer_free(device, &run->hidden);
    buffer_free(device, &run->rows);
    buffer_free(device, &run->combined);
}

/* GPU ms per layer of a recording of run's layers [first, first + count). */
static double time_layers(const bench_device *device, bench_timer *timer, layers_run *run,
                          int first, int count) {
    run->first = first;
    run->count = count;
    double ms = bench_timed_ms(device, timer, record_layers, run);
    return run->result == MOEVK_SUCCESS ? ms / count : -1.0;
}

/* The medians (alone, back to back) of a shape; 0 when it could not run. */
static int run_shape(const bench_device *device, moevk_context *context, const layer_shape *s,
                     int warmup, int repeats, double medians[2]) {
    bench_timer timer = {0};
    layers_run run = {0};
    double *alone = calloc((size_t)repeats * LAYERS, sizeof(double));
    double *together = calloc((size_t)repeats, sizeof(double));
    int ok = alone && together && bench_timer_open(device, &timer) &&
             layers_open(device, context, &timer, s, &run);
    for (int i = 0; ok && i < warmup + repeats; ++i) {
        double b2b = time_layers(device, &timer, &run, 0, LAYERS);
        ok = b2b >= 0;
        if (ok && i >= warmup) together[i - warmup] = b2b;
        for (int layer = 0; ok && layer < LAYERS; ++layer) {
            double one = time_layers(device, &timer, &run, layer, 1);
            ok = one >= 0;
            if (ok && i >= warmup) alone[(i - warmup) * LAYERS + layer] = one;
        }
    }
    if (ok) {
        medians[0] = bench_median(alone, repeats * LAYERS);
        medians[1] = bench_median(together, repeats);
    }
    layers_close(device, &run);
    bench_timer_close(device, &timer);
    free(alone);
    free(together);
    return ok;
}

void run_back_to_back(const bench_device *device, moevk_context *context, FILE *out, int quick,
                      int warmup, int repeats) {
    const layer_shape *shapes = quick ? QUICK_SHAPES : SHAPES;
    int count = quick ? (int)(sizeof QUICK_SHAPES / sizeof QUICK_SHAPES[0])
                      : (int)(sizeof SHAPES / sizeof SHAPES[0]);
    if (device->properties.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU && repeats > 5) repeats = 5;
    fprintf(out,
            "\nBack to back: route + combine of %d MoE layers in one submission (as a model runs "
            "them) against each layer's alone, submitted and waited for; GPU ms per layer, "
            "medians of %d\n",
            LAYERS, repeats);
    fprintf(out, "%7s %4s %2s %5s | %10s %13s %7s\n", "T", "E", "k", "d", "alone ms",
            "back-to-back", "ratio");
    for (int i = 0; i < count; ++i) {
        const layer_shape *s = &shapes[i];
        fprintf(stderr, "\r[back to back %d/%d] T=%u E=%u        ", i + 1, count, s->T, s->E);
        double medians[2] = {0, 0};
        if (!run_shape(device, context, s, warmup, repeats, medians)) {
            fprintf(out, "%7u %4u %2u %5u | skipped: %s\n", s->T, s->E, s->k, s->d,
                    moevk_context_last_error(context));
            continue;
        }
        fprintf(out, "%7u %4u %2u %5u | %10.3f %13.3f %7.2f\n", s->T, s->E, s->k, s->d, medians[0],
                medians[1], medians[1] > 0 ? medians[0] / medians[1] : 0);
    }
    fprintf(stderr, "\n");
}
