// The router's scores, shared by the stages that recompute them from the logits: a logit, the
// logit the scores use (noisy with FLAG_NOISY_SCORES, else clean), and the routing
// probability, normalised over the experts from the row's stats (scores_topk writes them).
// Needs common.glsl and noise.glsl; reads the logits, the decisions and the noise std.
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

// Softmax: exp((s - max) / tau) / sum; sigmoid: sigmoid(s / tau) / (sum of the row's sigmoids),
// of a score logit s.
float score_probability(float logit, vec4 stats) {
    bool sigmoid = (P.flags & FLAG_SIGMOID) != 0u;
    float score = sigmoid ? 1.0 / (1.0 + exp(-(logit / P.temperature)))
                          : exp((logit - stats.x) / P.temperature);
    return score * stats.y;
}

float probability(uint token, uint expert, vec4 stats) {
    return score_probability(score_logit(decision_logit(token, expert), token, expert), stats);
}

