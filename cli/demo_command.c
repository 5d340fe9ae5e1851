/* `moevk demo`: routes a random batch on the default device (lavapipe where there is no GPU),
 * runs identity experts, combines, checks the result against the CPU reference, then runs the
 * same hidden states through a whole MoE layer on the device, and prints what happened. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "demo_gguf.h"
#include "demo_layer.h"
#include "moevk_reference.h"
#include "option_table.h"
#include "options.h"

static const char *type_name(VkPhysicalDeviceType type) {
    switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU";
    default: return "other";
    }
}

/* A small deterministic generator: the demo shows the same batch every run. */
static uint32_t demo_state = 12345u;
static float demo_normal(void) {
    float sum = 0;
    for (int i = 0; i < 4; ++i) {
        demo_state = demo_state * 1664525u + 1013904223u;
        sum += (float)(demo_state >> 8) / 16777216.0f - 0.5f;
    }
    return sum * 1.7320508f;
}

typedef struct demo_args {
    uint32_t tokens, experts, k, hidden, intermediate;
    const char *device;
} demo_args;

#define OPTION_ARGS demo_args
static const option DEMO_OPTIONS[] = {
    OPT_TEXT("--device", "N|NAME", "the Vulkan device (default: the best one)", device),
    OPT_UINT("--tokens", "T", "tokens in the batch (default 4096)", tokens, 1, 1 << 22, NULL),
    OPT_UINT("--experts", "E", "experts (default 16)", experts, 1, MOEVK_MAX_EXPERTS, NULL),
    OPT_UINT("--k", "K", "experts per token (default 2)", k, 1, MOEVK_MAX_TOP_K, NULL),
    OPT_UINT("--hidden", "D", "hidden size (default 256)", hidden, 1, 1 << 16, NULL),
    OPT_UINT("--intermediate", "F", "the layer's expert width (default 256)", intermediate, 1,
             1 << 16, NULL),
};

