#version 450
#extension GL_GOOGLE_include_directive : require
// The layer's combine: output[t] = sum over j ascending of weights[t, j] * expert_out[rows[t, j]]
// (the f32 outputs of expert_down.comp), over the kept choices, plus the shared experts' output
// shared_out[t] when the layer has them, in f32, stored in hidden_type. A token whose logits
// are not finite (a NaN or an infinity in its hidden state) was routed nowhere: its output is
// NaN, so that the fault stays in that token's row. Grid: any 2D size, one output word (two
// elements of a 16-bit type) per invocation.
#include "layer_combine.h"
#define STAGE_BUFFERS LAYER_COMBINE_BUFFERS
#define STAGE_PARAMS LAYER_COMBINE_PARAMS
#include "common.glsl"

bool experts_chose() { return (P.flags & FLAG_EXPERT_CHOICE) != 0u; }

float output_element(uint token, uint col) {
    if (row_flags[token] == ROW_NONFINITE) return uintBitsToFloat(0x7FC00000u);
    float acc = 0.0;
    for (uint j = 0u; j < CHOICES; ++j) {
        // With expert choice, the token's compacted rows (expert_choice.comp), ending at -1.
        int row = experts_chose() ? compact_rows[token * CHOICES + j] : rows[token * CHOICES + j];
        if (row < 0) {
            if (experts_chose()) break;
            continue;
        }
        float weight = weights[token * CHOICES + (experts_chose() ? uint(row) / P.capacity : j)];
        acc += weight * uintBitsToFloat(expert_out_words[uint(row) * P.hidden_size + col]);
    }
    if ((P.flags & FLAG_SHARED_EXPERT) != 0u) acc += shared_out[token * P.hidden_size + col];
    return acc;
}

void main() {
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    uint first_invocation = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
                            gl_LocalInvocationID.x;
    uint d = P.hidden_size, elements = P.num_tokens * d;
    uint per_word = DTYPE == DTYPE_F32 ? 1u : 2u;
    uint words = (elements + per_word - 1u) / per_word;
    for (uint w = first_invocation; w < words; w += stride) {
        uint first = per_word * w;
        float low = output_element(first / d, first % d);
        if (DTYPE == DTYPE_F32) {
            combined_words[w] = floatBitsToUint(low);
            continue;
        }
        uint high = first + 1u < elements ? encode_half(output_element((first + 1u) / d, (first + 1u) % d), DTYPE) : 0u;
        combined_words[w] = encode_half(low, DTYPE) | (high << 16);
    }
}
