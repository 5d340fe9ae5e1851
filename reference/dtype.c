/* 16-bit float conversions of the reference: exact widening, round-to-nearest-even narrowing. */
#include <math.h>
#include <string.h>

#include "moevk_reference.h"

static uint32_t float_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    return bits;
}

static float bits_float(uint32_t bits) {
    float value;
    memcpy(&value, &bits, 4);
    return value;
}

float ref_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    if (exponent == 0x1F) return bits_float(sign | 0x7F800000u | (mantissa << 13));
    if (exponent == 0) {
        float value = ldexpf((float)mantissa, -24);
        return sign ? -value : value;
    }
    return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t ref_float_to_half(float value) {
    uint32_t bits = float_bits(value);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    if (isnan(value)) return sign | 0x7E00;
    float magnitude = fabsf(value);
    if (magnitude >= 65520.0f) return sign | 0x7C00; /* rounds to infinity */
    if (magnitude < ldexpf(1.0f, -14)) {
        /* Subnormal: a multiple of 2^-24, rounded to nearest even by rintf. */
        return sign | (uint16_t)rintf(magnitude * 16777216.0f);
    }
    uint32_t m = float_bits(magnitude);
    uint32_t rounded = m + 0xFFF + ((m >> 13) & 1);
    return sign | (uint16_t)((rounded >> 13) - (112u << 10));
}

float ref_bf16_to_float(uint16_t bits) { return bits_float((uint32_t)bits << 16); }

uint16_t ref_float_to_bf16(float value) {
    uint32_t bits = float_bits(value);
    if (isnan(value)) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

float ref_load(const void *data, uint64_t i, moevk_dtype dtype) {
    switch (dtype) {
    case MOEVK_DTYPE_F16: return ref_half_to_float(((const uint16_t *)data)[i]);
    case MOEVK_DTYPE_BF16: return ref_bf16_to_float(((const uint16_t *)data)[i]);
    case MOEVK_DTYPE_F32: return ((const float *)data)[i];
    default: return ref_quant_weight(data, i, dtype);
    }
}

void ref_store(void *data, uint64_t i, moevk_dtype dtype, float value) {
    switch (dtype) {
    case MOEVK_DTYPE_F16: ((uint16_t *)data)[i] = ref_float_to_half(value); break;
    case MOEVK_DTYPE_BF16: ((uint16_t *)data)[i] = ref_float_to_bf16(value); break;
    default: ((float *)data)[i] = value; break;
    }
}
