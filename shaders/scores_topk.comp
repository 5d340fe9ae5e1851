#version 450
#extension GL_GOOGLE_include_directive : require
// Router scores and top-k selection: one invocation per token, or, compiled with
// MOEVK_SUBGROUPS, one subgroup per token, its lanes taking the experts in turn (lanes.glsl).
// Reads logits [T, E] (f32, or f16 when DTYPE is 1) and bias [E]. Selects the top-k experts by
// key = noisy logit + bias (or sigmoid score + bias, DeepSeek-V3's: selection.glsl),
// descending, ties to the lower expert index; -inf keys are never
// selected. A row with a NaN or +inf key is non-finite: routed nowhere. Writes expert_ids and
// weights [T, k] (score without bias, renormalised and scaled as asked), row_stats and row_flags
// [T] for the stats stage (row max, 1/normaliser, raw logsumexp, entropy), and when the route
// asks for token scores or a profile, row_measures [T] (top-1 and top-2 probability, energy
// -tau logsumexp(clean logits / tau)) from the same pass. Every sum over the experts goes in
// lanes.glsl's fixed order, so both kernels, at any subgroup size, give the same bits. The
// modes (see scores.glsl): SEQUENCE and BATCH decide from the sequence's mean row
// (sequence_mean.comp), SINKHORN ranks the balanced keys (sinkhorn.comp), EXPERT_CHOICE writes each expert's ranking
// key of the token into the decisions buffer instead of a top-k (expert_choice.comp ranks them).
// In the fused front end (FLAG_FUSED_FRONT_END) also bucketing's counts: each selected choice
// counted in the block_counts [blocks, E] of its k-major assignment's block (bucket_assign.comp
// takes them from there), with integer atomics, whose sums never depend on their order; the
// route zeroes the counts first.
// Grid: any 1D size; a grid-stride loop covers the tokens.
#include "scores_topk.h"
#define STAGE_BUFFERS SCORES_TOPK_BUFFERS
#define STAGE_PARAMS SCORES_TOPK_PARAMS
#include "common.glsl"
#include "noise.glsl"
#include "scores.glsl"
#include "selection.glsl" // and lanes.glsl
#include "assignments.glsl"

bool expert_choice() { return (P.flags & FLAG_EXPERT_CHOICE) != 0u; }

// EXPERT_CHOICE: instead of a top-k, the key each expert ranks this token by (choice_key_at):
// its routing score from the noisy logits (softmax over the experts, or sigmoid); -1 where the
// expert is masked for it. expert_choice.comp ranks them.
void write_choice_keys(uint token, float max_noisy) {
    bool sigmoid = (P.flags & FLAG_SIGMOID) != 0u;
    // The softmax's sum over the experts, in lanes.glsl's order.
    float sum = 0.0;
    if (!sigmoid) {
        float levels[TREE_LEVELS];
        uint count = 0u;
        FOR_EACH_SUM_BLOCK(P.num_experts, e, partial, float, levels, count, {
            float noisy = noisy_logit(logit_at(token, e), token, e);
            if (!isinf(noisy)) partial += exp((noisy - max_noisy) / P.temperature);
        });
        TREE_RESULT(float, levels, count, sum);
    }
    for (uint e = LANE; e < P.num_experts; e += LANES) {
        float noisy = noisy_logit(logit_at(token, e), token, e);
        float key = sigmoid ? 1.0 / (1.0 + exp(-(noisy / P.temperature)))
                            : exp((noisy - max_noisy) / P.temperature) / sum;
        decisions[choice_key_at(token, e)] = isinf(noisy) ? -1.0 : key;
    }
}

// Counts choice j of a token, of an expert (>= 0), in its assignment's block (bucketing's
// blocks of block_size assignments in k-major order).
void count_choice(uint token, uint j, int expert) {
    uint block = choice_assignment(token, j) / P.block_size;
    atomicAdd(block_counts[block * NUM_EXPERTS + uint(expert)], 1u);
}

