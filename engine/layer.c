/* moevk_layer: a router made with the layer's FFN shape (its experts', shared experts' and
 * layer combine's stages and buffers), the weights written into those buffers, and the forward
 * pass: the route and the layer's stages in one submission (route.c, route_submit). */
#include <string.h>

#include "layer.h"
#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

/* The layer's checks past the router's own. */
static moevk_result check_layer_info(moevk_context *context, const moevk_layer_info *info,
                                     const moevk_router_info *router) {
    if (router->hidden_size == 0) REJECT("a layer needs the router's hidden_size > 0");
    if (info->intermediate_size == 0) REJECT("intermediate_size must be >= 1");
    if ((unsigned)info->activation > MOEVK_ACTIVATION_RELU)
        REJECT("activation %d is not a moevk_activation", (int)info->activation);
    if ((unsigned)info->weight_type > MOEVK_DTYPE_Q5_K)
        REJECT("weight_type %d is not a moevk_dtype", (int)info->weight_type);
    if (info->separate_down_type && (unsigned)info->down_weight_type > MOEVK_DTYPE_Q5_K)
        REJECT("down_weight_type %d is not a moevk_dtype", (int)info->down_weight_type);
    /* A block format quantizes along each row: gate's and up's rows are d long, down's f (fs). */
    moevk_dtype down = info->separate_down_type ? info->down_weight_type : info->weight_type;
    struct {
        const char *name;
        uint32_t width;
        moevk_dtype type;
    } rows[3] = {{"hidden_size", router->hidden_size, info->weight_type},
                 {"intermediate_size", info->intermediate_size, down},
                 {"shared_intermediate_size", info->shared_intermediate_size, down}};
    static const char *const TYPES[] = {"F32",  "F16",  "BF16", "Q8_0", "Q4_0",
                                        "Q4_K", "Q6_K", "Q5_0", "Q5_K"};
    for (int i = 0; i < 3; ++i)
        if (rows[i].width % dtype_block_weights(rows[i].type))
            REJECT("%s %u is not whole blocks of %u weights (%s: each matrix row is whole blocks)",
                   rows[i].name, rows[i].width, dtype_block_weights(rows[i].type),
                   TYPES[rows[i].type]);
    if (info->shared_gate && info->shared_intermediate_size == 0)
        REJECT("shared_gate needs shared experts (shared_intermediate_size > 0)");
    if (info->reserved_0) REJECT("reserved_0 must be zero");
    if (info->trainable) {
        moevk_dtype down = info->separate_down_type ? info->down_weight_type : info->weight_type;
        if (info->weight_type > MOEVK_DTYPE_BF16 || down > MOEVK_DTYPE_BF16)
            REJECT("a trainable layer's weights are F32, F16 or BF16, not a block format");
        if (router->mode != MOEVK_MODE_TOKEN)
            REJECT("a trainable layer routes in the TOKEN mode: the router's backward covers "
                   "that mode only");
    }
    return MOEVK_SUCCESS;
}

