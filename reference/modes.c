/* Reference of the routing modes' decision rows (shaders/sequence_mean.comp, sinkhorn.comp):
 * the rows' own validity, the sequences' mean logits, and the Sinkhorn factors. */
#include <math.h>
#include <stdlib.h>

#include "moevk_reference.h"

float ref_exact_reciprocal(uint32_t n) {
    /* 1/n = q * 2^-(h + 24) with q = round(2^(h + 24) / n) in 64-bit integers; the shader gets
     * the same by long division. */
    uint32_t h = 31;
    while (!(n >> h & 1u)) --h;
    uint64_t numerator = (uint64_t)1 << (h + 24);
    uint64_t q = numerator / n, r = numerator % n;
    if (2 * r > n || (2 * r == n && (q & 1))) ++q;
    return ldexpf((float)q, -(int)(h + 24));
}

uint32_t ref_row_validity(const moevk_router_info *info, const void *logits, uint32_t token) {
    uint32_t E = info->num_experts;
    int masked = 1;
    for (uint32_t e = 0; e < E; ++e) {
        float logit = ref_load(logits, (uint64_t)token * E + e, info->logits_type);
        if (isnan(logit) || logit == INFINITY) return REF_ROW_NONFINITE;
        if (!isinf(logit)) masked = 0;
    }
    return masked ? REF_ROW_MASKED : REF_ROW_VALID;
}

uint32_t ref_sequence_length(const moevk_router_info *info, uint32_t T) {
    if (info->mode == MOEVK_MODE_BATCH) return T > 0 ? T : 1;
    return info->mode == MOEVK_MODE_SEQUENCE ? info->sequence_length : 1;
}

void ref_sequence_means(const moevk_router_info *info, uint32_t T, const void *logits,
                        float *means) {
    uint32_t E = info->num_experts, S = ref_sequence_length(info, T);
    uint32_t sequences = (T + S - 1) / S;
    for (uint32_t b = 0; b < sequences; ++b) {
        uint32_t last = b * S + S < T ? b * S + S : T;
        for (uint32_t e = 0; e < E; ++e) {
            float sum = 0.0f;
            uint32_t count = 0;
            for (uint32_t t = b * S; t < last; ++t) {
                if (ref_row_validity(info, logits, t) != REF_ROW_VALID) continue;
                sum += ref_load(logits, (uint64_t)t * E + e, info->logits_type);
                ++count;
            }
            means[(uint64_t)b * E + e] = count ? sum * ref_exact_reciprocal(count) : -INFINITY;
        }
    }
}

static float noisy_at(const moevk_router_info *info, const ref_call *call, const void *logits,
                      uint32_t t, uint32_t e) {
    float logit = ref_load(logits, (uint64_t)t * info->num_experts + e, info->logits_type);
    return ref_noisy_logit(info, call, logit, t, e);
}

int ref_sinkhorn(const moevk_router_info *info, const ref_call *call, uint32_t T,
                 const void *logits, ref_sinkhorn_factors *out) {
    uint32_t E = info->num_experts;
    uint32_t cap = info->sinkhorn_iterations ? info->sinkhorn_iterations : 100;
    out->d0 = calloc(T ? T : 1, sizeof *out->d0);
    uint8_t *valid = calloc(T ? T : 1, 1);
    if (!out->d0 || !valid) {
        free(out->d0);
        free(valid);
        out->d0 = NULL;
        return 0;
    }
    float top = -INFINITY, rows = 0.0f, columns = 0.0f;
    for (uint32_t t = 0; t < T; ++t) {
        valid[t] = ref_row_validity(info, logits, t) == REF_ROW_VALID;
        if (!valid[t]) continue;
        rows += 1.0f;
        for (uint32_t e = 0; e < E; ++e) top = fmaxf(top, noisy_at(info, call, logits, t, e));
    }
    for (uint32_t e = 0; e < E; ++e) {
        int live = 0;
        for (uint32_t t = 0; t < T && !live; ++t)
            live = valid[t] && !isinf(noisy_at(info, call, logits, t, e));
        columns += live ? 1.0f : 0.0f;
        out->d1[e] = 1.0f;
    }
    out->shift = fmaxf(0.0f, top - 60.0f);
#define KERNEL(t, e)                                                                               \
    (isinf(noisy_at(info, call, logits, t, e))                                                     \
         ? 0.0f                                                                                    \
         : expf(noisy_at(info, call, logits, t, e) - out->shift))
    out->iterations = 0;
    out->error = 0.0f;
    while (out->iterations < cap) {
        for (uint32_t t = 0; t < T; ++t) {
            if (!valid[t]) continue;
            float sum = 0.0f;
            for (uint32_t e = 0; e < E; ++e) sum += out->d1[e] * KERNEL(t, e);
            out->d0[t] = 1.0f / (rows * sum + 1e-8f);
        }
        double moved = 0.0;
        for (uint32_t e = 0; e < E; ++e) {
            /* A column's sum over all T tokens, in double: the device sums it in a tree of
             * blocks, whose rounding error stays far below f32 summed in token order (at T in
             * the tens of thousands, that order's error alone passes the 1e-4 tolerance). */
            double sum = 0.0;
            for (uint32_t t = 0; t < T; ++t)
                if (valid[t]) sum += (double)(out->d0[t] * KERNEL(t, e));
            float d1 = 1.0f / (columns * (float)sum + 1e-8f);
            moved += fabsf(d1 - out->d1[e]);
            out->d1[e] = d1;
        }
        ++out->iterations;
        out->error = (float)(moved / E);
        if (out->error < 1e-4f) break;
    }
#undef KERNEL
    free(valid);
    return 1;
}

float ref_sinkhorn_key(const ref_sinkhorn_factors *factors, float noisy, uint32_t token,
                       uint32_t expert) {
    if (!isfinite(noisy)) return noisy;
    float scaled = factors->d1[expert] * expf(noisy - factors->shift);
    return scaled * factors->d0[token];
}