void route_token(uint token) {
    bool sigmoid = (P.flags & FLAG_SIGMOID) != 0u;
    const float NEG_INF = uintBitsToFloat(0xFF800000u);

    float best_key[SELECTION_K];
    int best_expert[SELECTION_K];
    for (uint j = 0; j < SELECTION_K; ++j) { best_key[j] = NEG_INF; best_expert[j] = -1; }

    // Pass 1: non-finite check, maxima, and top-k by insertion (stable: a later equal key
    // goes after the earlier one, so ties keep the lower expert index).
    bool nonfinite = false;
    uint groups = kept_groups(token); // experts of the other groups are never selected
    float max_raw = NEG_INF;   // of the clean logits: the z-loss's logsumexp
    float max_score = NEG_INF; // of the logits the scores use
    float max_noisy = NEG_INF; // of the noisy logits: expert choice's keys
    for (uint e = LANE; e < P.num_experts; e += LANES) {
        float logit = decision_logit(token, e);
        float noisy = noisy_logit(logit, decision_row(token), e); // selection uses noisy logits
        float key = key_of(noisy, token, e);
        if (isnan(key) || (isinf(key) && key > 0.0)) nonfinite = true;
        max_raw = max(max_raw, logit);
        max_score = max(max_score, (P.flags & FLAG_NOISY_SCORES) != 0u ? noisy : logit);
        max_noisy = max(max_noisy, noisy);
        // Experts in ascending order: an equal key goes after the earlier, lower expert.
        if (key > best_key[SELECTION_K - 1] && group_kept(groups, e))
            INSERT_DESCENDING(best_key, best_expert, SELECTION_K, key, int(e));
    }
    nonfinite = lanes_any(nonfinite);
    max_raw = lanes_max(max_raw);
    max_score = lanes_max(max_score);
    max_noisy = lanes_max(max_noisy);
    LANES_MERGE_TOP(best_key, best_expert, SELECTION_K);

    uint base = token * P.choices;
    if (nonfinite || isinf(max_raw)) {
        // isinf(max_raw) here means every logit is -inf: nothing to route to.
        if (expert_choice())
            for (uint e = LANE; e < P.num_experts; e += LANES)
                decisions[choice_key_at(token, e)] = -1.0;
        if (LANE != 0u) return;
        for (uint j = 0; j < SELECTION_K; ++j) { expert_ids[base + j] = -1; weights[base + j] = 0.0; }
        row_stats[token] = vec4(0.0);
        row_flags[token] = nonfinite ? ROW_NONFINITE : ROW_MASKED;
        return;
    }

    // Pass 2: normalisers, raw logsumexp (z-loss) and entropy of the routing distribution, each
    // sum in lanes.glsl's order.
    // One counter for the four sums: (softmax: sum exp(x - max), sigmoid: sum of sigmoids;
    // softmax: sum (x - max) exp(x - max), sigmoid: sum s log s; the raw logsumexp's sum; the
    // tempered one of the energy), in lanes.glsl's order.
    vec4 levels[TREE_LEVELS];
    uint count = 0u;
    // The token measures: the two largest unnormalised scores, and at a temperature other than
    // 1 the sum of exp((raw - max) / tau) of the energy (at 1 it is the raw logsumexp's).
    bool measures = (P.flags & (FLAG_TOKEN_SCORES | FLAG_PROFILE)) != 0u;
    bool tempered = measures && P.temperature != 1.0;
    float first = 0.0, second = 0.0;
    FOR_EACH_SUM_BLOCK(P.num_experts, e, part, vec4, levels, count, {
        float raw = decision_logit(token, e);
        if (!isinf(raw)) { // -inf: a masked expert contributes nothing
            part.z += exp(raw - max_raw);
            if (tempered) {
                precise float shifted_raw = (raw - max_raw) / P.temperature;
                part.w += exp(shifted_raw);
            }
            float logit = score_logit(raw, token, e);
            float score;
            if (sigmoid) {
                float s = 1.0 / (1.0 + exp(-(logit / P.temperature)));
                part.x += s;
                if (s > 0.0) part.y += s * log(s);
                score = s;
            } else {
                // The exact difference first, then one division: more accurate than
                // l/tau - max/tau.
                float shifted = (logit - max_score) / P.temperature;
                float p = exp(shifted);
                part.x += p;
                part.y += shifted * p;
                score = p;
            }
            if (measures && score > first) {
                second = first;
                first = score;
            } else if (measures && score > second) {
                second = score;
            }
        }
    });
    vec4 sums;
    TREE_RESULT(vec4, levels, count, sums);
    float norm_sum = sums.x, weighted = sums.y, raw_sum = sums.z, tempered_sum = sums.w;
    if (measures) lanes_top_two(first, second, SUM_LANES);
    float inv_norm = norm_sum > 0.0 ? 1.0 / norm_sum : 0.0;
    float entropy = norm_sum > 0.0 ? log(norm_sum) - weighted / norm_sum : 0.0;
    float lse_raw = max_raw + log(raw_sum);
    if (expert_choice()) write_choice_keys(token, max_noisy);
    if (LANE != 0u) return; // the token's results are every lane's: the first writes them
    row_stats[token] = vec4(max_score, inv_norm, lse_raw, entropy);
    row_flags[token] = ROW_VALID;
    if (measures) {
        precise float energy = tempered ? -(max_raw + P.temperature * log(tempered_sum)) : -lse_raw;
        row_measures[token] = vec4(first * inv_norm, second * inv_norm, energy, 0.0);
    }
    if (expert_choice()) return;

    // Weights: the score of each selected expert, computed without the bias.
    float w[SELECTION_K];
    float selected_sum = 0.0;
    for (uint j = 0; j < SELECTION_K; ++j) {
        w[j] = 0.0;
        if (best_expert[j] < 0) continue;
        uint e = uint(best_expert[j]);
        float logit = score_logit(decision_logit(token, e), token, e);
        w[j] = sigmoid ? 1.0 / (1.0 + exp(-(logit / P.temperature)))
                       : exp((logit - max_score) / P.temperature) / norm_sum;
        selected_sum += w[j];
    }
    bool renormalize = (P.flags & FLAG_RENORMALIZE) != 0u && selected_sum > 0.0;
    bool counts = (P.flags & FLAG_FUSED_FRONT_END) != 0u;
    // DeepSeek-V3 divides by sum + 1e-20; moevk's own renormalisation by the sum alone.
    float denominator = selected_sum + ((P.flags & FLAG_BIAS_ON_SCORES) != 0u ? 1e-20 : 0.0);
    for (uint j = 0; j < SELECTION_K; ++j) {
        float value = renormalize ? w[j] / denominator : w[j];
        expert_ids[base + j] = best_expert[j];
        weights[base + j] = best_expert[j] < 0 ? 0.0 : value * P.scale;
        if (counts && best_expert[j] >= 0) count_choice(token, j, best_expert[j]);
    }
}

// SEQUENCE and BATCH modes: a token whose own row is masked or non-finite (sequence_mean.comp
// flagged it) is routed nowhere; the others take their sequence's decision.
void route_nowhere(uint token) {
    if (LANE != 0u) return;
    for (uint j = 0; j < SELECTION_K; ++j) {
        expert_ids[token * P.choices + j] = -1;
        weights[token * P.choices + j] = 0.0;
    }
    row_stats[token] = vec4(0.0);
}

void main() {
#ifdef MOEVK_SUBGROUPS
    // A token per subgroup; every lane of a subgroup walks the same tokens (the reductions need
    // the whole subgroup).
    uint first_token = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID;
    uint stride = gl_NumWorkGroups.x * gl_NumSubgroups;
#else
    uint first_token = gl_GlobalInvocationID.x;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
#endif
    for (uint token = first_token; token < P.num_tokens; token += stride) {
        if (by_sequence() && row_flags[token] != ROW_VALID) route_nowhere(token);
        else route_token(token);
    }
}
