#version 450
#extension GL_GOOGLE_include_directive : require
// EXPERT_CHOICE mode: each expert takes its top-C tokens by the keys scores_topk left in the
// decisions buffer (choice_key_at; -1: not eligible), ties to the lower token. The tokens are
// split into blocks of P.choice_block_tokens, and most phases run a workgroup per (block, expert)
// pair, so that the whole device works even for few experts (CHOICE_PHASE_*, one dispatch
// each). The C-th largest key is found by a radix select over its bits (non-negative floats
// order as their bits), four 8-bit digits from the top: each round, every pair's workgroup
// counts its keys' digits in shared memory and adds them to the expert's histogram, and then
// each expert picks the digit where its C-th key lies. Then every pair counts its keys equal
// to the threshold and those taken; a scan over each expert's blocks gives each block the
// equal keys and the taken tokens before it; and token order takes the keys above the
// threshold and, of those equal to it, the first ones, numbering the taken tokens (their
// slots). Integer counts and fixed orders only (atomic additions of integers end the same in
// any order): the same result on every device and subgroup size, and the same as one
// workgroup per expert walking all its keys.
// Outputs, for column e of every token: expert id, slot, weight (the routing score times
// scale), or -1, -1, 0; row_token of the expert's rows; expert_info totals and kept counts
// (equal: expert choice drops nothing). The last phase (over the tokens) writes each token's
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

shared uint digits[CHOICE_DIGITS];

uint key_bits(uint token, uint expert) {
    return floatBitsToUint(decisions[choice_key_at(token, expert)]);
}
bool eligible(uint bits) { return (bits & 0x80000000u) == 0u; } // keys >= 0; -1 is not

uint blocks() { return (P.num_tokens + P.choice_block_tokens - 1u) / P.choice_block_tokens; }
uint block_first(uint block) { return block * P.choice_block_tokens; }
uint block_end(uint block) { return min(block_first(block) + P.choice_block_tokens, P.num_tokens); }
uint scratch() { return DECISION_HEADER + P.num_tokens * P.num_experts; }
uint histogram_at(uint round, uint expert) {
    return scratch() + (round * P.num_experts + expert) * CHOICE_DIGITS;
}
uint state_at(uint expert, uint field) {
    return scratch() + CHOICE_ROUNDS * CHOICE_DIGITS * P.num_experts + CHOICE_STATE_WORDS * expert +
           field;
}
uint block_count_at(uint expert, uint block) {
    return scratch() + CHOICE_EXPERT_WORDS * P.num_experts + 2u * (expert * blocks() + block);
}
uint state(uint expert, uint field) { return decision_words[state_at(expert, field)]; }
// Round r finds the threshold's digit r from the top.
uint digit_shift(uint round) { return 24u - 8u * round; }

// The weight of a taken token: its routing score (softmax probability, or sigmoid, of the
// logits the scores use) times scale.
float choice_weight(uint token, uint expert) {
    if ((P.flags & FLAG_SIGMOID) == 0u) return probability(token, expert, row_stats[token]) * P.scale;
    float logit = score_logit(logit_at(token, expert), token, expert);
    return 1.0 / (1.0 + exp(-(logit / P.temperature))) * P.scale;
}

// An expert's threshold, once the four rounds have found it.
struct threshold {
    uint rule, bits, needed;
};
threshold threshold_of(uint expert) {
    return threshold(state(expert, CHOICE_STATE_RULE), state(expert, CHOICE_STATE_PREFIX),
                     state(expert, CHOICE_STATE_NEEDED));
}
bool is_equal(uint bits, threshold h) {
    return h.rule == CHOICE_SELECT && eligible(bits) && bits == h.bits;
}
bool is_above(uint bits, threshold h) {
    return eligible(bits) &&
           (h.rule == CHOICE_TAKE_ALL || (h.rule == CHOICE_SELECT && bits > h.bits));
}
// Whether a key is taken: above the threshold, or equal to it and among the first `needed` such
// in token order (equal_rank counts the equal keys before this one, and advances).
bool is_taken(uint bits, threshold h, inout uint equal_rank) {
    if (is_above(bits, h)) return true;
    return is_equal(bits, h) && equal_rank++ < h.needed;
}

void clear_scratch() {
    uint words = CHOICE_EXPERT_WORDS * P.num_experts;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < words; i += stride)
        decision_words[scratch() + i] = 0u;
}