moevk_result layer_create(moevk_context *context, const moevk_layer_info *caller_info, int parts,
                          moevk_layer **out) {
    if (!out) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!context) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (!caller_info) REJECT("info is NULL");
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    moevk_result r = SIZED_READ(context, moevk_layer_info, caller_info, &info);
    if (r != MOEVK_SUCCESS) return r;
    if (!info.router) REJECT("info.router is NULL: a layer needs its routing options");
    moevk_router_info router_info;
    r = router_read_info(context, info.router, &router_info);
    if (r == MOEVK_SUCCESS) r = check_layer_info(context, &info, &router_info);
    if (r != MOEVK_SUCCESS) return r;
    router_info.router_projection = 1;
    if (info.trainable) router_info.losses = 1; /* the router's backward, for dL/dlogits */
    layer_shape shape = {.active = 1,
                         .intermediate_size = info.intermediate_size,
                         .shared_intermediate_size = info.shared_intermediate_size,
                         .activation = info.activation,
                         .weight_type = info.weight_type,
                         .down_type =
                             info.separate_down_type ? info.down_weight_type : info.weight_type,
                         .biases = info.biases != 0,
                         .shared_gate = info.shared_gate != 0,
                         .host_weights = info.host_weights != 0,
                         .trainable = info.trainable != 0,
                         .parts = parts};
    moevk_layer *layer = context_calloc(context, 1, sizeof *layer);
    if (!layer) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "layer");
    layer->context = context;
    r = router_create(context, &router_info, &shape, &layer->router);
    if (r == MOEVK_SUCCESS) {
        /* Weights nobody sets are zeros, not whatever the memory held. */
        const gpu_buffer *weights[BINDING_COUNT];
        int count = 0;
        for (int b = BINDING_EXPERT_GATE; b <= BINDING_SHARED_SCALE; ++b)
            weights[count++] = &layer->router->buffers[b];
        weights[count++] = &layer->router->buffers[BINDING_ROUTER_WEIGHTS];
        /* And gradients and the optimizer's moments start at zero. */
        for (int b = BINDING_GRAD_EXPERT_GATE; shape.trainable && b <= BINDING_OPT_V; ++b)
            weights[count++] = &layer->router->buffers[b];
        for (int b = BINDING_GRAD_SHARED_GATE;
             shape.trainable && b <= BINDING_GRAD_SHARED_EXPERT_GATE; ++b)
            weights[count++] = &layer->router->buffers[b];
        r = gpu_buffers_zero(context, weights, count);
    }
    if (r != MOEVK_SUCCESS) {
        moevk_layer_destroy(layer);
        return r;
    }
    *out = layer;
    return MOEVK_SUCCESS;
}

moevk_result moevk_layer_create(moevk_context *context, const moevk_layer_info *info,
                                moevk_layer **out) {
    return layer_create(context, info, PARTS_NONE, out);
}

void moevk_layer_destroy(moevk_layer *layer) {
    if (!layer) return;
    moevk_router_destroy(layer->router);
    host_free(layer->context->allocator, layer);
}

moevk_router *moevk_layer_router(moevk_layer *layer) { return layer ? layer->router : NULL; }

void record_layer(moevk_router *router, const route_plan *params, int route_only) {
    record_reset_timestamps(router, TIMESTAMP_LAYER_END, 3);
    if (!route_only) record_experts(router, params);
    record_timestamp(router, TIMESTAMP_AFTER_EXPERTS);
    record_shared_experts(router, params);
    record_timestamp(router, TIMESTAMP_AFTER_SHARED_EXPERTS);
    if (!route_only) record_layer_combine(router, params);
    record_timestamp(router, TIMESTAMP_LAYER_END);
}

