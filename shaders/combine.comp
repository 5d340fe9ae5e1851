#version 450
#extension GL_GOOGLE_include_directive : require
// Combine: combined[t] = sum over j ascending of weights[t, j] * expert_out[rows[t, j]], over
// the kept choices (rows >= 0), accumulated in f32 whatever the storage type; a token with no
// kept choice gets zeros. Grid: any 2D size; y strides over tokens, x over a row's units.
#include "combine.h"
#define STAGE_BUFFERS COMBINE_BUFFERS
#define STAGE_PARAMS COMBINE_PARAMS
#include "common.glsl"
#include "rows.glsl"


bool experts_chose() { return (P.flags & FLAG_EXPERT_CHOICE) != 0u; }

// A token's row j: its choice j's; with expert choice, the j-th of its compacted rows
// (expert_choice.comp), which end at the first -1.
int row_of(uint token, uint j) {
    return experts_chose() ? compact_rows[token * CHOICES + j] : rows[token * CHOICES + j];
}

// The weight of a token's kept choice j with its row: column j's; with expert choice, the column
// of the row's expert, row / C.
float weight_of(uint token, uint j, int row) {
    return weights[token * CHOICES + (experts_chose() ? uint(row) / P.capacity : j)];
}

// Sum for one element of one token (16-bit types with odd d).
float combine_element(uint token, uint col) {
    float acc = 0.0;
    for (uint j = 0u; j < CHOICES; ++j) {
        int row = row_of(token, j);
        if (row < 0) {
            if (experts_chose()) break; // compacted: nothing follows
            continue;
        }
        uint index = uint(row) * P.hidden_size + col;
        acc += weight_of(token, j, row) *
               (DTYPE == DTYPE_F32 ? uintBitsToFloat(expert_out_word(index))
                                   : decode_element(expert_out_word(index >> 1), index, DTYPE));
    }
    return acc;
}

// One token per y: its rows and weights read once, then the row's units along x.
void combine_rows(uint unit) {
    uint per_row = row_bytes() / unit;
    uint column_stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint token = gl_WorkGroupID.y; token < P.num_tokens; token += gl_NumWorkGroups.y) {
        // Every column's row (-1: not kept; expert choice: -1 from the first -1 on, as its
        // rows are compacted), indexed by j alone so that the driver can keep them in
        // registers when it unrolls the loops over CHOICES (k); the kept ones are added in
        // ascending j (expert choice: ascending expert).
        int row[CHOICES];
        float w[CHOICES];
        bool ended = false;
        for (uint j = 0u; j < CHOICES; ++j) {
            int r = ended ? -1 : row_of(token, j);
            ended = ended || (experts_chose() && r < 0);
            row[j] = r;
            w[j] = r < 0 ? 0.0 : weight_of(token, j, r);
        }
        for (uint col = gl_GlobalInvocationID.x; col < per_row; col += column_stride) {
            if (unit == 16u) {
                vec4 acc_low = vec4(0.0), acc_high = vec4(0.0);
                for (uint j = 0u; j < CHOICES; ++j) {
                    if (row[j] < 0) {
                        if (experts_chose()) break; // compacted: nothing follows
                        continue;
                    }
                    uvec4 v = expert_out_unit(uint(row[j]) * per_row + col);
                    if (DTYPE == DTYPE_F32) {
                        acc_low += w[j] * uintBitsToFloat(v);
                    } else {
                        for (uint i = 0u; i < 4u; ++i) {
                            acc_low[i] += w[j] * decode_element(v[i], 0u, DTYPE);
                            acc_high[i] += w[j] * decode_element(v[i], 1u, DTYPE);
                        }
                    }
                }
                uvec4 result;
                if (DTYPE == DTYPE_F32) {
                    result = floatBitsToUint(acc_low);
                } else {
                    for (uint i = 0u; i < 4u; ++i)
                        result[i] = encode_half(acc_low[i], DTYPE) | (encode_half(acc_high[i], DTYPE) << 16);
                }
                store_combined_unit(token * per_row + col, result);
            } else {
                float acc_low = 0.0, acc_high = 0.0;
                for (uint j = 0u; j < CHOICES; ++j) {
                    if (row[j] < 0) {
                        if (experts_chose()) break; // compacted: nothing follows
                        continue;
                    }
                    uint v = expert_out_word(uint(row[j]) * per_row + col);
                    acc_low += w[j] * decode_element(v, 0u, DTYPE);
                    if (DTYPE != DTYPE_F32) acc_high += w[j] * decode_element(v, 1u, DTYPE);
                }
                store_combined_word(token * per_row + col,
                                    DTYPE == DTYPE_F32 ? floatBitsToUint(acc_low)
                                                       : encode_half(acc_low, DTYPE) | (encode_half(acc_high, DTYPE) << 16));
            }
        }
    }
}

void main() {
    uint unit = unit_bytes();
    if (unit != 0u) {
        combine_rows(unit);
        return;
    }
    // 16-bit, odd d: one output word = two elements, maybe of two tokens.
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    uint first_invocation = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
                            gl_LocalInvocationID.x;
    uint elements = P.num_tokens * P.hidden_size;
    uint words = (elements + 1u) / 2u;
    for (uint w = first_invocation; w < words; w += stride) {
        uint first = 2u * w;
        uint low = encode_half(combine_element(first / P.hidden_size, first % P.hidden_size), DTYPE);
        uint high = 0u;
        if (first + 1u < elements)
            high = encode_half(combine_element((first + 1u) / P.hidden_size, (first + 1u) % P.hidden_size), DTYPE);
        store_combined_word(w, low | (high << 16));
    }
}
