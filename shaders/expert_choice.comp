#version 450
#extension GL_GOOGLE_include_directive : require
// EXPERT_CHOICE mode: each expert takes its top-C tokens by the keys scores_topk left in the
// decisions buffer (choice_key_at; -1: not eligible), ties to the lower token. Grid: E
// workgroups, one per expert. The C-th largest key is found by a radix select over its bits
// (non-negative floats order as their bits), four 8-bit digits from the top, each a
// shared-memory histogram; then token order takes the keys above it and, of those equal to it,
// the first ones, and numbers the taken tokens (their slots) by workgroup prefix sums over the
// lanes' runs. Integer counts and fixed orders only: the same result on every device and
// subgroup size.
// Phase 0 writes, for column e of every token: expert id, slot, weight (the routing score times
// scale), or -1, -1, 0; row_token of the expert's rows; expert_info totals and kept counts
// (equal: expert choice drops nothing). Phase 1 (grid-stride over tokens) writes each token's
// rows: rows[t, e] = e * C + slot where expert e took it, else -1, and compacted,
// compact_rows[t, 0 ..] = those rows in ascending e, then -1, so that combine reads a token's few
// rows instead of E columns (it finds e again as row / C).
#include "expert_choice.h"
#define STAGE_BUFFERS EXPERT_CHOICE_BUFFERS
#define STAGE_PARAMS EXPERT_CHOICE_PARAMS
#include "common.glsl"
#include "noise.glsl"
#include "scores.glsl"
#include "scan.glsl"

shared uint histogram[256];
shared uint chosen_digit, still_needed;

uint key_bits(uint token, uint expert) {
    return floatBitsToUint(decisions[choice_key_at(token, expert)]);
}
bool eligible(uint bits) { return (bits & 0x80000000u) == 0u; } // keys >= 0; -1 is not

// The weight of a taken token: its routing score (softmax probability, or sigmoid, of the
// logits the scores use) times scale.
float choice_weight(uint token, uint expert) {
    if ((P.flags & FLAG_SIGMOID) == 0u) return probability(token, expert, row_stats[token]) * P.scale;
    float logit = score_logit(logit_at(token, expert), token, expert);
    return 1.0 / (1.0 + exp(-(logit / P.temperature))) * P.scale;
}

// Whether a key is taken: above the threshold, or equal to it and among the first `needed` such
// in token order (equal_rank counts the equal keys before this one, and advances).
bool is_taken(uint bits, bool take_all, uint threshold, uint needed, inout uint equal_rank) {
    if (!eligible(bits) || P.capacity == 0u) return false;
    if (take_all || bits > threshold) return true;
    if (bits != threshold) return false;
    return equal_rank++ < needed;
}

void write_rows() {
    uint E = P.num_experts;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride) {
        uint kept = 0u;
        for (uint e = 0u; e < E; ++e) {
            int slot = slots[t * E + e];
            int row = slot >= 0 ? int(e * P.capacity) + slot : -1;
            rows[t * E + e] = row;
            if (slot >= 0) compact_rows[t * E + kept++] = row;
        }
        for (uint i = kept; i < E; ++i) compact_rows[t * E + i] = -1;
    }
}

void main() {
    if (P.phase == 1u) {
        write_rows();
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

    // Token order, each lane over a contiguous run of tokens (two workgroup scans in all, not
    // two per 64 tokens): the keys equal to the threshold before each run, then the tokens
    // taken before it, then the writes.
    uint per_lane = (T + width - 1u) / width;
    uint first = min(lane * per_lane, T), last = min(first + per_lane, T);
    uint equal_here = 0u;
    for (uint t = first; t < last; ++t) {
        uint bits = key_bits(t, expert);
        equal_here += eligible(bits) && !take_all && C > 0u && bits == prefix ? 1u : 0u;
    }
    uint equal_total, taken_total;
    uint equal_before = workgroup_inclusive_scan(equal_here, equal_total) - equal_here;
    uint taken_here = 0u, equal_rank = equal_before;
    for (uint t = first; t < last; ++t)
        taken_here += is_taken(key_bits(t, expert), take_all, prefix, needed, equal_rank) ? 1u : 0u;
    uint slot = workgroup_inclusive_scan(taken_here, taken_total) - taken_here;
    equal_rank = equal_before;
    for (uint t = first; t < last; ++t) {
        bool taken = is_taken(key_bits(t, expert), take_all, prefix, needed, equal_rank);
        uint choice = t * E + expert;
        expert_ids[choice] = taken ? int(expert) : -1;
        slots[choice] = taken ? int(slot) : -1;
        weights[choice] = taken ? choice_weight(t, expert) : 0.0;
        if (taken) row_token[expert * C + slot++] = int(t);
    }
    if (lane == 0u) {
        expert_info[expert] = taken_total;
        expert_info[E + expert] = taken_total;
    }
}
