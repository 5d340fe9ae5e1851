// The router's scores, shared by the stages that recompute them from the logits: a logit, the
// logit the scores use (noisy with FLAG_NOISY_SCORES, else clean), and the routing
// probability, normalised over the experts from the row's stats (scores_topk writes them).
// Needs common.glsl and noise.glsl.
float logit_at(uint token, uint expert) {
    uint index = token * P.num_experts + expert;
    if (DTYPE == DTYPE_F32) return uintBitsToFloat(logits_word(index));
    return decode_element(logits_word(index >> 1), index, DTYPE);
}

// The row whose logits decide a token: the token's own, or in SEQUENCE and BATCH modes its
// sequence's mean logits (sequence_mean.comp), whose index is also the noise counter's token.
bool by_sequence() { return (P.flags & FLAG_SEQUENCE_DECISIONS) != 0u; }
uint decision_row(uint token) { return by_sequence() ? token / P.mode_param : token; }
// EXPERT_CHOICE: where each expert's ranking key of a token waits (scores_topk writes,
// expert_choice reads): the decisions' [T, E] after the header.
uint choice_key_at(uint token, uint expert) {
    return DECISION_HEADER + token * P.num_experts + expert;
}

float decision_logit(uint token, uint expert) {
    if (!by_sequence()) return logit_at(token, expert);
    return decisions[DECISION_HEADER + decision_row(token) * P.num_experts + expert];
}

float score_logit(float logit, uint token, uint expert) {
    return (P.flags & FLAG_NOISY_SCORES) != 0u ? noisy_logit(logit, decision_row(token), expert)
                                                : logit;
}

// Softmax: exp((s - max) / tau) / sum; sigmoid: sigmoid(s / tau) / (sum of the row's sigmoids).
float probability(uint token, uint expert, vec4 stats) {
    float logit = score_logit(decision_logit(token, expert), token, expert);
    bool sigmoid = (P.flags & FLAG_SIGMOID) != 0u;
    float score = sigmoid ? 1.0 / (1.0 + exp(-(logit / P.temperature)))
                          : exp((logit - stats.x) / P.temperature);
    return score * stats.y;
}

// The key selection ranks, from the noisy logit: plus the bias; or in SINKHORN mode the
// balanced score (d1_e * exp(noisy - shift)) * d0_t (sinkhorn.comp); a non-finite logit stays.
float key_of(float noisy, uint token, uint expert) {
    if ((P.flags & FLAG_SINKHORN) != 0u) {
        if (isinf(noisy) || isnan(noisy)) return noisy; // the row's own flag decides these
        precise float scaled = decisions[DECISION_HEADER + expert] *
                               exp(noisy - decisions[DECISION_SHIFT]);
        precise float key = scaled * decisions[DECISION_HEADER + P.num_experts + token];
        return key;
    }
    return (P.flags & FLAG_HAS_BIAS) != 0u ? noisy + bias[expert] : noisy;
}

float selection_key(uint token, uint expert) {
    float noisy = noisy_logit(decision_logit(token, expert), decision_row(token), expert);
    return key_of(noisy, token, expert);
}

// Group-limited routing: the experts fall into GROUPS equal groups; a group's score is the sum
// of its two largest keys (its one key when groups hold one expert). Returns the mask of the
// TOPK_GROUPS best groups (ties to the lower group); all groups when GROUPS is 1.
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
        for (uint e = g * size; e < (g + 1u) * size; ++e) {
            float key = selection_key(token, e);
            if (key > first) { second = first; first = key; }
            else if (key > second) second = key;
        }
        float score = size > 1u ? first + second : first;
        if (best_group[TOPK_GROUPS - 1u] >= 0 && !(score > best[TOPK_GROUPS - 1u])) continue;
        uint j = TOPK_GROUPS - 1u;
        while (j > 0u && (best_group[j - 1u] < 0 || score > best[j - 1u])) {
            best[j] = best[j - 1u];
            best_group[j] = best_group[j - 1u];
            --j;
        }
        best[j] = score;
        best_group[j] = int(g);
    }
    uint mask = 0u;
    for (uint j = 0; j < TOPK_GROUPS; ++j)
        if (best_group[j] >= 0) mask |= 1u << uint(best_group[j]);
    return mask;
}

bool group_kept(uint mask, uint expert) {
    return GROUPS <= 1u || (mask & (1u << (expert / (P.num_experts / GROUPS)))) != 0u;
}
