/* Reference of shaders/dispatch.comp (a bit-exact gather) and shaders/combine.comp (weighted
 * sum of expert rows per token, j ascending, in f32). */
#include <string.h>

#include "moevk_reference.h"

void ref_dispatch(uint64_t num_rows, uint64_t row_bytes, const int32_t *row_token,
                  const void *hidden, void *out) {
    for (uint64_t r = 0; r < num_rows; ++r) {
        char *destination = (char *)out + r * row_bytes;
        if (row_token[r] < 0)
            memset(destination, 0, row_bytes);
        else
            memcpy(destination, (const char *)hidden + (uint64_t)row_token[r] * row_bytes,
                   row_bytes);
    }
}

void ref_combine(const moevk_router_info *info, uint32_t T, const int32_t *rows,
                 const float *weights, const void *expert_out, void *combined) {
    uint32_t K = info->top_k, d = info->hidden_size;
    moevk_dtype type = info->hidden_type;
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t i = 0; i < d; ++i) {
            float acc = 0.0f;
            for (uint32_t j = 0; j < K; ++j) {
                int32_t row = rows[(uint64_t)t * K + j];
                if (row < 0) continue;
                acc += weights[(uint64_t)t * K + j] *
                       ref_load(expert_out, (uint64_t)row * d + i, type);
            }
            ref_store(combined, (uint64_t)t * d + i, type, acc);
        }
}
