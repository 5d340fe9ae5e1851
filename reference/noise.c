/* Reference of shaders/noise.glsl: Philox4x32-10 and the noisy logits, in plain C with
 * correctly rounded f32 operations and no contraction (this file is built with
 * -ffp-contract=off), so that jitter is bit-identical to the device. */
#include <math.h>

#include "moevk_reference.h"

void ref_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {counter[0], counter[1], counter[2], counter[3]};
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t next[4] = {hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0};
        for (int i = 0; i < 4; ++i) c[i] = next[i];
    }
    for (int i = 0; i < 4; ++i) out[i] = c[i];
}

float ref_noise_uniform(uint32_t word) {
    return (float)(word >> 8) * (1.0f / 16777216.0f) + (1.0f / 33554432.0f);
}

float ref_noise_std(const moevk_router_info *info, const ref_call *call, uint32_t token,
                    uint32_t expert) {
    if (!call || !call->noise_std) return info->noise_amount;
    return call->std_per_token ? call->noise_std[(uint64_t)token * info->num_experts + expert]
                               : call->noise_std[expert];
}

void ref_learned_noise_std(const moevk_router_info *info, uint32_t T, const void *hidden,
                           const float *noise_weights, float *std) {
    uint32_t E = info->num_experts, d = info->hidden_size;
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t e = 0; e < E; ++e) {
            float dot = 0.0f;
            for (uint32_t j = 0; j < d; ++j)
                dot += ref_load(hidden, (uint64_t)t * d + j, info->hidden_type) *
                       noise_weights[(uint64_t)j * E + e];
            float softplus = fmaxf(dot, 0.0f) + logf(1.0f + expf(-fabsf(dot)));
            std[(uint64_t)t * E + e] = softplus + info->noise_epsilon;
        }
}

/* A standard normal number by Box-Muller from Philox words 0 and 1. */
static float standard_normal(const uint32_t bits[4]) {
    return sqrtf(-2.0f * logf(ref_noise_uniform(bits[0]))) *
           cosf(6.2831853071795864f * ref_noise_uniform(bits[1]));
}

/* The Philox words of (token, expert) at the call's step and layer. */
static void noise_bits(const moevk_router_info *info, const ref_call *call, uint32_t token,
                       uint32_t expert, uint32_t bits[4]) {
    uint32_t counter[4] = {token + (call ? call->noise_row_offset : 0), expert,
                           call ? call->step : 0, call ? call->layer : 0};
    uint32_t key[2] = {(uint32_t)info->noise_seed, (uint32_t)(info->noise_seed >> 32)};
    ref_philox4x32_10(counter, key, bits);
}

float ref_gaussian_sample(const moevk_router_info *info, const ref_call *call, uint32_t token,
                          uint32_t expert) {
    uint32_t bits[4];
    noise_bits(info, call, token, expert, bits);
    return standard_normal(bits);
}

float ref_noisy_logit(const moevk_router_info *info, const ref_call *call, float logit,
                      uint32_t token, uint32_t expert) {
    if (info->noise == MOEVK_NOISE_NONE || (call && call->inference) || isinf(logit) ||
        isnan(logit))
        return logit;
    uint32_t bits[4];
    noise_bits(info, call, token, expert, bits);
    float u0 = ref_noise_uniform(bits[0]), amount = info->noise_amount;
    switch (info->noise) {
    case MOEVK_NOISE_JITTER: {
        float factor = (1.0f - amount) + (2.0f * amount) * u0;
        return logit * factor;
    }
    case MOEVK_NOISE_GAUSSIAN:
        return logit + ref_noise_std(info, call, token, expert) * standard_normal(bits);
    default: return logit - amount * logf(-logf(u0));
    }
}

float ref_score_logit(const moevk_router_info *info, const ref_call *call, float logit,
                      uint32_t token, uint32_t expert) {
    return info->noisy_scores ? ref_noisy_logit(info, call, logit, token, expert) : logit;
}
