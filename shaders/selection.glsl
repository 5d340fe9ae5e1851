// What top-k selection ranks: each (token, expert)'s selection key, and group-limited routing's
// kept groups. Needs scores.glsl; reads the bias and, in SINKHORN mode, the balanced factors in
// the decisions. A token's lanes (lanes.glsl) share the work where a subgroup routes it.
#include "lanes.glsl"

// Inserts (key, id) into lists of `length` entries in descending key order whose empty places
// (id -1) are at the end: the first place that is empty or whose key it beats takes it (after
// any equal key, so ties keep the earlier entry), every later place the one before it, and the
// last entry falls off. The indices are the loop's alone, so that a driver unrolling the loop
// keeps the lists in registers (shifting at a running index puts them in memory on lavapipe).
// A macro: the lists' lengths are different specialisation constants.
#define INSERT_DESCENDING(keys, ids, length, key, id)                                              \
    {                                                                                              \
        float carried_key = (key);                                                                 \
        int carried_id = (id);                                                                     \
        bool shifting = false;                                                                     \
        for (uint place = 0u; place < (length); ++place) {                                         \
            if (shifting || ids[place] < 0 || carried_key > keys[place]) {                         \
                shifting = true;                                                                   \
                float next_key = keys[place];                                                      \
                int next_id = ids[place];                                                          \
                keys[place] = carried_key;                                                         \
                ids[place] = carried_id;                                                           \
                carried_key = next_key;                                                            \
                carried_id = next_id;                                                              \
            }                                                                                      \
        }                                                                                          \
    }

// The key selection ranks, from the noisy logit: plus the bias (or its sigmoid score plus the
// bias, FLAG_BIAS_ON_SCORES); or in SINKHORN mode the balanced score
// (d1_e * exp(noisy - shift)) * d0_t (sinkhorn.comp); a non-finite logit stays.
float key_of(float noisy, uint token, uint expert) {
    if ((P.flags & FLAG_SINKHORN) != 0u) {
        if (isinf(noisy) || isnan(noisy)) return noisy; // the row's own flag decides these
        precise float scaled = decisions[DECISION_HEADER + expert] *
                               exp(noisy - decisions[DECISION_SHIFT]);
        precise float key = scaled * decisions[DECISION_HEADER + P.num_experts + token];
        return key;
    }
    float bias_term = (P.flags & FLAG_HAS_BIAS) != 0u ? bias[expert] : 0.0;
    if ((P.flags & FLAG_BIAS_ON_SCORES) != 0u) {
        // DeepSeek-V3's: the bias on the sigmoid score. An infinite or NaN logit stays as it is:
        // -inf is never selected, NaN and +inf flag the row.
        if (isinf(noisy) || isnan(noisy)) return noisy;
        return 1.0 / (1.0 + exp(-(noisy / P.temperature))) + bias_term;
    }
    return noisy + bias_term;
}

float selection_key(uint token, uint expert) {
    float noisy = noisy_logit(decision_logit(token, expert), decision_row(token), expert);
    return key_of(noisy, token, expert);
}

// Group-limited routing: the experts fall into GROUPS equal groups; a group's score is the sum
// of its two largest keys (its one key when groups hold one expert). Returns the mask of the
// TOPK_GROUPS best groups (ties to the lower group); all groups when GROUPS is 1. Every lane of
// the token calls it and gets the mask.
uint kept_groups(uint token) {
    if (GROUPS <= 1u) return 0xFFFFFFFFu;
    uint size = P.num_experts / GROUPS;
    float best[MAX_GROUPS];
    int best_group[MAX_GROUPS];
    for (uint j = 0; j < TOPK_GROUPS; ++j) {
        best[j] = uintBitsToFloat(0xFF800000u);
        best_group[j] = -1;
    }
    for (uint g = 0; g < GROUPS; ++g) {
        float first = uintBitsToFloat(0xFF800000u), second = first;
        for (uint e = g * size + LANE; e < (g + 1u) * size; e += LANES) {
            float key = selection_key(token, e);
            if (key > first) { second = first; first = key; }
            else if (key > second) second = key;
        }
        lanes_top_two(first, second, LANES);
        float score = size > 1u ? first + second : first;
        if (best_group[TOPK_GROUPS - 1u] >= 0 && !(score > best[TOPK_GROUPS - 1u])) continue;
        INSERT_DESCENDING(best, best_group, TOPK_GROUPS, score, int(g));
    }
    uint mask = 0u;
    for (uint j = 0; j < TOPK_GROUPS; ++j)
        if (best_group[j] >= 0) mask |= 1u << uint(best_group[j]);
    return mask;
}

bool group_kept(uint mask, uint expert) {
    return GROUPS <= 1u || (mask & (1u << (expert / (P.num_experts / GROUPS)))) != 0u;
}
