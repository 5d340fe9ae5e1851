/* ggml's block formats, decoded one weight at a time from the formats' descriptions (ggml's
 * block_q8_0, block_q4_0, block_q4_K, block_q6_K), with f32 steps in the order ggml's
 * dequantize_row_* takes them: the same bits as llama.cpp's CPU dequantization. */
#include "moevk_reference.h"

typedef struct block_format {
    uint32_t weights, bytes;
} block_format;

static block_format format_of(moevk_dtype type) {
    switch (type) {
    case MOEVK_DTYPE_Q8_0: return (block_format){32, 34};
    case MOEVK_DTYPE_Q4_0: return (block_format){32, 18};
    case MOEVK_DTYPE_Q4_K: return (block_format){256, 144};
    case MOEVK_DTYPE_Q6_K: return (block_format){256, 210};
    case MOEVK_DTYPE_Q5_0: return (block_format){32, 22};
    case MOEVK_DTYPE_Q5_K: return (block_format){256, 176};
    case MOEVK_DTYPE_F32: return (block_format){1, 4};
    default: return (block_format){1, 2};
    }
}

uint32_t ref_block_weights(moevk_dtype type) { return format_of(type).weights; }

uint64_t ref_matrix_bytes(moevk_dtype type, uint64_t rows, uint64_t cols) {
    block_format f = format_of(type);
    return rows * (cols / f.weights) * f.bytes;
}

static float half_at(const uint8_t *bytes) {
    return ref_half_to_float((uint16_t)(bytes[0] | bytes[1] << 8));
}

/* Q4_K's 6-bit scale and min of sub-block j (0..7) from its 12 packed bytes. */
static void scale_min_k4(const uint8_t *q, int j, uint8_t *scale, uint8_t *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *min = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

float ref_quant_weight(const void *blocks, uint64_t i, moevk_dtype type) {
    block_format f = format_of(type);
    const uint8_t *b = (const uint8_t *)blocks + i / f.weights * f.bytes;
    uint32_t j = (uint32_t)(i % f.weights);
    switch (type) {
    case MOEVK_DTYPE_Q8_0: return (float)(int8_t)b[2 + j] * half_at(b);
    case MOEVK_DTYPE_Q4_0: {
        uint8_t q = b[2 + j % 16];
        int value = (j < 16 ? q & 0xF : q >> 4) - 8;
        return (float)value * half_at(b);
    }
    case MOEVK_DTYPE_Q5_0: {
        /* The fifth bit of weight j is bit j of the 32-bit word after d. */
        uint8_t q = b[6 + j % 16];
        uint32_t high =
            (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        int value = ((j < 16 ? q & 0xF : q >> 4) | (int)((high >> j) & 1) << 4) - 16;
        return (float)value * half_at(b);
    }
    case MOEVK_DTYPE_Q5_K: {
        /* As Q4_K, the quants at byte 48, and each weight's fifth bit in qh (bytes 16..47): bit
         * 2c of byte l for chunk c's low weights l, bit 2c + 1 for its high ones. */
        uint32_t chunk = j / 64, high = (j % 64) / 32, l = j % 32;
        uint8_t q = b[48 + chunk * 32 + l], scale, min;
        int fifth = (b[16 + l] >> (2 * chunk + high)) & 1;
        scale_min_k4(b + 4, (int)(2 * chunk + high), &scale, &min);
        float d = half_at(b) * (float)scale, m = half_at(b + 2) * (float)min;
        return d * (float)((high ? q >> 4 : q & 0xF) + 16 * fifth) - m;
    }
    case MOEVK_DTYPE_Q4_K: {
        /* Each 64 weights: 32 bytes of q, the low nibbles the first 32, sub-blocks 2c, 2c + 1. */
        uint32_t chunk = j / 64, high = (j % 64) / 32, l = j % 32;
        uint8_t q = b[16 + chunk * 32 + l], scale, min;
        scale_min_k4(b + 4, (int)(2 * chunk + high), &scale, &min);
        float d = half_at(b) * (float)scale, m = half_at(b + 2) * (float)min;
        return d * (float)(high ? q >> 4 : q & 0xF) - m;
    }
    case MOEVK_DTYPE_Q6_K: {
        /* Each 128 weights: 64 bytes of ql, 32 of qh, 8 scales; quarter r of 32 takes ql's low
         * (r even) or high (r odd... by pairs) nibbles and qh's bits 2r, 2r + 1. */
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *scales = (const int8_t *)(b + 192);
        uint32_t half = j / 128, r = (j % 128) / 32, l = j % 32;
        uint8_t low = ql[half * 64 + l + (r & 1) * 32];
        int q =
            ((r >= 2 ? low >> 4 : low & 0xF) | (((qh[half * 32 + l] >> (2 * r)) & 3) << 4)) - 32;
        float d = half_at(b + 208);
        return d * (float)scales[half * 8 + l / 16 + 2 * r] * (float)q;
    }
    default: return 0.0f;
    }
}
