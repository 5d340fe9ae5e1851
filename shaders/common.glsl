// Declarations every stage shares: the shared constants, the push constants (mirrored by
// route_params in engine/internal.h) and the storage buffers of the one descriptor set. A stage
// uses the buffers it needs; the others are declared but never touched.
#ifdef MOEVK_ADDRESSES
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#endif
#include "moevk_shared.h"

#ifdef MOEVK_RTE
// Round-to-nearest-even f32 arithmetic (SPIR-V RoundingModeRTE, capability RoundingModeRTE),
// for the variant used where the device offers it: jitter must round as the CPU does.
#extension GL_EXT_spirv_intrinsics : require
spirv_execution_mode(capabilities = [4467], 4462, 32);
#endif

layout(local_size_x_id = SPEC_WORKGROUP_SIZE) in;
layout(constant_id = SPEC_TOP_K) const uint TOP_K = 1;
layout(constant_id = SPEC_NUM_EXPERTS) const uint NUM_EXPERTS = 1;
layout(constant_id = SPEC_DTYPE) const uint DTYPE = 0;
layout(constant_id = SPEC_HIDDEN_DTYPE) const uint HIDDEN_DTYPE = 0;
layout(constant_id = SPEC_GROUPS) const uint GROUPS = 1;
layout(constant_id = SPEC_TOPK_GROUPS) const uint TOPK_GROUPS = 1;

layout(push_constant) uniform Params {
    uint num_tokens;
    uint num_experts;
    uint top_k;
    uint hidden_size;
    uint capacity;
    uint flags;
    uint num_blocks;
    uint block_size;
    uint pad_multiple;
    uint stat_blocks;
    uint rows_per_stat_block;
    uint dispatched_rows;
    float temperature;
    float scale;
    uint phase;
    uint mode_param; // SEQUENCE, BATCH: tokens per sequence; SINKHORN: the iteration cap
#ifdef MOEVK_LOSS_PARAMS
    // The losses stage never uses device addresses: it holds its coefficients there instead
    // (engine/internal.h: loss_params).
    float aux_coef;
    float z_coef;
    float importance_coef;
    float load_coef;
    float entropy_coef;
    float sequence_coef;
    uint sequence_length;
    uint valid_rows;
    uint assignments;
    uint token_chunk; // NOISE_REDUCE: which TOKEN_CHUNK tokens this dispatch sums
#else
    // Device addresses of the buffers that grow with d or E, used by the MOEVK_ADDRESSES
    // variants of the stages when a buffer passes maxStorageBufferRange.
    uvec2 logits_address;
    uvec2 hidden_address;
    uvec2 dispatched_address;
    uvec2 expert_out_address;
    uvec2 combined_address;
#endif
    // Router noise (noise.glsl).
    uint noise_kind;
    float noise_amount; // jitter eps, Gaussian std, Gumbel scale; learned std: noise_epsilon
    uint noise_seed_low;
    uint noise_seed_high;
    uint noise_step;
    uint noise_layer;
} P;

layout(std430, binding = BINDING_LOGITS) readonly buffer Logits { uint logits_words[]; };
layout(std430, binding = BINDING_BIAS) readonly buffer Bias { float bias[]; };
layout(std430, binding = BINDING_EXPERT_IDS) buffer ExpertIds { int expert_ids[]; };
layout(std430, binding = BINDING_WEIGHTS) buffer Weights { float weights[]; };
layout(std430, binding = BINDING_ROW_STATS) buffer RowStats { vec4 row_stats[]; };
layout(std430, binding = BINDING_ROW_FLAGS) buffer RowFlags { uint row_flags[]; };
layout(std430, binding = BINDING_BLOCK_COUNTS) buffer BlockCounts { uint block_counts[]; };
layout(std430, binding = BINDING_EXPERT_INFO) buffer ExpertInfo { uint expert_info[]; };
layout(std430, binding = BINDING_SLOTS) buffer Slots { int slots[]; };
layout(std430, binding = BINDING_ROWS) buffer Rows { int rows[]; };
layout(std430, binding = BINDING_ROW_TOKEN) buffer RowToken { int row_token[]; };
layout(std430, binding = BINDING_ORDER) buffer Order { uint order[]; };
layout(std430, binding = BINDING_HIDDEN) readonly buffer Hidden { uint hidden_words[]; };
layout(std430, binding = BINDING_DISPATCHED) buffer Dispatched { uint dispatched_words[]; };
layout(std430, binding = BINDING_EXPERT_OUT) readonly buffer ExpertOut { uint expert_out_words[]; };
layout(std430, binding = BINDING_COMBINED) buffer Combined { uint combined_words[]; };
layout(std430, binding = BINDING_STAT_PARTIALS) buffer StatPartials { float stat_partials[]; };
layout(std430, binding = BINDING_STAT_TOTALS) buffer StatTotals { float stat_totals[]; };
layout(std430, binding = BINDING_LOSS_ROWS) buffer LossRows { vec4 loss_rows[]; };
layout(std430, binding = BINDING_LOSS_PARTIALS) buffer LossPartials { float loss_partials[]; };
layout(std430, binding = BINDING_LOSS_TOTALS) buffer LossTotals { float loss_totals[]; };
layout(std430, binding = BINDING_SEQ_COUNTS) buffer SeqCounts { uint seq_counts[]; };
layout(std430, binding = BINDING_GRAD_WEIGHTS) buffer GradWeights { float grad_weights[]; };
layout(std430, binding = BINDING_GRAD_LOGITS) buffer GradLogits { float grad_logits[]; };
layout(std430, binding = BINDING_NOISE_STD) buffer NoiseStd { float noise_std_values[]; };
layout(std430, binding = BINDING_NOISE_WEIGHTS) readonly buffer NoiseWeights { float noise_weights[]; };
layout(std430, binding = BINDING_GRAD_NOISE) buffer GradNoise { float grad_noise[]; };
// Coherent: the Sinkhorn and sequence stages read, within a workgroup, what its other
// invocations wrote.
layout(std430, binding = BINDING_DECISIONS) coherent buffer Decisions { float decisions[]; };
// The same binding as 32-bit words, for the counts and dispatch arguments kept among them.
layout(std430, binding = BINDING_DECISIONS) coherent buffer DecisionWords { uint decision_words[]; };
layout(std430, binding = BINDING_HIDDEN) readonly buffer HiddenVec4 { uvec4 hidden_vec4[]; };
layout(std430, binding = BINDING_DISPATCHED) buffer DispatchedVec4 { uvec4 dispatched_vec4[]; };
layout(std430, binding = BINDING_EXPERT_OUT) readonly buffer ExpertOutVec4 { uvec4 expert_out_vec4[]; };
layout(std430, binding = BINDING_COMBINED) buffer CombinedVec4 { uvec4 combined_vec4[]; };

