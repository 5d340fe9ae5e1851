#version 450
#extension GL_GOOGLE_include_directive : require
// Score drop policy: each expert keeps its C assignments of highest weight, ties to the lower
// token and then the lower rank; the kept ones take slots in (rank, token) order.
// Input: `order`, each expert's assignments in (rank, token) order from bucket_assign.
// An overflowing expert finds the exact C-th best key by an 8-pass radix select over the 64-bit
// key (descending weight, then choice index = token * k + rank), then ranks the kept ones by a
// workgroup prefix sum in list order. Writes slots, rows, row_token.
// Grid: E workgroups, one per expert.
#include "score_select.h"
#define STAGE_BUFFERS SCORE_SELECT_BUFFERS
#define STAGE_PARAMS SCORE_SELECT_PARAMS
#include "common.glsl"
#include "scan.glsl"

shared uint digit_count[256];
shared uint selected_prefix[2];
shared uint selected_remaining;

uint key_high(uint choice) {
    float w = weights[choice];
    if (w == 0.0) w = 0.0; // -0 and +0 are one weight
    uint bits = floatBitsToUint(w);
    uint ordered = (bits & 0x80000000u) != 0u ? ~bits : bits | 0x80000000u;
    return ~ordered; // ascending key = descending weight
}

void main() {
    uint expert = gl_WorkGroupID.x;
    uint lane = gl_LocalInvocationID.x;
    uint count = expert_info[expert];
    uint start = expert_info[2u * NUM_EXPERTS + expert];
    uint capacity = P.capacity;

    // Threshold key: everything at or below it is kept. Default: keep all.
    uint threshold_high = 0xFFFFFFFFu, threshold_low = 0xFFFFFFFFu;
    if (count > capacity) {
        if (lane == 0u) {
            selected_prefix[0] = 0u;
            selected_prefix[1] = 0u;
            selected_remaining = capacity; // we look for the capacity-th smallest key
        }
        barrier();
        for (uint pass = 0u; pass < 8u; ++pass) {
            uint word = pass / 4u;            // 0: high word, 1: low word
            uint shift = 24u - 8u * (pass % 4u);
            uint decided_high = pass >= 4u ? 0xFFFFFFFFu : (pass == 0u ? 0u : ~((1u << (32u - 8u * pass)) - 1u));
            uint decided_low = pass <= 4u ? 0u : ~((1u << (32u - 8u * (pass - 4u))) - 1u);
            for (uint d = lane; d < 256u; d += gl_WorkGroupSize.x) digit_count[d] = 0u;
            barrier();
            uint prefix_high = selected_prefix[0], prefix_low = selected_prefix[1];
            if (capacity > 0u) {
                for (uint i = lane; i < count; i += gl_WorkGroupSize.x) {
                    uint choice = order[start + i];
                    uint high = key_high(choice);
                    if ((high & decided_high) != prefix_high || (choice & decided_low) != prefix_low)
                        continue;
                    uint digit = ((word == 0u ? high : choice) >> shift) & 0xFFu;
                    atomicAdd(digit_count[digit], 1u);
                }
            }
            barrier();
            if (lane == 0u && capacity > 0u) {
                uint remaining = selected_remaining;
                uint d = 0u;
                while (d < 255u && digit_count[d] < remaining) { remaining -= digit_count[d]; ++d; }
                selected_remaining = remaining;
                selected_prefix[word] |= d << shift;
            }
            barrier();
        }
        threshold_high = selected_prefix[0];
        threshold_low = selected_prefix[1];
        barrier();
    }

    uint running = 0u;
    for (uint chunk = 0u; chunk < count; chunk += gl_WorkGroupSize.x) {
        uint i = chunk + lane;
        uint choice = i < count ? order[start + i] : 0u;
        bool keep = false;
        if (i < count && capacity > 0u) {
            uint high = key_high(choice);
            keep = high < threshold_high || (high == threshold_high && choice <= threshold_low);
        }
        uint flag = keep ? 1u : 0u;
        uint chunk_total;
        uint inclusive = workgroup_inclusive_scan(flag, chunk_total);
        if (i < count) {
            if (keep) {
                uint slot = running + inclusive - 1u;
                uint row = expert * capacity + slot;
                slots[choice] = int(slot);
                rows[choice] = int(row);
                row_token[row] = int(choice / P.choices);
            } else {
                slots[choice] = -1;
                rows[choice] = -1;
            }
        }
        running += chunk_total;
    }
}