static weight_place place_of(const moevk_router *router, moevk_layer_weight which) {
    const layer_shape *layer = &router->layer;
    uint64_t E = router->info.num_experts, d = router->info.hidden_size;
    uint64_t f = layer->intermediate_size, fs = layer->shared_intermediate_size;
    moevk_dtype wt = layer->weight_type, dt = layer->down_type, f32 = MOEVK_DTYPE_F32;
    int swiglu = layer->activation == MOEVK_ACTIVATION_SWIGLU, shared = fs > 0;
    switch (which) {
    case MOEVK_WEIGHT_ROUTER:
        return (weight_place){BINDING_ROUTER_WEIGHTS, 0, E * d, 1, f32, 1, "ROUTER"};
    case MOEVK_WEIGHT_GATE:
        return (weight_place){BINDING_EXPERT_GATE, 0, f * d, E, wt, swiglu, "GATE"};
    case MOEVK_WEIGHT_UP: return (weight_place){BINDING_EXPERT_UP, 0, f * d, E, wt, 1, "UP"};
    case MOEVK_WEIGHT_DOWN: return (weight_place){BINDING_EXPERT_DOWN, 0, d * f, E, dt, 1, "DOWN"};
    case MOEVK_WEIGHT_GATE_BIAS:
        return (weight_place){BINDING_EXPERT_BIAS,     0,          f, E, f32,
                              layer->biases && swiglu, "GATE_BIAS"};
    case MOEVK_WEIGHT_UP_BIAS:
        return (weight_place){BINDING_EXPERT_BIAS, E * f * 4, f, E, f32, layer->biases, "UP_BIAS"};
    case MOEVK_WEIGHT_DOWN_BIAS:
        return (weight_place){BINDING_EXPERT_BIAS, 2 * E * f * 4, d, E, f32,
                              layer->biases,       "DOWN_BIAS"};
    case MOEVK_WEIGHT_SHARED_GATE:
        return (weight_place){BINDING_SHARED_GATE, 0, fs * d, 1, wt, shared && swiglu,
                              "SHARED_GATE"};
    case MOEVK_WEIGHT_SHARED_UP:
        return (weight_place){BINDING_SHARED_UP, 0, fs * d, 1, wt, shared, "SHARED_UP"};
    case MOEVK_WEIGHT_SHARED_DOWN:
        return (weight_place){BINDING_SHARED_DOWN, 0, d * fs, 1, dt, shared, "SHARED_DOWN"};
    case MOEVK_WEIGHT_SHARED_GATE_BIAS:
        return (weight_place){BINDING_SHARED_BIAS, 0, fs, 1, f32, shared && swiglu && layer->biases,
                              "SHARED_GATE_BIAS"};
    case MOEVK_WEIGHT_SHARED_UP_BIAS:
        return (weight_place){BINDING_SHARED_BIAS,     fs * 4,          fs, 1, f32,
                              shared && layer->biases, "SHARED_UP_BIAS"};
    case MOEVK_WEIGHT_SHARED_DOWN_BIAS:
        return (weight_place){BINDING_SHARED_BIAS,     2 * fs * 4,        d, 1, f32,
                              shared && layer->biases, "SHARED_DOWN_BIAS"};
    case MOEVK_WEIGHT_SHARED_EXPERT_GATE:
        return (weight_place){BINDING_SHARED_GATE_WEIGHTS, 0, d, 1, f32, layer->shared_gate,
                              "SHARED_EXPERT_GATE"};
    }
    return (weight_place){.present = -1};
}

weight_place layer_weight_place(const moevk_router *router, moevk_layer_weight which) {
    weight_place place = place_of(router, which);
    /* An expert-parallel layer's home half: its routed experts live on their ranks. */
    if (router->layer.parts == PARTS_HOME && place.binding >= BINDING_EXPERT_GATE &&
        place.binding <= BINDING_EXPERT_BIAS && place.present > 0)
        place.present = 0;
    return place;
}

moevk_result layer_weight_range(moevk_router *router, moevk_layer_weight which, uint32_t first,
                                uint32_t count, uint32_t element_bytes, weight_place *place,
                                uint64_t *offset, uint64_t *bytes) {
    moevk_context *context = router->context;
    *place = layer_weight_place(router, which);
    if (place->present < 0) REJECT("weight %d is not a moevk_layer_weight", (int)which);
    if (!place->present) REJECT("this layer has no %s weight", place->name);
    if (count == 0 || first >= place->experts || count > place->experts - first)
        REJECT("%s: experts %u to %u of %llu", place->name, first, first + count,
               (unsigned long long)place->experts);
    uint64_t part = element_bytes ? (uint64_t)element_bytes * place->elements
                                  : weight_bytes(place->type, place->elements);
    *bytes = part * count;
    *offset = place->offset + part * first; /* the biases' offsets are f32 already */
    return MOEVK_SUCCESS;
}

