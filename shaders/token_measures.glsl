// A valid token's measures of familiarity, shared by token_scores.comp and profile.comp: the
// energy -tau logsumexp(logits / tau) of its own clean logits, and the two largest probabilities
// of its routing distribution (scores.glsl's, from the row's stats). Needs scores.glsl.
struct token_measure {
    float energy;
    float top1;
    float top2; // the second largest (equal to top1 on a tie)
};

token_measure measure_token(uint t, vec4 stats) {
    float inf = uintBitsToFloat(0x7F800000u);
    float largest = -inf;
    for (uint e = 0u; e < P.num_experts; ++e) largest = max(largest, logit_at(t, e));
    float sum = 0.0, top1 = 0.0, top2 = 0.0;
    for (uint e = 0u; e < P.num_experts; ++e) {
        float logit = logit_at(t, e);
        if (isinf(logit)) continue; // -inf: a masked expert adds nothing
        precise float shifted = (logit - largest) / P.temperature;
        sum += exp(shifted);
        float p = probability(t, e, stats);
        if (p > top1) {
            top2 = top1;
            top1 = p;
        } else if (p > top2) {
            top2 = p;
        }
    }
    token_measure m;
    precise float energy = -(largest + P.temperature * log(sum));
    m.energy = energy;
    m.top1 = top1;
    m.top2 = top2;
    return m;
}
