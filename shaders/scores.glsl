// The router's scores, shared by the stages that recompute them from the logits: a logit, the
// logit the scores use (noisy with FLAG_NOISY_SCORES, else clean), and the routing
// probability, normalised over the experts from the row's stats (scores_topk writes them).
// Needs common.glsl and noise.glsl.
float logit_at(uint token, uint expert) {
    uint index = token * P.num_experts + expert;
    if (DTYPE == DTYPE_F32) return uintBitsToFloat(logits_word(index));
    return decode_element(logits_word(index >> 1), index, DTYPE);
}

float score_logit(float logit, uint token, uint expert) {
    return (P.flags & FLAG_NOISY_SCORES) != 0u ? noisy_logit(logit, token, expert) : logit;
}

// Softmax: exp((s - max) / tau) / sum; sigmoid: sigmoid(s / tau) / (sum of the row's sigmoids).
float probability(uint token, uint expert, vec4 stats) {
    float logit = score_logit(logit_at(token, expert), token, expert);
    bool sigmoid = (P.flags & FLAG_SIGMOID) != 0u;
    float score = sigmoid ? 1.0 / (1.0 + exp(-(logit / P.temperature)))
                          : exp((logit - stats.x) / P.temperature);
    return score * stats.y;
}
