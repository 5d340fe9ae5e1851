#version 450
#extension GL_GOOGLE_include_directive : require
// Bucketing's assignment, after the counts (bucket_count.comp, or in the fused front end
// scores_topk.comp) and their scan: a slot for every assignment, in k-major order within each
// expert.
// Workgroup b walks its block in chunks; an assignment's slot is its block's offset for
// the expert plus how many earlier assignments of the chunk and block chose the same expert.
// The offsets come from bucket_scan, or in the fused front end from this workgroup's own sums
// of the block counts (bucket_scan's step folded in: each expert's counts of the earlier blocks,
// and of all blocks, whose totals workgroup 0 writes to expert_info).
// No atomics decide an order, so slots are the same on every run and device.
// Position policy: slot < C is kept (slots, rows = e * C + slot, row_token), else dropped (-1).
// Dropless: every slot is kept, rows = offsets[e] + slot, offsets padded to pad_multiple.
// Score policy: only lists assignments per expert in `order`; score_select decides.
// Workgroup 0 also writes the experts' first rows to expert_info[2E .. 3E].
// Grid: num_blocks workgroups.
#include "bucket.h"
#define STAGE_BUFFERS BUCKET_ASSIGN_BUFFERS
#define STAGE_PARAMS BUCKET_ASSIGN_PARAMS
#include "common.glsl"
#include "assignments.glsl"
#include "scan.glsl"

shared uint running_slot[NUM_EXPERTS];
shared uint expert_total[NUM_EXPERTS]; /* assignments of each expert, before drops */
shared uint first_row[NUM_EXPERTS];
shared int chunk_expert[gl_WorkGroupSize.x];

// first_row[e] = sum over experts before e of their rows (padded when dropless).
void compute_first_rows(bool dropless) {
    uint lane = gl_LocalInvocationID.x;
    uint width = gl_WorkGroupSize.x;
    uint per_lane = (NUM_EXPERTS + width - 1u) / width;
    uint first = min(lane * per_lane, NUM_EXPERTS);
    uint last = min(first + per_lane, NUM_EXPERTS);
    uint pad = max(P.pad_multiple, 1u);
    uint sum = 0u;
    for (uint e = first; e < last; ++e) {
        uint rows_of_expert = expert_total[e];
        if (dropless) rows_of_expert = (rows_of_expert + pad - 1u) / pad * pad;
        sum += rows_of_expert;
    }
    uint all_rows;
    uint running = workgroup_inclusive_scan(sum, all_rows) - sum;
    for (uint e = first; e < last; ++e) {
        first_row[e] = running;
        uint rows_of_expert = expert_total[e];
        if (dropless) rows_of_expert = (rows_of_expert + pad - 1u) / pad * pad;
        running += rows_of_expert;
    }
    if (gl_WorkGroupID.x == 0u) {
        for (uint e = first; e < last; ++e) expert_info[2u * NUM_EXPERTS + e] = first_row[e];
        if (lane == width - 1u) expert_info[3u * NUM_EXPERTS] = running;
    }
}

void main() {
    uint block = gl_WorkGroupID.x;
    uint lane = gl_LocalInvocationID.x;
    bool dropless = (P.flags & FLAG_DROPLESS) != 0u;
    bool by_score = !dropless && (P.flags & FLAG_DROP_BY_SCORE) != 0u;

    if ((P.flags & FLAG_FUSED_FRONT_END) != 0u) {
        // The scan here: the block counts are still the counts.
        for (uint e = lane; e < NUM_EXPERTS; e += gl_WorkGroupSize.x) {
            uint before = 0u, total = 0u;
            for (uint b = 0u; b < P.num_blocks; ++b) {
                uint count = block_counts[b * NUM_EXPERTS + e];
                before += b < block ? count : 0u;
                total += count;
            }
            running_slot[e] = before;
            expert_total[e] = total;
            if (block == 0u) {
                expert_info[e] = total;
                expert_info[NUM_EXPERTS + e] = dropless ? total : min(total, P.capacity);
            }
        }
    } else {
        // bucket_scan made them each block's offsets, and wrote the totals.
        for (uint e = lane; e < NUM_EXPERTS; e += gl_WorkGroupSize.x) {
            running_slot[e] = block_counts[block * NUM_EXPERTS + e];
            expert_total[e] = expert_info[e];
        }
    }
    barrier();
    compute_first_rows(dropless);
    barrier();

    uint total = P.num_tokens * P.choices;
    uint begin = block * P.block_size;
    uint end = min(begin + P.block_size, total);
    for (uint chunk = begin; chunk < end; chunk += gl_WorkGroupSize.x) {
        uint a = chunk + lane;
        int expert = a < end ? expert_ids[assignment_to_choice(a)] : -1;
        chunk_expert[lane] = expert;
        barrier();

        uint earlier = 0u;
        bool last_of_expert = true;
        if (expert >= 0) {
            for (uint j = 0u; j < lane; ++j) earlier += chunk_expert[j] == expert ? 1u : 0u;
            for (uint j = lane + 1u; j < gl_WorkGroupSize.x; ++j)
                if (chunk_expert[j] == expert) last_of_expert = false;
        }
        if (a < end) {
            uint choice = assignment_to_choice(a);
            uint token = a % P.num_tokens;
            if (expert < 0) {
                slots[choice] = -1;
                rows[choice] = -1;
            } else {
                uint e = uint(expert);
                uint slot = running_slot[e] + earlier;
                if (by_score) {
                    order[first_row[e] + slot] = choice;
                } else if (dropless || slot < P.capacity) {
                    uint row = dropless ? first_row[e] + slot : e * P.capacity + slot;
                    slots[choice] = int(slot);
                    rows[choice] = int(row);
                    row_token[row] = int(token);
                } else {
                    slots[choice] = -1;
                    rows[choice] = -1;
                }
            }
        }
        barrier();
        if (expert >= 0 && last_of_expert) running_slot[uint(expert)] += earlier + 1u;
        barrier();
    }
}
