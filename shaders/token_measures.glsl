// A valid token's measures of familiarity, shared by token_scores.comp and profile.comp: the
// energy -tau logsumexp(logits / tau) of its own clean logits, and the two largest probabilities
// of its routing distribution (scores.glsl's, from the row's stats). Needs scores.glsl.
struct token_measure {
    float energy;
    float top1;
    float top2; // the second largest (equal to top1 on a tie)
};

// One pass over the token's logits: the energy's sum rescaled whenever a larger logit comes (no
// sum at temperature 1, where the row's stats hold the energy already), and
// the two largest score logits, whose probabilities are the two largest (the probability grows
// with the score logit), computed once at the end.
token_measure measure_token(uint t, vec4 stats) {
    float inf = uintBitsToFloat(0x7F800000u);
    float largest = -inf, sum = 0.0, first = -inf, second = -inf;
    for (uint e = 0u; e < P.num_experts; ++e) {
        float logit = logit_at(t, e);
        float score = score_logit(by_sequence() ? decision_logit(t, e) : logit, t, e);
        if (score > first) {
            second = first;
            first = score;
        } else if (score > second) {
            second = score;
        }
        // -inf: a masked expert adds nothing; at temperature 1 the energy is -(the raw
        // logsumexp scores_topk.comp keeps in the row's stats).
        if (isinf(logit) || P.temperature == 1.0) continue;
        if (logit > largest) {
            precise float rescale = exp((largest - logit) / P.temperature);
            sum *= rescale;
            largest = logit;
        }
        precise float shifted = (logit - largest) / P.temperature;
        sum += exp(shifted);
    }
    token_measure m;
    precise float energy = -(largest + P.temperature * log(sum));
    m.energy = P.temperature == 1.0 ? -stats.z : energy;
    m.top1 = score_probability(first, stats);
    m.top2 = score_probability(second, stats);
    return m;
}