// A pair's share of round `round`: its keys whose higher digits match the expert's prefix,
// counted by their digit, added to the expert's histogram (zero counts left out).
void count_digits(uint block, uint expert, uint round) {
    uint lane = gl_LocalInvocationID.x, width = gl_WorkGroupSize.x;
    uint prefix = state(expert, CHOICE_STATE_PREFIX), mask = state(expert, CHOICE_STATE_MASK);
    uint shift = digit_shift(round);
    for (uint i = lane; i < CHOICE_DIGITS; i += width) digits[i] = 0u;
    barrier();
    uint first = block_first(block), last = block_end(block);
    // Past round 0, only an expert still selecting has keys to count.
    if (round > 0u && state(expert, CHOICE_STATE_RULE) != CHOICE_SELECT) last = first;
    for (uint t = first + lane; t < last; t += width) {
        uint bits = key_bits(t, expert);
        if (eligible(bits) && (bits & mask) == prefix)
            atomicAdd(digits[(bits >> shift) & 255u], 1u);
    }
    barrier();
    for (uint i = lane; i < CHOICE_DIGITS; i += width)
        if (digits[i] != 0u) atomicAdd(decision_words[histogram_at(round, expert) + i], digits[i]);
    barrier(); // the next pair clears the digits
}

// An expert's digit of round `round`: the one where its C-th eligible key lies, counting from
// the largest; round 0 also decides whether there is a selection at all.
void select_digit(uint expert, uint round) {
    uint histogram = histogram_at(round, expert);
    uint rule = state(expert, CHOICE_STATE_RULE), needed = state(expert, CHOICE_STATE_NEEDED);
    if (round == 0u) {
        uint total = 0u;
        for (uint i = 0u; i < CHOICE_DIGITS; ++i) total += decision_words[histogram + i];
        rule = P.capacity == 0u || total == 0u ? CHOICE_TAKE_NONE
               : total <= P.capacity           ? CHOICE_TAKE_ALL
                                               : CHOICE_SELECT;
        needed = P.capacity;
    }
    if (rule == CHOICE_SELECT) {
        uint above = 0u, digit = 255u;
        while (above + decision_words[histogram + digit] < needed)
            above += decision_words[histogram + digit--];
        uint shift = digit_shift(round);
        decision_words[state_at(expert, CHOICE_STATE_PREFIX)] |= digit << shift;
        decision_words[state_at(expert, CHOICE_STATE_MASK)] |= 255u << shift;
        needed -= above;
    }
    decision_words[state_at(expert, CHOICE_STATE_RULE)] = rule;
    decision_words[state_at(expert, CHOICE_STATE_NEEDED)] = needed;
}

// The lane's contiguous run of a block's tokens (token order is lane order), the block's
// tokens spread over all lanes, a last short block's too.
void lane_run(uint block, out uint first, out uint last) {
    uint begin = block_first(block), end = block_end(block), width = gl_WorkGroupSize.x;
    uint per_lane = (end - begin + width - 1u) / width;
    first = min(begin + gl_LocalInvocationID.x * per_lane, end);
    last = min(first + per_lane, end);
}

// A pair's keys equal to the threshold and above it.
void count_block(uint block, uint expert) {
    threshold h = threshold_of(expert);
    uint first, last, equal_here = 0u, above_here = 0u;
    lane_run(block, first, last);
    for (uint t = first; t < last; ++t) {
        uint bits = key_bits(t, expert);
        equal_here += is_equal(bits, h) ? 1u : 0u;
        above_here += is_above(bits, h) ? 1u : 0u;
    }
    uint equal, above;
    workgroup_inclusive_scan(equal_here, equal);
    workgroup_inclusive_scan(above_here, above);
    if (gl_LocalInvocationID.x == 0u) {
        decision_words[block_count_at(expert, block)] = equal;
        decision_words[block_count_at(expert, block) + 1u] = above;
    }
}

// The tokens a block takes: its keys above the threshold, and of its equal ones those still
// needed after the `equal_seen` equal keys of the blocks before it.
uint taken_in_block(uint equal, uint above, uint equal_seen, threshold h) {
    return above + min(equal, h.needed - min(h.needed, equal_seen));
}