/* Copies between a tensor and a weight's bytes in the layer's buffer, waiting. */
static moevk_result copy_weight(moevk_router *router, const gpu_buffer *buffer, uint64_t offset,
                                uint64_t bytes, const moevk_tensor *tensor, const char *name,
                                int to_buffer) {
    moevk_context *context = router->context;
    moevk_result r = tensor_check(context, name, tensor, TENSOR_HOST | TENSOR_BUFFER, bytes);
    if (r != MOEVK_SUCCESS) return r;
    if (!tensor_given(tensor)) REJECT("%s is not given", name);
    const gpu_buffer *tensor_buffer =
        tensor->kind == MOEVK_TENSOR_BUFFER ? &tensor->buffer->gpu : NULL;
    if (tensor->kind == MOEVK_TENSOR_HOST)
        return gpu_buffer_host_copy(context, buffer, offset, tensor->host, bytes, to_buffer);
    return to_buffer ? gpu_buffer_device_copy(context, tensor_buffer, tensor->offset, buffer,
                                              offset, bytes)
                     : gpu_buffer_device_copy(context, buffer, offset, tensor_buffer,
                                              tensor->offset, bytes);
}

moevk_result layer_copy_out(moevk_router *router, int binding, uint64_t offset, uint64_t bytes,
                            const moevk_tensor *destination) {
    return copy_weight(router, &router->buffers[binding], offset, bytes, destination, "destination",
                       0);
}

moevk_result layer_copy_in(moevk_router *router, int binding, uint64_t offset, uint64_t bytes,
                           const moevk_tensor *source) {
    return copy_weight(router, &router->buffers[binding], offset, bytes, source, "source", 1);
}

moevk_result moevk_layer_set_weights(moevk_layer *layer, moevk_layer_weight which, uint32_t first,
                                     uint32_t count, moevk_tensor source) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router *router = layer->router;
    moevk_result r = router_settle(router); /* nothing in flight reads the weights */
    weight_place place;
    uint64_t offset = 0, bytes = 0;
    if (r == MOEVK_SUCCESS)
        r = layer_weight_range(router, which, first, count, 0, &place, &offset, &bytes);
    if (r != MOEVK_SUCCESS) return r;
    layer->master_valid = 0; /* the optimizer widens the stored weights again */
    return copy_weight(router, &router->buffers[place.binding], offset, bytes, &source, place.name,
                       1);
}

moevk_result moevk_layer_read_weights(moevk_layer *layer, moevk_layer_weight which, uint32_t first,
                                      uint32_t count, moevk_tensor destination) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router *router = layer->router;
    moevk_result r = router_settle(router);
    weight_place place;
    uint64_t offset = 0, bytes = 0;
    if (r == MOEVK_SUCCESS)
        r = layer_weight_range(router, which, first, count, 0, &place, &offset, &bytes);
    return r == MOEVK_SUCCESS ? layer_copy_out(router, place.binding, offset, bytes, &destination)
                              : r;
}

typedef enum layer_run { LAYER_WAIT, LAYER_SUBMIT, LAYER_RECORD } layer_run;

static moevk_result forward(moevk_layer *layer, VkCommandBuffer command_buffer,
                            const moevk_route_input *input, const moevk_layer_output *caller_output,
                            layer_run run) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (!caller_output) REJECT("output must not be NULL");
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    moevk_result r = SIZED_READ(context, moevk_layer_output, caller_output, &output);
    if (r != MOEVK_SUCCESS) return r;
    layer_call call = {.output = &output.output, .router_logits = &output.router_logits};
    if (run == LAYER_RECORD)
        return route_record_call(router, command_buffer, input, output.route, &call);
    r = route_submit(router, input, output.route, &call);
    return r == MOEVK_SUCCESS && run == LAYER_WAIT ? moevk_router_wait(router, UINT64_MAX) : r;
}

moevk_result moevk_layer_forward(moevk_layer *layer, const moevk_route_input *input,
                                 const moevk_layer_output *output) {
    return forward(layer, VK_NULL_HANDLE, input, output, LAYER_WAIT);
}

moevk_result moevk_layer_forward_submit(moevk_layer *layer, const moevk_route_input *input,
                                        const moevk_layer_output *output) {
    return forward(layer, VK_NULL_HANDLE, input, output, LAYER_SUBMIT);
}

moevk_result moevk_layer_record(moevk_layer *layer, VkCommandBuffer command_buffer,
                                const moevk_route_input *input, const moevk_layer_output *output) {
    return forward(layer, command_buffer, input, output, LAYER_RECORD);
}
