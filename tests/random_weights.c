/* random_weights.h: scales written as f16 in each block's place (reference/quant.c's layout). */
#include "random_weights.h"

#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"

uint64_t weights_bytes(moevk_dtype type, uint64_t count) {
    return ref_matrix_bytes(type, 1, count);
}

static void put_half(uint8_t *at, float value) {
    uint16_t h = ref_float_to_half(value);
    at[0] = (uint8_t)h;
    at[1] = (uint8_t)(h >> 8);
}

void *random_weights(uint64_t count, moevk_dtype type, float scale) {
    uint64_t bytes = weights_bytes(type, count);
    uint8_t *data = malloc(bytes + 4);
    if (!data) return NULL;
    uint32_t block = ref_block_weights(type);
    if (block == 1) {
        for (uint64_t i = 0; i < count; ++i) ref_store(data, i, type, rng_normal() * scale);
        return data;
    }
    for (uint64_t i = 0; i < bytes; ++i) data[i] = (uint8_t)rng_u32();
    uint64_t block_bytes = bytes / (count / block);
    for (uint64_t b = 0; b < count / block; ++b) {
        uint8_t *at = data + b * block_bytes;
        float u = rng_uniform(0.5f, 1.5f);
        switch (type) {
        case MOEVK_DTYPE_Q8_0: put_half(at, scale * u / 64.0f); break; /* q up to 127 */
        case MOEVK_DTYPE_Q4_0: put_half(at, scale * u / 4.0f); break;  /* q - 8 up to 8 */
        case MOEVK_DTYPE_Q4_K: /* d sc q - dmin m: sc and m up to 63, q up to 15 */
            put_half(at, scale * u / 300.0f);
            put_half(at + 2, scale * rng_uniform(0.0f, 1.0f) / 60.0f);
            break;
        case MOEVK_DTYPE_Q6_K: put_half(at + 208, scale * u / 1500.0f); break; /* sc q to 4096 */
        case MOEVK_DTYPE_Q5_0: put_half(at, scale * u / 8.0f); break;          /* q - 16 up to 16 */
        case MOEVK_DTYPE_Q5_K: /* d sc q - dmin m: q up to 31 */
            put_half(at, scale * u / 600.0f);
            put_half(at + 2, scale * rng_uniform(0.0f, 1.0f) / 60.0f);
            break;
        default: break;
        }
    }
    return data;
}
