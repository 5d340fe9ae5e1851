/* Training a layer (moevk_layer_backward and its gradients): the backward of the layer's last
 * forward in one submission — the combine's (combine_backward.c), the router's from dL/dweights
 * (losses.c's kernel), the routed experts' (experts_backward.c), the dispatch's, the router
 * projection's (router_backward.c) — and the parameters' gradient buffers, read and zeroed. */
#include <string.h>

#include "layer.h"
#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

/* The gradient buffers of the parameters, zeroed for a backward that does not accumulate. */
static const int GRADIENT_BINDINGS[] = {BINDING_GRAD_EXPERT_GATE, BINDING_GRAD_EXPERT_UP,
                                        BINDING_GRAD_EXPERT_DOWN, BINDING_GRAD_EXPERT_BIAS,
                                        BINDING_GRAD_ROUTER,      BINDING_GRAD_SHARED_GATE,
                                        BINDING_GRAD_SHARED_UP,   BINDING_GRAD_SHARED_DOWN,
                                        BINDING_GRAD_SHARED_BIAS, BINDING_GRAD_SHARED_EXPERT_GATE};
#define GRADIENT_BINDING_COUNT (int)(sizeof GRADIENT_BINDINGS / sizeof GRADIENT_BINDINGS[0])

static moevk_result check_trainable(moevk_router *router) {
    moevk_context *context = router->context;
    if (!router->layer.trainable) REJECT("the layer was created without `trainable`");
    return MOEVK_SUCCESS;
}

static moevk_result check_backward(moevk_router *router, const moevk_layer_backward_info *info) {
    moevk_context *context = router->context;
    moevk_result r = check_trainable(router);
    if (r != MOEVK_SUCCESS) return r;
    if (router->use_addresses)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "the backward needs the router's buffers within "
                            "maxStorageBufferRange (the router's backward does)");
    if (router->route != ROUTE_RUN)
        REJECT("a backward needs the layer's forward first (moevk_layer_forward; not a recorded "
               "one)");
    const route_plan *last = &router->last;
    uint64_t T = last->num_tokens, d = last->hidden_size, k = last->choices;
    const struct {
        const char *name;
        const moevk_tensor *tensor;
        uint64_t bytes;
        uint32_t kinds;
    } tensors[] = {
        {"grad_output", &info->grad_output, T * d * 4,
         TENSOR_HOST | TENSOR_BUFFER | (T == 0 ? TENSOR_NONE : 0)},
        {"grad_hidden", &info->grad_hidden, T * d * 4, TENSOR_NONE | TENSOR_HOST | TENSOR_BUFFER},
        {"grad_weights", &info->grad_weights, T * k * 4, TENSOR_NONE | TENSOR_HOST | TENSOR_BUFFER},
    };
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; ++i) {
        r = tensor_check(context, tensors[i].name, tensors[i].tensor, tensors[i].kinds,
                         tensors[i].bytes);
        if (r != MOEVK_SUCCESS) return r;
    }
    return MOEVK_SUCCESS;
}