// The buffers that grow with d or E are reached through these accessors: through their
// descriptors, or, compiled with MOEVK_ADDRESSES, through buffer device addresses, which no
// maxStorageBufferRange limits. Indices count 32-bit words or 16-byte units.
#ifdef MOEVK_ADDRESSES
layout(buffer_reference, std430, buffer_reference_align = 4) buffer WordRef { uint value; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4Ref { uvec4 value; };

// base + index * stride, in 64 bits held as (low, high).
uvec2 address_at(uvec2 base, uint index, uint stride) {
    uint high, low, carry;
    umulExtended(index, stride, high, low);
    uint sum = uaddCarry(base.x, low, carry);
    return uvec2(sum, base.y + high + carry);
}
#define WORD_AT(name, i) WordRef(address_at(P.name##_address, (i), 4u)).value
#define VEC4_AT(name, i) Vec4Ref(address_at(P.name##_address, (i), 16u)).value
#else
#define WORD_AT(name, i) name##_words[i]
#define VEC4_AT(name, i) name##_vec4[i]
#endif

uint logits_word(uint i) { return WORD_AT(logits, i); }
uint hidden_word(uint i) { return WORD_AT(hidden, i); }
uvec4 hidden_unit(uint i) { return VEC4_AT(hidden, i); }
uint expert_out_word(uint i) { return WORD_AT(expert_out, i); }
uvec4 expert_out_unit(uint i) { return VEC4_AT(expert_out, i); }
void store_dispatched_word(uint i, uint value) { WORD_AT(dispatched, i) = value; }
void store_dispatched_unit(uint i, uvec4 value) { VEC4_AT(dispatched, i) = value; }
void store_combined_word(uint i, uint value) { WORD_AT(combined, i) = value; }
void store_combined_unit(uint i, uvec4 value) { VEC4_AT(combined, i) = value; }

// Element i of a buffer of 32-bit words holding f32, or pairs of 16-bit values (low half first).
float decode_element(uint word, uint index, uint dtype) {
    if (dtype == DTYPE_F32) return uintBitsToFloat(word);
    uint half_bits = (index & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16);
    if (dtype == DTYPE_F16) return unpackHalf2x16(half_bits).x;
    return uintBitsToFloat(half_bits << 16);
}

// Element i of the hidden states [T, d] (hidden_type).
float hidden_element(uint i) {
    if (HIDDEN_DTYPE == DTYPE_F32) return uintBitsToFloat(hidden_word(i));
    return decode_element(hidden_word(i >> 1), i, HIDDEN_DTYPE);
}

// f32 to bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
uint bf16_bits(float value) {
    uint bits = floatBitsToUint(value);
    if (isnan(value)) return (bits >> 16) | 0x40u;
    return (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
}

uint encode_half(float value, uint dtype) {
    if (dtype == DTYPE_F16) return packHalf2x16(vec2(value, 0.0)) & 0xFFFFu;
    return bf16_bits(value);
}

// Assignment `a` in k-major order (rank-major, then token) -> index into the [T, k] arrays.
uint assignment_to_choice(uint a) {
    uint rank = a / P.num_tokens;
    uint token = a - rank * P.num_tokens;
    return token * P.top_k + rank;
}
