/* moevk_layer_optimizer_step: the master weights widened when the stored ones changed, the
 * gradients' global norm (squares summed per block on the device, the blocks reduced here in
 * double, in order), then the SGD or AdamW update (optimizer.c). */
#include <math.h>

#include "layer.h"
#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

static moevk_result check_options(moevk_context *context, const moevk_optimizer_info *info) {
    if (info->kind != MOEVK_OPTIMIZER_SGD && info->kind != MOEVK_OPTIMIZER_ADAMW)
        REJECT("kind %d is not a moevk_optimizer_kind", (int)info->kind);
    if (!isfinite(info->learning_rate) || info->learning_rate <= 0.0f)
        REJECT("learning_rate must be finite and > 0");
    if (!isfinite(info->weight_decay) || info->weight_decay < 0.0f)
        REJECT("weight_decay must be finite and >= 0");
    if (!isfinite(info->max_grad_norm) || info->max_grad_norm < 0.0f)
        REJECT("max_grad_norm must be finite and >= 0 (0: no clipping)");
    if (info->kind != MOEVK_OPTIMIZER_ADAMW) return MOEVK_SUCCESS;
    if (!(info->beta1 >= 0.0f && info->beta1 < 1.0f) ||
        !(info->beta2 >= 0.0f && info->beta2 < 1.0f))
        REJECT("AdamW's beta1 and beta2 must be in [0, 1)");
    if (!isfinite(info->epsilon) || info->epsilon <= 0.0f) REJECT("epsilon must be finite and > 0");
    if (info->step == 0) REJECT("AdamW's step counts from 1");
    return MOEVK_SUCCESS;
}

/* One submission of what record records, waited for. */
static moevk_result run(moevk_router *router, uint32_t phase, const optimizer_step *step, int widen,
                        int norm) {
    transfer_plan *plan = &router->pending_plan;
    moevk_result r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    transfer_uploads_done(plan);
    if (widen) record_optimizer(router, OPT_PHASE_WIDEN, NULL);
    if (norm) {
        record_optimizer(router, OPT_PHASE_NORM, NULL);
        transfer_download(plan, BINDING_OPT_PARTIALS, NULL, optimizer_partial_count(router) * 4);
    }
    if (step) record_optimizer(router, phase, step);
    r = transfer_submit(plan);
    if (r != MOEVK_SUCCESS) return r;
    router->pending = PENDING_BACKWARD;
    return moevk_router_wait(router, UINT64_MAX);
}

/* The caller's options as this library's struct, checked; the layer trainable and settled. */
static moevk_result read_options(moevk_layer *layer, const moevk_optimizer_info *caller,
                                 moevk_optimizer_info *info) {
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    moevk_result r = router_settle(router);
    if (r != MOEVK_SUCCESS) return r;
    if (!router->layer.trainable) REJECT("the layer was created without `trainable`");
    if (!caller) REJECT("info must not be NULL");
    moevk_optimizer_info_init(info);
    r = SIZED_READ(context, moevk_optimizer_info, caller, info);
    return r == MOEVK_SUCCESS ? check_options(context, info) : r;
}

/* The master weights widened where the stored ones changed, and with `squares` the gradients'
 * sum of squares (per block on the device, the blocks added here in double, in order). */
static moevk_result widen_and_sum(moevk_layer *layer, int squares, double *sum) {
    moevk_router *router = layer->router;
    *sum = 0.0;
    if (layer->master_valid && !squares) return MOEVK_SUCCESS;
    moevk_result r = run(router, OPT_PHASE_WIDEN, NULL, !layer->master_valid, squares);
    if (r != MOEVK_SUCCESS) return r;
    layer->master_valid = 1;
    if (!squares) return MOEVK_SUCCESS;
    const float *partials = transfer_downloaded(&router->pending_plan, BINDING_OPT_PARTIALS);
    uint64_t blocks = optimizer_partial_count(router);
    for (uint64_t b = 0; b < blocks; ++b) *sum += partials[b];
    return MOEVK_SUCCESS;
}

/* The SGD or AdamW update of checked options, the gradients scaled by grad_scale. */
static moevk_result update(moevk_layer *layer, const moevk_optimizer_info *info, float grad_scale) {
    optimizer_step step = {.adamw = info->kind == MOEVK_OPTIMIZER_ADAMW,
                           .learning_rate = info->learning_rate,
                           .beta1 = info->beta1,
                           .beta2 = info->beta2,
                           .epsilon = info->epsilon,
                           .weight_decay = info->weight_decay,
                           .grad_scale = grad_scale};
    if (step.adamw) {
        /* PyTorch's scalars, computed in double as Python does. */
        double correction1 = 1.0 - pow(info->beta1, info->step);
        double correction2 = 1.0 - pow(info->beta2, info->step);
        step.step_size = (float)(info->learning_rate / correction1);
        step.correction2_sqrt = (float)sqrt(correction2);
        step.keep = (float)(1.0 - (double)info->learning_rate * info->weight_decay);
    }
    return run(layer->router, OPT_PHASE_UPDATE, &step, 0, 0);
}

float layer_clip_scale(float max_grad_norm, double norm) {
    if (max_grad_norm <= 0.0f) return 1.0f;
    float scale = (float)(max_grad_norm / (norm + 1e-6));
    return scale < 1.0f ? scale : 1.0f;
}

moevk_result layer_optimizer_squares(moevk_layer *layer, const moevk_optimizer_info *caller,
                                     double *sum) {
    moevk_optimizer_info info;
    moevk_result r = read_options(layer, caller, &info);
    return r == MOEVK_SUCCESS ? widen_and_sum(layer, 1, sum) : r;
}

moevk_result layer_optimizer_update(moevk_layer *layer, const moevk_optimizer_info *caller,
                                    float grad_scale) {
    moevk_optimizer_info info;
    double unused;
    moevk_result r = read_options(layer, caller, &info);
    if (r == MOEVK_SUCCESS) r = widen_and_sum(layer, 0, &unused);
    return r == MOEVK_SUCCESS ? update(layer, &info, grad_scale) : r;
}

moevk_result moevk_layer_optimizer_step(moevk_layer *layer, const moevk_optimizer_info *caller,
                                        double *grad_norm) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_optimizer_info info;
    moevk_result r = read_options(layer, caller, &info);
    if (r != MOEVK_SUCCESS) return r;
    int need_norm = info.max_grad_norm > 0.0f || grad_norm != NULL;
    double sum = 0.0;
    r = widen_and_sum(layer, need_norm, &sum);
    if (r != MOEVK_SUCCESS) return r;
    double norm = sqrt(sum);
    r = update(layer, &info, layer_clip_scale(info.max_grad_norm, norm));
    if (r == MOEVK_SUCCESS && grad_norm) *grad_norm = norm;
    return r;
}
