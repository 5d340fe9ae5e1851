/* moevk-bench --backward: what training a layer costs beside its forward. Each case's layer is
 * made trainable and runs forward then backward, each call waited for, in turns, so that the
 * two are timed side by side under the same clocks; their wall-clock medians and the ratio.
 * (The backward has no GPU timestamps of its own yet; on a GPU the wall clock includes one
 * submission's overhead each, small beside these sizes' products.) */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "monotonic_clock.h"

enum { MAX_RUNS = 64 };

/* Weights of a fixed pattern: the backward's cost does not depend on their values. */
static moevk_result fill(moevk_layer *layer, moevk_layer_weight which, uint32_t experts,
                         uint64_t count, moevk_dtype type) {
    uint64_t bytes = count * (type == MOEVK_DTYPE_F32 ? 4 : 2);
    uint16_t *data = malloc(bytes + 4);
    if (!data) return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    for (uint64_t i = 0; i < bytes / 2; ++i)
        data[i] = type == MOEVK_DTYPE_F32 ? (uint16_t)(i % 2 ? 0x3C00 + i % 97 : 0)
                                          : (uint16_t)(0x2C00 + i % 911);
    moevk_result r = moevk_layer_set_weights(layer, which, 0, experts, moevk_host_tensor(data));
    free(data);
    return r;
}

void run_backward_case(moevk_context *context, layer_case *c, int warmup, int repeats) {
    if (repeats > MAX_RUNS) repeats = MAX_RUNS;
    if (c->weight_type > MOEVK_DTYPE_BF16 || c->host_weights) {
        snprintf(c->backward_skipped, sizeof c->backward_skipped,
                 "training takes f32, f16 and bf16 weights in device memory");
        return;
    }
    moevk_router_info router;
    moevk_layer_info info;
    layer_case_infos(c, &router, &info);
    info.trainable = 1;
    moevk_layer *layer = NULL;
    moevk_buffer *hidden = NULL, *output = NULL, *grad = NULL, *grad_hidden = NULL;
    uint64_t bytes = (uint64_t)c->T * c->d * 4, E = c->E, d = c->d, f = c->f, fs = c->fs;
    moevk_result r = moevk_layer_create(context, &info, &layer);
    const struct {
        moevk_layer_weight which;
        uint32_t experts;
        uint64_t count;
        moevk_dtype type;
    } weights[] = {{MOEVK_WEIGHT_ROUTER, 1, E * d, MOEVK_DTYPE_F32},
                   {MOEVK_WEIGHT_GATE, c->E, E * f * d, c->weight_type},
                   {MOEVK_WEIGHT_UP, c->E, E * f * d, c->weight_type},
                   {MOEVK_WEIGHT_DOWN, c->E, E * d * f, c->weight_type},
                   {MOEVK_WEIGHT_SHARED_GATE, 1, fs * d, c->weight_type},
                   {MOEVK_WEIGHT_SHARED_UP, 1, fs * d, c->weight_type},
                   {MOEVK_WEIGHT_SHARED_DOWN, 1, d * fs, c->weight_type}};
    for (size_t i = 0; i < sizeof weights / sizeof weights[0] && r == MOEVK_SUCCESS; ++i)
        if (weights[i].count)
            r = fill(layer, weights[i].which, weights[i].experts, weights[i].count,
                     weights[i].type);
    moevk_buffer **buffers[4] = {&hidden, &output, &grad, &grad_hidden};
    for (int i = 0; i < 4 && r == MOEVK_SUCCESS; ++i)
        r = moevk_buffer_create(context, bytes, buffers[i]);
    float *x = r == MOEVK_SUCCESS ? malloc(bytes + 4) : NULL;
    for (uint64_t i = 0; x && i < bytes / 4; ++i)
        x[i] = (float)((i * 2654435761u) % 1000) / 500 - 1;
    if (r == MOEVK_SUCCESS)
        r = x ? moevk_buffer_write(hidden, 0, x, bytes) : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(grad, 0, x, bytes);
    free(x);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    input.hidden = moevk_buffer_tensor(hidden, 0);
    moevk_layer_output out;
    moevk_layer_output_init(&out);
    out.output = moevk_buffer_tensor(output, 0);
    moevk_layer_backward_info backward;
    moevk_layer_backward_info_init(&backward);
    backward.grad_output = moevk_buffer_tensor(grad, 0);
    backward.grad_hidden = moevk_buffer_tensor(grad_hidden, 0);
    double forward_ms[MAX_RUNS], backward_ms[MAX_RUNS];
    for (int i = 0; r == MOEVK_SUCCESS && i < warmup + repeats; ++i) {
        double t0 = monotonic_seconds();
        r = moevk_layer_forward(layer, &input, &out);
        double t1 = monotonic_seconds();
        if (r == MOEVK_SUCCESS) r = moevk_layer_backward(layer, &backward);
        double t2 = monotonic_seconds();
        if (i >= warmup) {
            forward_ms[i - warmup] = (t1 - t0) * 1e3;
            backward_ms[i - warmup] = (t2 - t1) * 1e3;
        }
    }
    if (r == MOEVK_SUCCESS) {
        c->backward_ran = 1;
        c->forward_wall_ms = bench_median(forward_ms, repeats);
        c->backward_wall_ms = bench_median(backward_ms, repeats);
    } else {
        snprintf(c->backward_skipped, sizeof c->backward_skipped, "%s: %s", moevk_result_string(r),
                 moevk_context_last_error(context));
    }
    for (int i = 0; i < 4; ++i) moevk_buffer_destroy(*buffers[i]);
    moevk_layer_destroy(layer);
}

void report_backward_table(FILE *out, const layer_case *cases, int count) {
    fprintf(
        out,
        "\nThe layer's backward beside its forward (a trainable layer, SwiGLU, dropless): "
        "wall-clock medians in ms of each call waited for, timed in turns; the backward "
        "makes dL/dh, dL/d(rows) and the three weight gradients (six products where the forward "
        "has three), at the pre-activations the forward kept\n");
    fprintf(out, "| model | T | E | k | d | f | shared f | weights | forward | backward | "
                 "backward / forward |\n");
    fprintf(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n");
    for (int i = 0; i < count; ++i) {
        const layer_case *c = &cases[i];
        fprintf(out, "| %s | %u | %u | %u | %u | %u | %u | %s | ", c->model, c->T, c->E, c->k, c->d,
                c->f, c->fs, dtype_name(c->weight_type));
        if (!c->backward_ran)
            fprintf(out, "skipped: %s | | |\n", c->backward_skipped);
        else
            fprintf(out, "%.3f | %.3f | %.2f |\n", c->forward_wall_ms, c->backward_wall_ms,
                    c->forward_wall_ms > 0 ? c->backward_wall_ms / c->forward_wall_ms : 0);
    }
}
