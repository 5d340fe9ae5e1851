// What every stage's shader starts from: the shared constants, the specialization constants, the
// stage's push constants and buffers (from its own header), and the accessors of the buffers
// that may be reached through device addresses. A shader includes its header, defines
// STAGE_PARAMS and STAGE_BUFFERS as that header's lists, then includes this file.
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
layout(constant_id = SPEC_CHOICES) const uint CHOICES = 1;
layout(constant_id = SPEC_SELECTION_K) const uint SELECTION_K = 1;
layout(constant_id = SPEC_NUM_EXPERTS) const uint NUM_EXPERTS = 1;
layout(constant_id = SPEC_DTYPE) const uint DTYPE = 0;
layout(constant_id = SPEC_HIDDEN_DTYPE) const uint HIDDEN_DTYPE = 0;
layout(constant_id = SPEC_GROUPS) const uint GROUPS = 1;
layout(constant_id = SPEC_TOPK_GROUPS) const uint TOPK_GROUPS = 1;
layout(constant_id = SPEC_ACTIVATION) const uint ACTIVATION = 0;

// The stage's own push constants, from its header's parameter list (STAGE_PARAMS; the C side
// builds the same struct from the same list, engine/stage.h), and the buffers its header lists
// (STAGE_BUFFERS): nothing else is declared.
#if !defined(STAGE_PARAMS) || !defined(STAGE_BUFFERS)
#error "a stage defines STAGE_PARAMS and STAGE_BUFFERS (from its header) before common.glsl"
#endif
#define PARAM_U32(name) uint name;
#define PARAM_F32(name) float name;
#define PARAM_ADDRESS(name) uvec2 name;
layout(push_constant) uniform Params { STAGE_PARAMS(PARAM_U32, PARAM_F32, PARAM_ADDRESS) } P;

#include "buffers.glsl"
STAGE_BUFFERS(DECLARE_BUFFER)

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

// Macros, not functions: a stage needs only the buffers of the accessors it uses.
#define logits_word(i) WORD_AT(logits, i)
#define store_logits_word(i, value) WORD_AT(logits, i) = (value)
#define hidden_word(i) WORD_AT(hidden, i)
#define hidden_unit(i) VEC4_AT(hidden, i)
#define expert_out_word(i) WORD_AT(expert_out, i)
#define expert_out_unit(i) VEC4_AT(expert_out, i)
#define store_dispatched_word(i, value) WORD_AT(dispatched, i) = (value)
#define store_dispatched_unit(i, value) VEC4_AT(dispatched, i) = (value)
#define store_combined_word(i, value) WORD_AT(combined, i) = (value)
#define store_combined_unit(i, value) VEC4_AT(combined, i) = (value)

// Element i of a buffer of 32-bit words holding f32, or pairs of 16-bit values (low half first).
float decode_element(uint word, uint index, uint dtype) {
    if (dtype == DTYPE_F32) return uintBitsToFloat(word);
    uint half_bits = (index & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16);
    if (dtype == DTYPE_F16) return unpackHalf2x16(half_bits).x;
    return uintBitsToFloat(half_bits << 16);
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
