/* The layer's backward reference (issue 15): the gradients of a loss L given dL/doutput, in
 * double from the stored values, for a fixed route (the top-k choice and the drops are
 * constants). Through the combine (dL/dw of every kept choice, and each kept row's share
 * w * dL/doutput), each expert's FFN (down, the activation, gate and up, their biases), the
 * shared experts and their sigmoid gate, into dL/dx and every parameter; and the router
 * projection's part given dL/dlogits. Written from the forward's definitions (reference/layer.c)
 * and checked against central differences of that forward (tests/test_layer_backward.c). */
#include <math.h>
#include <stdlib.h>

#include "moevk_reference.h"

/* h = act(gate, up) and its partial derivatives. */
static void activate_with_slopes(moevk_activation activation, double gate, double up, double *h,
                                 double *dh_dgate, double *dh_dup) {
    *dh_dgate = 0.0;
    switch (activation) {
    case MOEVK_ACTIVATION_SWIGLU: {
        double sigma = 1.0 / (1.0 + exp(-gate)), silu = gate * sigma;
        *h = silu * up;
        *dh_dgate = sigma * (1.0 + gate * (1.0 - sigma)) * up;
        *dh_dup = silu;
        return;
    }
    case MOEVK_ACTIVATION_GELU: {
        double cdf = 0.5 * (1.0 + erf(up / sqrt(2.0)));
        *h = up * cdf;
        *dh_dup = cdf + up * exp(-0.5 * up * up) * 0.39894228040143267794; /* 1 / sqrt(2 pi) */
        return;
    }
    case MOEVK_ACTIVATION_GELU_TANH: {
        const double c = 0.79788456080286535588, a = 0.044715;
        double th = tanh(c * (up + a * up * up * up));
        *h = 0.5 * up * (1.0 + th);
        *dh_dup = 0.5 * (1.0 + th) + 0.5 * up * (1.0 - th * th) * c * (1.0 + 3.0 * a * up * up);
        return;
    }
    case MOEVK_ACTIVATION_RELU: /* the slope at 0 is 0, as PyTorch's */
        *h = up > 0.0 ? up : 0.0;
        *dh_dup = up > 0.0 ? 1.0 : 0.0;
        return;
    }
    *h = *dh_dup = NAN;
}

/* One row x [d] of expert e: adds the parameters' gradients for the row's upstream gradient gy
 * [d] into g, and dx [d] (+=); y [d] gets the expert's output (for dL/dw). */
static int ffn_row_backward(const ref_ffn *ffn, const ref_ffn_grads *g, uint32_t e, const double *x,
                            const double *gy, double *dx, double *y) {
    uint32_t d = ffn->hidden_size, f = ffn->intermediate_size;
    moevk_dtype wt = ffn->weight_type, dt = ffn->separate_down_type ? ffn->down_type : wt;
    int swiglu = ffn->activation == MOEVK_ACTIVATION_SWIGLU;
    double *work = malloc(4 * (size_t)f * sizeof *work);
    if (!work) return 0;
    double *h = work, *slope_gate = work + f, *slope_up = work + 2 * (size_t)f,
           *dh = work + 3 * (size_t)f;
    uint64_t fe = (uint64_t)e * f, de = (uint64_t)e * d;
    for (uint32_t n = 0; n < f; ++n) {
        double up = ffn->up_bias ? ffn->up_bias[fe + n] : 0.0;
        double gate = swiglu && ffn->gate_bias ? ffn->gate_bias[fe + n] : 0.0;
        for (uint32_t k = 0; k < d; ++k) {
            up += x[k] * ref_load(ffn->up, (fe + n) * d + k, wt);
            if (swiglu) gate += x[k] * ref_load(ffn->gate, (fe + n) * d + k, wt);
        }
        activate_with_slopes(ffn->activation, gate, up, &h[n], &slope_gate[n], &slope_up[n]);
        dh[n] = 0.0;
    }
    for (uint32_t i = 0; i < d; ++i) {
        double out = ffn->down_bias ? ffn->down_bias[de + i] : 0.0;
        for (uint32_t n = 0; n < f; ++n) {
            double w = ref_load(ffn->down, (de + i) * f + n, dt);
            out += w * h[n];
            dh[n] += gy[i] * w;
            if (g->down) g->down[(de + i) * f + n] += gy[i] * h[n];
        }
        if (g->down_bias) g->down_bias[de + i] += gy[i];
        if (y) y[i] = out;
    }
    for (uint32_t n = 0; n < f; ++n) {
        double d_gate = dh[n] * slope_gate[n], d_up = dh[n] * slope_up[n];
        if (g->up_bias) g->up_bias[fe + n] += d_up;
        if (swiglu && g->gate_bias) g->gate_bias[fe + n] += d_gate;
        for (uint32_t k = 0; k < d; ++k) {
            uint64_t at = (fe + n) * d + k;
            if (g->up) g->up[at] += d_up * x[k];
            if (swiglu && g->gate) g->gate[at] += d_gate * x[k];
            double to_x = d_up * ref_load(ffn->up, at, wt);
            if (swiglu) to_x += d_gate * ref_load(ffn->gate, at, wt);
            if (dx) dx[k] += to_x;
        }
    }
    free(work);
    return 1;
}

