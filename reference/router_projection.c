/* The router projection's reference: logits[t, e] = sum over j ascending of hidden[t, j] *
 * W_router[e, j] in f32, each product and sum correctly rounded (compiled with
 * -ffp-contract=off, as the shader's are `precise`). */
#include "moevk_reference.h"

void ref_router_projection(const moevk_router_info *info, uint32_t T, const void *hidden,
                           const float *router_weights, float *logits) {
    uint32_t E = info->num_experts, d = info->hidden_size;
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t e = 0; e < E; ++e) {
            float sum = 0.0f;
            for (uint32_t j = 0; j < d; ++j) {
                float term = ref_load(hidden, (uint64_t)t * d + j, info->hidden_type) *
                             router_weights[(uint64_t)e * d + j];
                sum = sum + term;
            }
            logits[(uint64_t)t * E + e] = sum;
        }
}
