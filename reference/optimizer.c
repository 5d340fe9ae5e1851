/* The optimizer's reference: PyTorch's torch.optim.SGD (no momentum) and torch.optim.AdamW
 * (_single_tensor_adamw), operation for operation in f32 (compiled with -ffp-contract=off), the
 * bias corrections in double as Python computes them. */
#include <math.h>

#include "moevk_reference.h"

void ref_optimizer_step(const moevk_optimizer_info *info, float grad_scale, uint64_t n, float *w,
                        float *m, float *v, const float *g) {
    float lr = info->learning_rate, decay = info->weight_decay;
    if (info->kind == MOEVK_OPTIMIZER_SGD) {
        for (uint64_t i = 0; i < n; ++i) {
            float grad = g[i] * grad_scale;
            if (decay != 0.0f) grad = grad + decay * w[i];
            w[i] = w[i] - lr * grad;
        }
        return;
    }
    float b1 = info->beta1, b2 = info->beta2;
    double correction1 = 1.0 - pow(b1, info->step), correction2 = 1.0 - pow(b2, info->step);
    float step_size = (float)(lr / correction1);
    float correction2_sqrt = (float)sqrt(correction2);
    float keep = (float)(1.0 - (double)lr * decay);
    for (uint64_t i = 0; i < n; ++i) {
        float grad = g[i] * grad_scale;
        w[i] = w[i] * keep;
        /* lerp(m, g, 1 - b1), as PyTorch computes it on either side of a half */
        float weight = 1.0f - b1;
        m[i] = weight < 0.5f ? m[i] + weight * (grad - m[i])
                             : grad - (grad - m[i]) * (1.0f - weight);
        v[i] = v[i] * b2 + (1.0f - b2) * grad * grad;
        float denom = sqrtf(v[i]) / correction2_sqrt + info->epsilon;
        w[i] = w[i] + (-step_size * m[i]) / denom; /* addcdiv(m, denom, -step_size) */
    }
}

float ref_clip_scale(float max_norm, double norm) {
    if (max_norm <= 0.0f) return 1.0f;
    float scale = (float)(max_norm / (norm + 1e-6));
    return scale < 1.0f ? scale : 1.0f;
}