int ref_layer_backward(const ref_layer *layer, uint32_t T, const void *hidden,
                       const int32_t *expert_ids, const float *weights, const int32_t *slots,
                       const double *grad_output, const ref_layer_grads *grads) {
    const moevk_router_info *info = layer->router;
    uint32_t d = info->hidden_size, E = info->num_experts;
    uint32_t choices = info->mode == MOEVK_MODE_EXPERT_CHOICE ? E : info->top_k;
    double *work = malloc(3 * (size_t)d * sizeof *work);
    float *logits = malloc((size_t)E * sizeof *logits);
    int ok = work && logits;
    double *x = work, *gy = work + d, *y = work + 2 * (size_t)d;
    size_t hidden_bytes = info->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2;
    for (uint32_t t = 0; ok && t < T; ++t) {
        const double *dy = grad_output + (uint64_t)t * d;
        double *dx = grads->hidden ? grads->hidden + (uint64_t)t * d : NULL;
        for (uint32_t j = 0; j < choices && grads->choice_weights; ++j)
            grads->choice_weights[(uint64_t)t * choices + j] = 0.0;
        /* A token whose logits are not finite went nowhere (its output is NaN): no gradient. */
        ref_router_projection(info, 1, (const char *)hidden + (uint64_t)t * d * hidden_bytes,
                              layer->router_weights, logits);
        int finite = 1;
        for (uint32_t e = 0; e < E; ++e) finite &= isfinite(logits[e]) != 0;
        if (!finite) continue;
        for (uint32_t k = 0; k < d; ++k)
            x[k] = ref_load(hidden, (uint64_t)t * d + k, info->hidden_type);
        for (uint32_t j = 0; ok && j < choices; ++j) {
            uint64_t c = (uint64_t)t * choices + j;
            if (expert_ids[c] < 0 || slots[c] < 0) continue; /* dropped: no gradient through it */
            for (uint32_t i = 0; i < d; ++i) gy[i] = weights[c] * dy[i];
            ok = ffn_row_backward(&layer->experts, &grads->experts, (uint32_t)expert_ids[c], x, gy,
                                  dx, y);
            double dot = 0.0;
            for (uint32_t i = 0; i < d; ++i) dot += dy[i] * y[i];
            if (grads->choice_weights) grads->choice_weights[c] = dot;
        }
        if (!ok || layer->shared.intermediate_size == 0) continue;
        double z = 0.0, scale = 1.0;
        if (layer->shared_expert_gate) {
            for (uint32_t k = 0; k < d; ++k) z += x[k] * layer->shared_expert_gate[k];
            scale = 1.0 / (1.0 + exp(-z));
        }
        for (uint32_t i = 0; i < d; ++i) gy[i] = scale * dy[i];
        ok = ffn_row_backward(&layer->shared, &grads->shared, 0, x, gy, dx, y);
        if (!ok || !layer->shared_expert_gate) continue;
        /* d scale: <dy, y_shared>, through the sigmoid's slope into z = x . w_shared_gate. */
        double d_scale = 0.0;
        for (uint32_t i = 0; i < d; ++i) d_scale += dy[i] * y[i];
        double dz = d_scale * scale * (1.0 - scale);
        for (uint32_t k = 0; k < d; ++k) {
            if (grads->shared_expert_gate) grads->shared_expert_gate[k] += dz * x[k];
            if (dx) dx[k] += dz * layer->shared_expert_gate[k];
        }
    }
    free(work);
    free(logits);
    return ok;
}

void ref_router_projection_backward(const moevk_router_info *info, uint32_t T, const void *hidden,
                                    const float *router_weights, const double *grad_logits,
                                    double *grad_router, double *grad_hidden) {
    uint32_t d = info->hidden_size, E = info->num_experts;
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t e = 0; e < E; ++e) {
            double g = grad_logits[(uint64_t)t * E + e];
            if (g == 0.0) continue;
            for (uint32_t k = 0; k < d; ++k) {
                double x = ref_load(hidden, (uint64_t)t * d + k, info->hidden_type);
                if (grad_router) grad_router[(uint64_t)e * d + k] += g * x;
                if (grad_hidden)
                    grad_hidden[(uint64_t)t * d + k] += g * router_weights[(uint64_t)e * d + k];
            }
        }
}
