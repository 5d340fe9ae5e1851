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

moevk_result moevk_layer_optimizer_step(moevk_layer *layer, const moevk_optimizer_info *caller,
                                        double *grad_norm) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    moevk_result r = router_settle(router);
    if (r != MOEVK_SUCCESS) return r;
    if (!router->layer.trainable) REJECT("the layer was created without `trainable`");
    if (!caller) REJECT("info must not be NULL");
    moevk_optimizer_info info;
    moevk_optimizer_info_init(&info);
    r = SIZED_READ(context, moevk_optimizer_info, caller, &info);
    if (r == MOEVK_SUCCESS) r = check_options(context, &info);
    if (r != MOEVK_SUCCESS) return r;
    int need_norm = info.max_grad_norm > 0.0f || grad_norm != NULL;
    double norm = 0.0;
    if (!layer->master_valid || need_norm) {
        r = run(router, OPT_PHASE_WIDEN, NULL, !layer->master_valid, need_norm);
        if (r != MOEVK_SUCCESS) return r;
        layer->master_valid = 1;
        if (need_norm) {
            const float *partials =
                transfer_downloaded(&router->pending_plan, BINDING_OPT_PARTIALS);
            double sum = 0.0;
            uint64_t blocks = optimizer_partial_count(router);
            for (uint64_t b = 0; b < blocks; ++b) sum += partials[b];
            norm = sqrt(sum);
        }
    }
    optimizer_step step = {.adamw = info.kind == MOEVK_OPTIMIZER_ADAMW,
                           .learning_rate = info.learning_rate,
                           .beta1 = info.beta1,
                           .beta2 = info.beta2,
                           .epsilon = info.epsilon,
                           .weight_decay = info.weight_decay,
                           .grad_scale = 1.0f};
    if (info.max_grad_norm > 0.0f) {
        float scale = (float)(info.max_grad_norm / (norm + 1e-6));
        step.grad_scale = scale < 1.0f ? scale : 1.0f;
    }
    if (step.adamw) {
        /* PyTorch's scalars, computed in double as Python does. */
        double correction1 = 1.0 - pow(info.beta1, info.step);
        double correction2 = 1.0 - pow(info.beta2, info.step);
        step.step_size = (float)(info.learning_rate / correction1);
        step.correction2_sqrt = (float)sqrt(correction2);
        step.keep = (float)(1.0 - (double)info.learning_rate * info.weight_decay);
    }
    r = run(router, OPT_PHASE_UPDATE, &step, 0, 0);
    if (r == MOEVK_SUCCESS && grad_norm) *grad_norm = norm;
    return r;
}