void record_zero_gradients(moevk_router *router) {
    for (int i = 0; i < GRADIENT_BINDING_COUNT; ++i)
        router->context->vk.vkCmdFillBuffer(
            router->recording, router->buffers[GRADIENT_BINDINGS[i]].buffer, 0, VK_WHOLE_SIZE, 0);
    record_barrier(router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

/* dL/dlogits [T, E] from dL/dweights (and the losses' own gradient): the router's backward
 * (losses.comp). */
static void record_logits_backward(moevk_router *router, const route_plan *params,
                                   const loss_phases *phases) {
    if (params->num_tokens == 0) return;
    record_losses(router, params, phases);
    record_compute_barrier(router);
}

moevk_result moevk_layer_backward(moevk_layer *layer, const moevk_layer_backward_info *caller) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    moevk_result r = router_settle(router);
    if (r != MOEVK_SUCCESS) return r;
    if (!caller) REJECT("info must not be NULL");
    moevk_layer_backward_info info;
    moevk_layer_backward_info_init(&info);
    r = SIZED_READ(context, moevk_layer_backward_info, caller, &info);
    if (r == MOEVK_SUCCESS) r = check_backward(router, &info);
    if (r != MOEVK_SUCCESS) return r;
    /* The router's backward's plan: the given losses' coefficients, or every one 0 (dL/dlogits
     * from dL/dweights alone, as moevk_router_losses runs it for grad_weights). */
    moevk_loss_info no_losses, loss_info;
    moevk_loss_info_init(&no_losses);
    route_plan loss_plan;
    loss_phases phases;
    r = losses_plan_for_layer(router, info.losses ? info.losses : &no_losses, &loss_plan, &phases,
                              &loss_info);
    if (r != MOEVK_SUCCESS) return r;
    /* The forward's plan holds grad_pre_stride already (router_plan, a trainable layer's). */
    route_plan plan = router->last;
    uint64_t T = plan.num_tokens, d = plan.hidden_size, k = plan.choices;
    transfer_plan *transfers = &router->pending_plan;
    r = transfer_begin(transfers, router);
    if (r != MOEVK_SUCCESS) return r;
    tensor_upload(transfers, BINDING_GRAD_OUTPUT, &info.grad_output, T * d * 4);
    transfer_uploads_done(transfers);
    if (!info.accumulate) record_zero_gradients(router);
    record_combine_backward(router, &plan);
    record_logits_backward(router, &loss_plan, &phases);
    record_experts_backward(router, &plan);
    record_dispatch_backward(router, &plan);
    record_shared_backward(router, &plan);
    record_router_backward(router, &plan);
    tensor_download(transfers, BINDING_GRAD_HIDDEN, 0, &info.grad_hidden, T * d * 4);
    tensor_download(transfers, BINDING_GRAD_WEIGHTS, 0, &info.grad_weights, T * k * 4);
    int values = info.losses && info.loss_values;
    if (values) losses_download(transfers, router);
    r = transfer_submit(transfers);
    if (r != MOEVK_SUCCESS) return r;
    router->pending = PENDING_BACKWARD;
    r = moevk_router_wait(router, UINT64_MAX);
    if (r == MOEVK_SUCCESS && values)
        losses_values(router, &loss_info, transfers, info.loss_values);
    return r;
}

moevk_result layer_gradient_range(moevk_router *router, moevk_layer_weight which, uint32_t first,
                                  uint32_t count, int *binding, uint64_t *offset, uint64_t *bytes) {
    moevk_context *context = router->context;
    moevk_result r = check_trainable(router);
    weight_place place;
    if (r == MOEVK_SUCCESS)
        r = layer_weight_range(router, which, first, count, 4, &place, offset, bytes);
    if (r != MOEVK_SUCCESS) return r;
    /* Each weight buffer's gradient buffer, in the same layout in f32. */
    static const int GRADIENT_OF[BINDING_COUNT] = {[BINDING_EXPERT_GATE] = BINDING_GRAD_EXPERT_GATE,
                                                   [BINDING_EXPERT_UP] = BINDING_GRAD_EXPERT_UP,
                                                   [BINDING_EXPERT_DOWN] = BINDING_GRAD_EXPERT_DOWN,
                                                   [BINDING_EXPERT_BIAS] = BINDING_GRAD_EXPERT_BIAS,
                                                   [BINDING_ROUTER_WEIGHTS] = BINDING_GRAD_ROUTER,
                                                   [BINDING_SHARED_GATE] = BINDING_GRAD_SHARED_GATE,
                                                   [BINDING_SHARED_UP] = BINDING_GRAD_SHARED_UP,
                                                   [BINDING_SHARED_DOWN] = BINDING_GRAD_SHARED_DOWN,
                                                   [BINDING_SHARED_BIAS] = BINDING_GRAD_SHARED_BIAS,
                                                   [BINDING_SHARED_GATE_WEIGHTS] =
                                                       BINDING_GRAD_SHARED_EXPERT_GATE};
    *binding = GRADIENT_OF[place.binding];
    if (*binding == 0)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED, "the gradient of %s is not there yet",
                            place.name);
    return MOEVK_SUCCESS;
}

moevk_result layer_gradient_copy(moevk_layer *layer, moevk_layer_weight which, uint32_t first,
                                 uint32_t count, const moevk_tensor *tensor, int into_layer) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router *router = layer->router;
    moevk_result r = router_settle(router);
    int binding = 0;
    uint64_t offset = 0, bytes = 0;
    if (r == MOEVK_SUCCESS)
        r = layer_gradient_range(router, which, first, count, &binding, &offset, &bytes);
    if (r != MOEVK_SUCCESS) return r;
    return into_layer ? layer_copy_in(router, binding, offset, bytes, tensor)
                      : layer_copy_out(router, binding, offset, bytes, tensor);
}

moevk_result moevk_layer_read_gradient(moevk_layer *layer, moevk_layer_weight which, uint32_t first,
                                       uint32_t count, moevk_tensor destination) {
    return layer_gradient_copy(layer, which, first, count, &destination, 0);
}

moevk_result moevk_layer_zero_gradients(moevk_layer *layer) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router *router = layer->router;
    moevk_result r = router_settle(router);
    if (r == MOEVK_SUCCESS) r = check_trainable(router);
    if (r != MOEVK_SUCCESS) return r;
    const gpu_buffer *buffers[GRADIENT_BINDING_COUNT];
    for (int i = 0; i < GRADIENT_BINDING_COUNT; ++i)
        buffers[i] = &router->buffers[GRADIENT_BINDINGS[i]];
    return gpu_buffers_zero(router->context, buffers, GRADIENT_BINDING_COUNT);
}