int command_demo(int argc, char **argv) {
    demo_args args = {.tokens = 4096, .experts = 16, .k = 2, .hidden = 256, .intermediate = 256};
    int parsed = options_parse("demo",
                               "[options]\n  Routes a random batch on the device, combines it, "
                               "runs it through a SwiGLU MoE layer\n  and checks both against "
                               "the CPU reference.",
                               DEMO_OPTIONS, OPTION_COUNT(DEMO_OPTIONS), argc, argv, &args);
    if (parsed != 1) return parsed < 0 ? 0 : 2;
    uint32_t T = args.tokens, E = args.experts, k = args.k, d = args.hidden;
    const char *device_selector = args.device;
    moevk_context_info context_info = {.device = device_selector};
    moevk_context *context = NULL;
    double start = demo_seconds_now();
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk demo: no Vulkan device: %s\n", moevk_result_string(r));
        return 1;
    }
    moevk_device_info device = {0};
    moevk_context_device_info(context, &device);
    printf("moevk %s on %s (%s, %s), subgroup size %u\n", moevk_version_string(), device.name,
           type_name(device.type), device.driver_info, device.subgroup_size);

    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = k;
    info.max_tokens = T;
    info.hidden_size = d;
    info.renormalize = 1;
    moevk_router *router = NULL;
    r = moevk_router_create(context, &info, &router);
    double created = demo_seconds_now();
    int status = 1;
    float *logits = malloc((size_t)T * E * 4), *hidden = malloc((size_t)T * d * 4);
    float *weights = malloc((size_t)T * k * 4), *combined = malloc((size_t)T * d * 4);
    float *reference = malloc((size_t)T * d * 4);
    int32_t *ids = malloc((size_t)T * k * 4), *slots = malloc((size_t)T * k * 4);
    int32_t *rows = malloc((size_t)T * k * 4);
    uint32_t *counts = malloc(E * 4), *counts_before = malloc(E * 4);
    float *dispatched = NULL;
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk demo: %s\n", moevk_context_last_error(context));
        goto done;
    }
    dispatched = malloc(moevk_router_max_dispatched_rows(router) * d * 4);
    if (!logits || !hidden || !weights || !combined || !reference || !ids || !slots || !rows ||
        !counts || !counts_before || !dispatched) {
        fprintf(stderr, "moevk demo: out of host memory\n");
        goto done;
    }
    /* Expert e is preferred a little more than e + 1, so the later experts see fewer tokens. */
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t e = 0; e < E; ++e) logits[(size_t)t * E + e] = demo_normal() - 0.05f * e;
    for (size_t i = 0; i < (size_t)T * d; ++i) hidden[i] = demo_normal();

    moevk_route_input input = {.num_tokens = T,
                               .logits = moevk_host_tensor(logits),
                               .bias = moevk_host_tensor(NULL),
                               .hidden = moevk_host_tensor(hidden)};
    moevk_route_stats stats = {0};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .weights = moevk_host_tensor(weights),
                                 .slots = moevk_host_tensor(slots),
                                 .counts = moevk_host_tensor(counts),
                                 .counts_before = moevk_host_tensor(counts_before),
                                 .offsets = moevk_host_tensor(NULL),
                                 .dispatched = moevk_host_tensor(dispatched),
                                 .stats = &stats};
    double routed_at = demo_seconds_now();
    r = moevk_route(router, &input, &output);
    double routed = demo_seconds_now();
    /* Identity experts: each expert hands its rows back unchanged. */
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(dispatched), moevk_host_tensor(combined));
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk demo: %s\n", moevk_context_last_error(context));
        goto done;
    }
    for (size_t i = 0; i < (size_t)T * k; ++i)
        rows[i] = slots[i] < 0 ? -1 : ids[i] * (int32_t)stats.capacity + slots[i];
    ref_combine(&info, T, rows, weights, dispatched, reference);
    double worst = 0;
    for (size_t i = 0; i < (size_t)T * d; ++i) {
        double diff = fabs(combined[i] - reference[i]) / (fabs(reference[i]) + 1e-6);
        if (diff > worst) worst = diff;
    }

    demo_layer_result layer = {0};
    r = demo_layer(context, &info, args.intermediate, hidden, &layer);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk demo: the layer: %s\n", moevk_context_last_error(context));
        free(layer.counts);
        goto done;
    }
    printf("routed T=%u tokens to E=%u experts, top-%u, d=%u, capacity %u per expert\n", T, E, k, d,
           stats.capacity);
    printf("  context + router %.1f ms, first route %.1f ms (wall clock, uploads included)\n",
           (created - start) * 1e3, (routed - routed_at) * 1e3);
    printf("  expert   chose   kept   layer\n");
    for (uint32_t e = 0; e < E; ++e)
        printf("  %6u %7u %6u %7u\n", e, counts_before[e], counts[e], layer.counts[e]);
    printf("  dropped %llu of %llu assignments (%.2f%%)\n", (unsigned long long)stats.dropped,
           (unsigned long long)stats.assignments, 100.0 * stats.drop_fraction);
    printf("  aux_loss %.6f  z_loss %.6f  entropy %.6f\n", stats.aux_loss, stats.z_loss,
           stats.entropy);
    printf("  combine through identity experts vs CPU reference: worst relative difference %.2e\n",
           worst);
    printf("the same hidden states through an MoE layer on the device (random W_g, SwiGLU experts "
           "of f=%u,\ncapacity factor 1.25; its own route: the column 'layer' above):\n",
           args.intermediate);
    printf("  forward %.1f ms (wall clock, uploads and downloads included), experts %.2f GFLOP/s\n",
           layer.seconds * 1e3, layer.flops / layer.seconds * 1e-9);
    printf("  output checksum %.6f; first %u tokens vs CPU reference: worst difference %.2e of "
           "the magnitude\n",
           layer.checksum, layer.checked_tokens, layer.worst);
    free(layer.counts);
    status = worst < 1e-5 && layer.worst < 1e-5 ? 0 : 1;
#ifdef MOEVK_CLI_LAYER
    if (demo_gguf(device_selector) != 0) status = 1;
#endif
    printf(status == 0 ? "demo: ok\n" : "demo: MISMATCH\n");
done:
    free(logits);
    free(hidden);
    free(weights);
    free(combined);
    free(reference);
    free(ids);
    free(slots);
    free(rows);
    free(counts);
    free(counts_before);
    free(dispatched);
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return status;
}