// Over an expert's blocks in order, each lane a contiguous run: the equal keys and the taken
// tokens before each block, in place of its counts; the expert's totals.
void scan_blocks(uint expert) {
    threshold h = threshold_of(expert);
    uint B = blocks(), per_lane = (B + gl_WorkGroupSize.x - 1u) / gl_WorkGroupSize.x;
    uint first = min(gl_LocalInvocationID.x * per_lane, B), last = min(first + per_lane, B);
    uint equal_here = 0u;
    for (uint b = first; b < last; ++b) equal_here += decision_words[block_count_at(expert, b)];
    uint equal_total, taken_total;
    uint equal_before = workgroup_inclusive_scan(equal_here, equal_total) - equal_here;
    uint taken_here = 0u, equal_seen = equal_before;
    for (uint b = first; b < last; ++b) {
        uint equal = decision_words[block_count_at(expert, b)];
        uint above = decision_words[block_count_at(expert, b) + 1u];
        taken_here += taken_in_block(equal, above, equal_seen, h);
        equal_seen += equal;
    }
    uint taken_before = workgroup_inclusive_scan(taken_here, taken_total) - taken_here;
    equal_seen = equal_before;
    for (uint b = first; b < last; ++b) {
        uint at = block_count_at(expert, b);
        uint equal = decision_words[at], above = decision_words[at + 1u];
        decision_words[at] = equal_seen;
        decision_words[at + 1u] = taken_before;
        taken_before += taken_in_block(equal, above, equal_seen, h);
        equal_seen += equal;
    }
    if (gl_LocalInvocationID.x == 0u) {
        expert_info[expert] = taken_total;
        expert_info[P.num_experts + expert] = taken_total;
    }
}

// A pair's tokens in order, each lane a contiguous run: the keys equal to the threshold before
// each run, then the tokens taken before it, then the writes.
void take_block(uint block, uint expert) {
    threshold h = threshold_of(expert);
    uint E = P.num_experts, C = P.capacity;
    uint equal_before_block = decision_words[block_count_at(expert, block)];
    uint taken_before_block = decision_words[block_count_at(expert, block) + 1u];
    uint first, last, equal_here = 0u;
    lane_run(block, first, last);
    for (uint t = first; t < last; ++t) equal_here += is_equal(key_bits(t, expert), h) ? 1u : 0u;
    uint equal_total, taken_total;
    uint equal_before = equal_before_block +
                        workgroup_inclusive_scan(equal_here, equal_total) - equal_here;
    uint taken_here = 0u, equal_rank = equal_before;
    for (uint t = first; t < last; ++t)
        taken_here += is_taken(key_bits(t, expert), h, equal_rank) ? 1u : 0u;
    uint slot = taken_before_block + workgroup_inclusive_scan(taken_here, taken_total) - taken_here;
    equal_rank = equal_before;
    for (uint t = first; t < last; ++t) {
        bool taken = is_taken(key_bits(t, expert), h, equal_rank);
        uint choice = t * E + expert;
        expert_ids[choice] = taken ? int(expert) : -1;
        slots[choice] = taken ? int(slot) : -1;
        weights[choice] = taken ? choice_weight(t, expert) : 0.0;
        if (taken) row_token[expert * C + slot++] = int(t);
    }
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
    uint phase = P.phase, E = P.num_experts;
    uint group = gl_WorkGroupID.x, groups = gl_NumWorkGroups.x, pairs = blocks() * E;
    if (phase == CHOICE_PHASE_CLEAR) {
        clear_scratch();
    } else if (phase < CHOICE_PHASE_SELECT) {
        for (uint p = group; p < pairs; p += groups)
            count_digits(p / E, p % E, phase - CHOICE_PHASE_HISTOGRAM);
    } else if (phase < CHOICE_PHASE_COUNT) {
        uint stride = groups * gl_WorkGroupSize.x;
        for (uint e = gl_GlobalInvocationID.x; e < E; e += stride)
            select_digit(e, phase - CHOICE_PHASE_SELECT);
    } else if (phase == CHOICE_PHASE_COUNT) {
        for (uint p = group; p < pairs; p += groups) count_block(p / E, p % E);
    } else if (phase == CHOICE_PHASE_SCAN) {
        for (uint e = group; e < E; e += groups) scan_blocks(e);
    } else if (phase == CHOICE_PHASE_TAKE) {
        for (uint p = group; p < pairs; p += groups) take_block(p / E, p % E);
    } else {
        write_rows();
    }
}
