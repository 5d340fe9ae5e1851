/* The layer's reference (moevk_layer): each kept choice's expert FFN and the shared experts'
 * FFN of every token, in double from the stored values, summed with the route's weights. Beside
 * each output it gives a magnitude, the size of the terms whose f32 rounding the device's
 * result carries (products of absolute values through the same steps), that tests scale their
 * tolerance by. */
#include <math.h>
#include <stdlib.h>

#include "moevk_reference.h"

static double activate(moevk_activation activation, double gate, double up) {
    switch (activation) {
    case MOEVK_ACTIVATION_SWIGLU: return gate / (1.0 + exp(-gate)) * up;
    case MOEVK_ACTIVATION_GELU: return 0.5 * up * (1.0 + erf(up / sqrt(2.0)));
    case MOEVK_ACTIVATION_GELU_TANH:
        return 0.5 * up * (1.0 + tanh(0.79788456080286535588 * (up + 0.044715 * up * up * up)));
    case MOEVK_ACTIVATION_RELU: return up < 0.0 ? 0.0 : up;
    }
    return NAN;
}

/* One projection's output n: sum over k of x[k] * W[n, k] (+ bias), and its magnitude. */
static double project(const void *matrix, uint64_t first, uint32_t depth, moevk_dtype type,
                      const double *x, const double *x_magnitude, const float *bias,
                      double *magnitude) {
    double sum = bias ? bias[0] : 0.0, size = bias ? fabs(bias[0]) : 0.0;
    for (uint32_t k = 0; k < depth; ++k) {
        double w = ref_load(matrix, first + k, type);
        sum += x[k] * w;
        size += x_magnitude[k] * fabs(w);
    }
    *magnitude = size;
    return sum;
}

void ref_ffn_row(const ref_ffn *ffn, uint32_t expert, const double *x, const double *x_magnitude,
                 double *out, double *magnitude) {
    uint32_t d = ffn->hidden_size, f = ffn->intermediate_size;
    double *h = malloc(2 * (size_t)f * sizeof *h);
    if (!h) return;
    double *h_magnitude = h + f;
    uint64_t base = (uint64_t)expert * f;
    for (uint32_t n = 0; n < f; ++n) {
        double up_size, gate_size = 1.0, gate = 0.0;
        double up = project(ffn->up, (base + n) * d, d, ffn->weight_type, x, x_magnitude,
                            ffn->up_bias ? ffn->up_bias + base + n : NULL, &up_size);
        if (ffn->activation == MOEVK_ACTIVATION_SWIGLU)
            gate = project(ffn->gate, (base + n) * d, d, ffn->weight_type, x, x_magnitude,
                           ffn->gate_bias ? ffn->gate_bias + base + n : NULL, &gate_size);
        h[n] = activate(ffn->activation, gate, up);
        /* SwiGLU: |silu(g) u| <= |g| |u|, and silu's slope is below 1.1; GELU's below 1.13. */
        h_magnitude[n] = 1.13 * gate_size * up_size;
    }
    uint64_t out_base = (uint64_t)expert * d;
    for (uint32_t i = 0; i < d; ++i)
        out[i] =
            project(ffn->down, (out_base + i) * f, f,
                    ffn->separate_down_type ? ffn->down_type : ffn->weight_type, h, h_magnitude,
                    ffn->down_bias ? ffn->down_bias + out_base + i : NULL, &magnitude[i]);
    free(h);
}

void ref_layer_output(const ref_layer *layer, uint32_t T, const void *hidden,
                      const int32_t *expert_ids, const float *weights, const int32_t *slots,
                      double *out, double *magnitude) {
    const moevk_router_info *info = layer->router;
    uint32_t d = info->hidden_size, E = info->num_experts;
    uint32_t choices = info->mode == MOEVK_MODE_EXPERT_CHOICE ? E : info->top_k;
    double *x = malloc(4 * (size_t)d * sizeof *x);
    float *logits = malloc((size_t)E * sizeof *logits);
    if (!x || !logits) {
        free(x);
        free(logits);
        return;
    }
    double *x_magnitude = x + d, *y = x + 2 * d, *y_magnitude = x + 3 * d;
    moevk_router_info one = *info;
    for (uint32_t t = 0; t < T; ++t) {
        double *o = out + (uint64_t)t * d, *m = magnitude + (uint64_t)t * d;
        for (uint32_t i = 0; i < d; ++i) {
            x[i] = ref_load(hidden, (uint64_t)t * d + i, info->hidden_type);
            x_magnitude[i] = fabs(x[i]);
            o[i] = m[i] = 0.0;
        }
        /* A token whose logits are not finite was routed nowhere: NaN, as the device writes. */
        ref_router_projection(&one, 1,
                              (const char *)hidden +
                                  (uint64_t)t * d * (info->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2),
                              layer->router_weights, logits);
        int finite = 1;
        for (uint32_t e = 0; e < E; ++e) finite &= isfinite(logits[e]) != 0;
        if (!finite) {
            for (uint32_t i = 0; i < d; ++i) o[i] = NAN;
            continue;
        }
        for (uint32_t j = 0; j < choices; ++j) {
            uint64_t c = (uint64_t)t * choices + j;
            if (expert_ids[c] < 0 || slots[c] < 0) continue;
            ref_ffn_row(&layer->experts, (uint32_t)expert_ids[c], x, x_magnitude, y, y_magnitude);
            for (uint32_t i = 0; i < d; ++i) {
                o[i] += weights[c] * y[i];
                m[i] += fabs(weights[c]) * y_magnitude[i];
            }
        }
        if (layer->shared.intermediate_size == 0) continue;
        ref_ffn_row(&layer->shared, 0, x, x_magnitude, y, y_magnitude);
        double scale = 1.0;
        if (layer->shared_expert_gate) {
            double dot = 0.0;
            for (uint32_t i = 0; i < d; ++i) dot += x[i] * layer->shared_expert_gate[i];
            scale = 1.0 / (1.0 + exp(-dot));
        }
        for (uint32_t i = 0; i < d; ++i) {
            o[i] += scale * y[i];
            m[i] += scale * y_magnitude[i];
        }
    }
    free(x);
    free(logits);
}
