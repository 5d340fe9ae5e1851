#version 450
#extension GL_GOOGLE_include_directive : require
// The optimizer's step over one parameter (opt_param: the router's W_g, the routed experts'
// gate, up, down or biases, the shared experts' the same, or their gate's w), in phases:
//   OPT_PHASE_WIDEN   master[opt_offset + i] = the stored weight i, as f32
//   OPT_PHASE_NORM    opt_partials[opt_partial_offset + b] = the sum of the gradient's squares
//                     over block b (OPT_BLOCK entries): each invocation its entries ascending,
//                     then a tree over the workgroup, whatever the subgroup size
//   OPT_PHASE_UPDATE  g = gradient * grad_scale; SGD: w -= lr (g + weight_decay w); AdamW as
//                     PyTorch's _single_tensor_adamw, operation for operation (the scalars
//                     step_size = lr / (1 - b1^t), sqrt(1 - b2^t) and keep = 1 - lr decay from
//                     the host); the stored weight rewritten from the master in its type
// 16-bit weights are updated a word (two weights) per invocation, so that no two invocations
// write one word. Grid: any; loops stride over the grid.
#include "optimizer.h"
#define STAGE_BUFFERS OPTIMIZER_BUFFERS
#define STAGE_PARAMS OPTIMIZER_PARAMS
#define STAGE_WRITES_WEIGHTS
#include "common.glsl"

shared float partial[64];

float gradient(uint i) {
    switch (P.opt_param) {
    case OPT_PARAM_ROUTER: return grad_router[i];
    case OPT_PARAM_GATE: return grad_expert_gate[i];
    case OPT_PARAM_UP: return grad_expert_up[i];
    case OPT_PARAM_DOWN: return grad_expert_down[i];
    case OPT_PARAM_BIAS: return grad_expert_bias[i];
    case OPT_PARAM_SHARED_GATE: return grad_shared_gate[i];
    case OPT_PARAM_SHARED_UP: return grad_shared_up[i];
    case OPT_PARAM_SHARED_DOWN: return grad_shared_down[i];
    case OPT_PARAM_SHARED_BIAS: return grad_shared_bias[i];
    default: return grad_shared_expert_gate[i];
    }
}

// The stored word w of the parameter (f32 ones hold one weight, 16-bit ones two).
uint stored_word(uint w) {
    switch (P.opt_param) {
    case OPT_PARAM_ROUTER: return floatBitsToUint(router_weights[w]);
    case OPT_PARAM_GATE: return expert_gate_words[w];
    case OPT_PARAM_UP: return expert_up_words[w];
    case OPT_PARAM_DOWN: return expert_down_words[w];
    case OPT_PARAM_BIAS: return floatBitsToUint(expert_bias[w]);
    case OPT_PARAM_SHARED_GATE: return shared_gate_words[w];
    case OPT_PARAM_SHARED_UP: return shared_up_words[w];
    case OPT_PARAM_SHARED_DOWN: return shared_down_words[w];
    case OPT_PARAM_SHARED_BIAS: return floatBitsToUint(shared_bias[w]);
    default: return floatBitsToUint(shared_gate_weights[w]);
    }
}

void store_word(uint w, uint word) {
    switch (P.opt_param) {
    case OPT_PARAM_ROUTER: router_weights[w] = uintBitsToFloat(word); break;
    case OPT_PARAM_GATE: expert_gate_words[w] = word; break;
    case OPT_PARAM_UP: expert_up_words[w] = word; break;
    case OPT_PARAM_DOWN: expert_down_words[w] = word; break;
    case OPT_PARAM_BIAS: expert_bias[w] = uintBitsToFloat(word); break;
    case OPT_PARAM_SHARED_GATE: shared_gate_words[w] = word; break;
    case OPT_PARAM_SHARED_UP: shared_up_words[w] = word; break;
    case OPT_PARAM_SHARED_DOWN: shared_down_words[w] = word; break;
    case OPT_PARAM_SHARED_BIAS: shared_bias[w] = uintBitsToFloat(word); break;
    default: shared_gate_weights[w] = uintBitsToFloat(word); break;
    }
}

// One parameter's step; returns its new master value.
float step_one(uint i) {
    uint at = P.opt_offset + i;
    // precise: each step rounded as the reference's (no contraction into fused multiply-adds).
    precise float g = gradient(i) * P.grad_scale, w = opt_master[at];
    if (P.opt_adamw == 0u) {
        if (P.weight_decay != 0.0) g = g + P.weight_decay * w;
        w = w - P.learning_rate * g;
    } else {
        w = w * P.keep;
        precise float m = opt_m[at], weight = 1.0 - P.beta1;
        m = weight < 0.5 ? m + weight * (g - m) : g - (g - m) * (1.0 - weight);
        precise float v = opt_v[at] * P.beta2 + (1.0 - P.beta2) * g * g;
        opt_m[at] = m;
        opt_v[at] = v;
        precise float denom = sqrt(v) / P.correction2_sqrt + P.epsilon;
        w = w + (-P.step_size * m) / denom;
    }
    opt_master[at] = w;
    return w;
}

void main() {
    uint lane = gl_LocalInvocationID.x;
    uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint n = P.opt_count;
    if (P.phase == OPT_PHASE_NORM) {
        for (uint b = group; b * OPT_BLOCK < n; b += groups) {
            float sum = 0.0;
            uint end = min(n, (b + 1u) * OPT_BLOCK);
            for (uint i = b * OPT_BLOCK + lane; i < end; i += 64u) {
                float g = gradient(i);
                sum += g * g;
            }
            partial[lane] = sum;
            barrier();
            for (uint half_count = 32u; half_count > 0u; half_count >>= 1u) {
                if (lane < half_count) partial[lane] += partial[lane + half_count];
                barrier();
            }
            if (lane == 0u) opt_partials[P.opt_partial_offset + b] = partial[0];
            barrier();
        }
        return;
    }
    bool halves = P.opt_dtype != DTYPE_F32;
    uint words = halves ? (n + 1u) / 2u : n, stride = groups * gl_WorkGroupSize.x;
    for (uint w = group * gl_WorkGroupSize.x + lane; w < words; w += stride) {
        if (P.phase == OPT_PHASE_WIDEN) {
            uint word = stored_word(w);
            if (!halves) {
                opt_master[P.opt_offset + w] = uintBitsToFloat(word);
                continue;
            }
            opt_master[P.opt_offset + 2u * w] = decode_element(word, 0u, P.opt_dtype);
            if (2u * w + 1u < n) opt_master[P.opt_offset + 2u * w + 1u] = decode_element(word, 1u, P.opt_dtype);
            continue;
        }
        if (!halves) {
            store_word(w, floatBitsToUint(step_one(w)));
            continue;
        }
        uint low = encode_half(step_one(2u * w), P.opt_dtype);
        uint high = 2u * w + 1u < n ? encode_half(step_one(2u * w + 1u), P.opt_dtype)
                                    : stored_word(w) >> 16;
        store_word(w, low | (high << 16));
    }
}
