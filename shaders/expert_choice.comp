#version 450
#extension GL_GOOGLE_include_directive : require
// EXPERT_CHOICE mode: each expert takes its top-C tokens by the keys scores_topk left in the
// weight columns [T, E] (-1: not eligible), ties to the lower token. Grid: E workgroups, one per
// expert. The C-th largest key is found by a radix select over its bits (non-negative floats
// order as their bits), four 8-bit digits from the top, each a shared-memory histogram; then one
// pass in token order takes the keys above it and, of those equal to it, the first ones, and
// numbers the taken tokens (their slots) by a workgroup prefix sum. Integer counts and fixed
// orders only: the same result on every device and subgroup size.
// Phase 0 writes, for column e of every token: expert id, slot, weight (the routing score times
// scale), or -1, -1, 0; row_token of the expert's rows; expert_info totals and kept counts
// (equal: expert choice drops nothing). Phase 1 (grid-stride over tokens) compacts each token's
// rows: rows[t, 0 ..] = e * C + slot of the experts that took it, ascending e, then -1, so that
// combine reads a token's few rows instead of E columns (it finds e again as row / C).
#include "common.glsl"
#include "noise.glsl"
#include "scores.glsl"
#include "scan.glsl"

shared uint histogram[256];
shared uint chosen_digit, still_needed;

uint key_bits(uint token, uint expert) { return floatBitsToUint(weights[token * P.num_experts + expert]); }
bool eligible(uint bits) { return (bits & 0x80000000u) == 0u; } // keys >= 0; -1 is not

// The weight of a taken token: its routing score (softmax probability, or sigmoid, of the
// logits the scores use) times scale.
float choice_weight(uint token, uint expert) {
    if ((P.flags & FLAG_SIGMOID) == 0u) return probability(token, expert, row_stats[token]) * P.scale;
    float logit = score_logit(logit_at(token, expert), token, expert);
    return 1.0 / (1.0 + exp(-(logit / P.temperature))) * P.scale;
}

void compact_rows() {
    uint E = P.num_experts;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride) {
        uint kept = 0u;
        for (uint e = 0u; e < E; ++e) {
            int slot = slots[t * E + e];
            if (slot >= 0) rows[t * E + kept++] = int(e * P.capacity) + slot;
        }
        for (uint i = kept; i < E; ++i) rows[t * E + i] = -1;
    }
}

void main() {
    if (P.phase == 1u) {
        compact_rows();
        return;
    }
    uint expert = gl_WorkGroupID.x, lane = gl_LocalInvocationID.x, width = gl_WorkGroupSize.x;
    uint E = P.num_experts, T = P.num_tokens, C = P.capacity;

    // The threshold: the C-th largest eligible key's bits, and how many keys equal to it to take.
    uint prefix = 0u, prefix_mask = 0u, needed = C;
    uint eligible_here = 0u;
    for (uint t = lane; t < T; t += width) eligible_here += eligible(key_bits(t, expert)) ? 1u : 0u;
    uint eligible_count;
    workgroup_inclusive_scan(eligible_here, eligible_count);
    bool take_all = eligible_count <= C;
    for (int shift = 24; shift >= 0 && !take_all && C > 0u; shift -= 8) {
        for (uint i = lane; i < 256u; i += width) histogram[i] = 0u;
        barrier();
        for (uint t = lane; t < T; t += width) {
            uint bits = key_bits(t, expert);
            if (eligible(bits) && (bits & prefix_mask) == prefix)
                atomicAdd(histogram[(bits >> uint(shift)) & 255u], 1u);
        }
        barrier();
        if (lane == 0u) {
            uint above = 0u;
            int digit = 255;
            while (above + histogram[digit] < needed) above += histogram[digit--];
            chosen_digit = uint(digit);
            still_needed = needed - above;
        }
        barrier();
        prefix |= chosen_digit << uint(shift);
        prefix_mask |= 255u << uint(shift);
        needed = still_needed;
        barrier(); // chosen_digit and histogram are rewritten next round
    }

    // Token order: take, number, write.
    uint taken_before = 0u, equal_before = 0u;
    for (uint first = 0u; first < T; first += width) {
        uint t = first + lane;
        uint bits = t < T ? key_bits(t, expert) : 0xFFFFFFFFu;
        bool ok = t < T && eligible(bits) && C > 0u;
        bool above = ok && (take_all || bits > prefix);
        bool equal = ok && !take_all && bits == prefix;
        uint equal_total;
        uint equal_rank = equal_before + workgroup_inclusive_scan(equal ? 1u : 0u, equal_total) - 1u;
        bool taken = above || (equal && equal_rank < needed);
        uint taken_total;
        uint slot = taken_before + workgroup_inclusive_scan(taken ? 1u : 0u, taken_total) - 1u;
        if (t < T) {
            uint choice = t * E + expert;
            expert_ids[choice] = taken ? int(expert) : -1;
            slots[choice] = taken ? int(slot) : -1;
            weights[choice] = taken ? choice_weight(t, expert) : 0.0;
            if (taken) row_token[expert * C + slot] = int(t);
        }
        taken_before += taken_total;
        equal_before += equal_total;
    }
    if (lane == 0u) {
        expert_info[expert] = taken_before;
        expert_info[E + expert] = taken_before;
    }
}
