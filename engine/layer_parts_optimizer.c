/* The optimizer step of a layer split over ranks (moevk_parts.h): a half's gradients written
 * (the router's and shared experts' summed over the ranks), their sum of squares for the global
 * norm, and the update at the scale the ranks agreed, each as moevk_layer_optimizer_step runs
 * it on one process. */
#include "moevk_parts.h"

#include "layer.h"

int moevk_parts_has_weight(moevk_layer *layer, moevk_layer_weight which) {
    return layer && layer_weight_place(layer->router, which).present > 0;
}

moevk_result moevk_parts_write_gradient(moevk_layer *layer, moevk_layer_weight which,
                                        uint32_t first, uint32_t count, const float *values) {
    moevk_tensor source = moevk_host_tensor((void *)values);
    return layer_gradient_copy(layer, which, first, count, &source, 1);
}

moevk_result moevk_parts_gradient_squares(moevk_layer *layer, const moevk_optimizer_info *info,
                                          double *sum) {
    if (!layer || !sum) return MOEVK_ERROR_INVALID_ARGUMENT;
    return layer_optimizer_squares(layer, info, sum);
}

moevk_result moevk_parts_optimizer_update(moevk_layer *layer, const moevk_optimizer_info *info,
                                          float grad_scale) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    return layer_optimizer_update(layer, info, grad_scale);
}

float moevk_parts_clip_scale(float max_grad_norm, double norm) {
    return layer_clip_scale(max_grad_norm, norm);
}
