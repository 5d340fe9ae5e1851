#version 450
#extension GL_GOOGLE_include_directive : require
// Balancing losses of the router's last route and their gradient with respect to the logits.
// Every sum runs in a fixed order, so the results are the same on every run. Phases
// (LOSS_PHASE_*, in the order they run):
// THRESHOLDS (grid over tokens): each valid row's load thresholds: the (k+1)-th and k-th
//   largest selection keys and their experts, into loss_rows.
// PARTIALS (stat_blocks workgroups): per block and expert, importance (sum of the combine
//   weights) and load (sum of Phi((clean key - threshold) / sigma)), into loss_partials.
// LOAD_TERMS (grid over [T, E], after THRESHOLDS; a batch split over several routers): each
//   (token, expert)'s load term, as PARTIALS adds it, into grad_logits, for the host to add.
// COLUMNS (2E workgroups): sums each column of the partials over the blocks into loss_totals.
// CV2_SLOPES (one workgroup): d cv2 / d importance_e and d cv2 / d load_e, once per call
//   rather than once per row.
// SEQUENCES (one workgroup per sequence): selections per expert in the sequence into
//   seq_counts.
// SEQUENCE_TOKENS (grid over tokens): each valid token's term sum_e count_e * p_te (count_e of
//   its sequence), in expert order.
// SEQUENCE_TOTALS (one workgroup per sequence): the sum of its tokens' terms, strided over the
//   lanes and then a fixed tree, into the sequence's total. (Split so that no invocation loops
//   over E experts times S tokens: lavapipe's loop limit, LOOP_BUDGET.)
// WEIGHTS_BACKWARD (grid over [T, k]): dL/dweights: the caller's, plus <dL/dcombined_t,
//   expert_out of the choice's row> when given (the combine's backward).
// LOGITS_BACKWARD (grid over tokens): dL/dlogits of each row: the losses and dL/dweights
//   through the weights' renormalisation and scale, the softmax or sigmoid, and the noise;
//   with FLAG_GRAD_NOISE also dL/dstd of each (token, expert)'s Gaussian noise into grad_noise.
// NOISE_SLOPE (grid over [T, E], learned std): dL/dstd times softplus'(x_t . W_noise[:, e]).
// NOISE_REDUCE (grid over [E], or [d, E] for a learned std): sums over the tokens in order:
//   dL/dnoise_std_e, or dL/dW_noise[j, e] = sum_t x_tj * (dL/dstd_te * softplus'(..)); one
//   dispatch per TOKEN_CHUNK tokens, each adding to the sum the last one left.
#include "losses.h"
#define STAGE_BUFFERS LOSSES_BUFFERS
#define STAGE_PARAMS LOSSES_PARAMS
#include "common.glsl"
#include "noise.glsl"
#include "hidden.glsl"
#include "learned_noise.glsl"
#include "scores.glsl"
#include "selection.glsl"
#include "reduce.glsl"

shared uint expert_counts[NUM_EXPERTS];

#define NEG_INF uintBitsToFloat(0xFF800000u)

bool sigmoid_scores() { return (P.flags & FLAG_SIGMOID) != 0u; }

// The same key without the noise (the load loss compares it with the noisy thresholds).
float clean_key(uint token, uint expert) {
    float logit = logit_at(token, expert);
    return (P.flags & FLAG_HAS_BIAS) != 0u ? logit + bias[expert] : logit;
}

bool selected(uint token, uint expert) {
    for (uint j = 0; j < P.choices; ++j)
        if (expert_ids[token * P.choices + j] == int(expert)) return true;
    return false;
}

// Standard normal CDF through erfc (Numerical Recipes' Chebyshev fit, relative error below
// 1.2e-7 everywhere): GLSL has no erf.
float normal_cdf(float z) {
    float x = abs(z) * 0.70710678118654752;
    float t = 1.0 / (1.0 + 0.5 * x);
    float poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
                 t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
                 t * (-0.82215223 + t * 0.17087277))))))));
    float erfc_x = t * exp(-x * x + poly);
    return z >= 0.0 ? 1.0 - 0.5 * erfc_x : 0.5 * erfc_x;
}

float normal_pdf(float z) { return 0.39894228040143268 * exp(-0.5 * z * z); }

// z of the load term of (token, expert), or +-inf where it is decided: a masked expert is
// never in the top k (-inf); a missing threshold (fewer finite keys) always lets it in (+inf).
float load_z(uint token, uint expert, vec4 thresholds, bool in_top_k) {
    float key = clean_key(token, expert);
    float threshold = in_top_k ? thresholds.x : thresholds.y;
    if (isinf(key)) return NEG_INF;
    if (isinf(threshold)) return -NEG_INF;
    return (key - threshold) / noise_std(token, expert);
}

void thresholds(uint token) {
    if (row_flags[token] != ROW_VALID) return;
    float keys[CHOICES + 1];
    int experts[CHOICES + 1];
    for (uint j = 0; j <= CHOICES; ++j) { keys[j] = NEG_INF; experts[j] = -1; }
    uint groups = kept_groups(token);
    for (uint e = 0; e < P.num_experts; ++e) {
        float key = group_kept(groups, e) ? selection_key(token, e) : NEG_INF;
        if (key > keys[CHOICES]) INSERT_DESCENDING(keys, experts, CHOICES + 1u, key, int(e));
    }
    loss_rows[token] = vec4(keys[CHOICES], keys[CHOICES - 1], intBitsToFloat(experts[CHOICES]),
                            intBitsToFloat(experts[CHOICES - 1]));
}

// The load term of (token, expert), Phi((clean key - threshold) / sigma); 0 for a row the route
// left out. Precise: the same value where PARTIALS adds it and where LOAD_TERMS stores it (no
// product of it fused into the sum).
float load_term(uint token, uint expert) {
    if (row_flags[token] != ROW_VALID) return 0.0;
    precise float term =
        normal_cdf(load_z(token, expert, loss_rows[token], selected(token, expert)));
    return term;
}

void partial_sums() {
    uint block = gl_WorkGroupID.x;
    uint width = 2u * P.num_experts;
    uint begin = block * P.rows_per_stat_block;
    uint end = min(begin + P.rows_per_stat_block, P.num_tokens);
    bool with_load = P.load_coef != 0.0;
    for (uint e = gl_LocalInvocationID.x; e < P.num_experts; e += gl_WorkGroupSize.x) {
        float importance = 0.0;
        precise float load = 0.0;
        for (uint t = begin; t < end; ++t) {
            if (row_flags[t] != ROW_VALID) continue;
            for (uint j = 0; j < P.choices; ++j)
                if (expert_ids[t * P.choices + j] == int(e)) importance += weights[t * P.choices + j];
            if (with_load) load += load_term(t, e);
        }
        loss_partials[block * width + e] = importance;
        loss_partials[block * width + P.num_experts + e] = load;
    }
}

void column_sums() {
    uint width = 2u * P.num_experts;
    uint column = gl_WorkGroupID.x;
    float sum = 0.0;
    for (uint b = gl_LocalInvocationID.x; b < P.stat_blocks; b += gl_WorkGroupSize.x)
        sum += loss_partials[b * width + column];
    float total = workgroup_tree_sum(sum);
    if (gl_LocalInvocationID.x == 0u) loss_totals[column] = total;
}

void sequence_counts(uint sequence) {
    uint lane = gl_LocalInvocationID.x;
    uint begin = sequence * P.sequence_length;
    for (uint e = lane; e < P.num_experts; e += gl_WorkGroupSize.x) expert_counts[e] = 0u;
    barrier();
    // Integer counts: the order of the atomic additions cannot change them.
    for (uint c = lane; c < P.sequence_length * P.choices; c += gl_WorkGroupSize.x) {
        int expert = expert_ids[begin * P.choices + c];
        if (expert >= 0) atomicAdd(expert_counts[expert], 1u);
    }
    barrier();
    for (uint e = lane; e < P.num_experts; e += gl_WorkGroupSize.x)
        seq_counts[sequence * P.num_experts + e] = expert_counts[e];
    barrier(); // the next sequence reuses the shared counts
}

uint sequence_terms() { return LOSS_TOTAL_SEQUENCES * P.num_experts + P.num_tokens; }

void sequence_token_term(uint token) {
    float term = 0.0;
    if (row_flags[token] == ROW_VALID) {
        uint counts = (token / P.sequence_length) * P.num_experts;
        vec4 stats = row_stats[token];
        for (uint e = 0; e < P.num_experts; ++e)
            term += float(seq_counts[counts + e]) * probability(token, e, stats);
    }
    loss_totals[sequence_terms() + token] = term;
}

void sequence_total(uint sequence) {
    uint begin = sequence * P.sequence_length;
    float partial = 0.0;
    for (uint t = begin + gl_LocalInvocationID.x; t < begin + P.sequence_length;
         t += gl_WorkGroupSize.x)
        partial += loss_totals[sequence_terms() + t];
    float total = workgroup_tree_sum(partial);
    if (gl_LocalInvocationID.x == 0u) loss_totals[LOSS_TOTAL_SEQUENCES * P.num_experts + sequence] = total;
    barrier(); // the next sequence reuses the reduction's lanes
}

// Element i of dL/dcombined [T, d] (hidden_type).
float expert_out_element(uint i) {
    if (HIDDEN_DTYPE == DTYPE_F32) return uintBitsToFloat(expert_out_word(i));
    return decode_element(expert_out_word(i >> 1), i, HIDDEN_DTYPE);
}
float grad_combined_element(uint i) {
    if (HIDDEN_DTYPE == DTYPE_F32) return uintBitsToFloat(grad_combined_words[i]);
    return decode_element(grad_combined_words[i >> 1], i, HIDDEN_DTYPE);
}

void weights_backward(uint choice) {
    float grad = (P.flags & FLAG_GRAD_WEIGHTS) != 0u ? grad_weights[choice] : 0.0;
    int row = rows[choice];
    if ((P.flags & FLAG_GRAD_COMBINED) != 0u && row >= 0) {
        uint token = choice / P.choices;
        float dot = 0.0;
        for (uint i = 0; i < P.hidden_size; ++i)
            dot += grad_combined_element(token * P.hidden_size + i) *
                   expert_out_element(uint(row) * P.hidden_size + i);
        grad += dot;
    }
    grad_weights[choice] = grad;
}

// d cv2(v) / d v_e with cv2 = var / (mean^2 + 1e-10), the variance over the n = E entries.
float cv2_slope(float value, float mean, float variance) {
    float n = float(P.num_experts);
    float denominator = mean * mean + 1e-10;
    return (2.0 * (value - mean) / n * denominator - variance * 2.0 * mean / n) /
           (denominator * denominator);
}

// The slopes of one CV^2 loss: from the totals at `values` to the slopes at `slopes`.
void cv2_slopes_of(uint values, uint slopes) {
    uint E = P.num_experts;
    float sum = 0.0;
    for (uint e = gl_LocalInvocationID.x; e < E; e += gl_WorkGroupSize.x)
        sum += loss_totals[values + e];
    float mean = workgroup_tree_sum(sum) / float(E);
    barrier(); // every lane has read the mean before the lanes are reused
    float squares = 0.0;
    for (uint e = gl_LocalInvocationID.x; e < E; e += gl_WorkGroupSize.x) {
        float deviation = loss_totals[values + e] - mean;
        squares += deviation * deviation;
    }
    float variance = workgroup_tree_sum(squares) / float(E);
    barrier();
    for (uint e = gl_LocalInvocationID.x; e < E; e += gl_WorkGroupSize.x)
        loss_totals[slopes + e] = cv2_slope(loss_totals[values + e], mean, variance);
}

// The valid rows and the route's assignments before drops: the host's, or for a recorded route
// (whose statistics only the device holds) what LOSS_PHASE_COUNTS left after the totals.
uint counts_at() { return LOSS_TOTAL_SEQUENCES * P.num_experts + 2u * P.num_tokens; }
float valid_row_count() {
    return (P.flags & FLAG_COUNTS_ON_DEVICE) != 0u ? loss_totals[counts_at()]
                                                   : float(P.valid_rows);
}
uint assignment_count() {
    return (P.flags & FLAG_COUNTS_ON_DEVICE) != 0u ? floatBitsToUint(loss_totals[counts_at() + 1u])
                                                   : P.assignments;
}
// LOSS_PHASE_COUNTS (one invocation): the counts a run route's host knows, from the device.
void write_counts() {
    if (gl_GlobalInvocationID.x != 0u) return;
    uint E = P.num_experts, assignments = 0u;
    for (uint e = 0u; e < E; ++e) assignments += expert_info[e];
    uint invalid = uint(stat_totals[E + STAT_NONFINITE]) + uint(stat_totals[E + STAT_MASKED]);
    loss_totals[counts_at()] = float(P.num_tokens - invalid);
    loss_totals[counts_at() + 1u] = uintBitsToFloat(assignments);
}

// dL/dp_te of the losses that read the whole routing distribution (balancing, entropy,
// sequence-wise), p normalised over the experts.
float dense_slope(uint token, uint expert, float p) {
    float valid = valid_row_count();
    float E = float(P.num_experts);
    float slope = 0.0;
    uint assignments = assignment_count();
    if (P.aux_coef != 0.0 && assignments > 0u)
        slope += P.aux_coef * E * float(expert_info[expert]) / float(assignments) / valid;
    if (P.entropy_coef != 0.0 && p > 0.0) slope -= P.entropy_coef * (log(p) + 1.0) / valid;
    if (P.sequence_coef != 0.0) {
        float S = float(P.sequence_length);
        float sequences = float(P.batch_sequences); // T / S, or an expert-parallel batch's
        uint count = seq_counts[(token / P.sequence_length) * P.num_experts + expert];
        slope += P.sequence_coef * E / (float(P.choices) * S * S * sequences) * float(count);
    }
    return slope;
}

// ds/dlogit: the jitter factor where the scores use jittered logits, else 1.
float noise_slope(float logit, uint token, uint expert) {
    if ((P.flags & FLAG_NOISY_SCORES) == 0u || P.noise_kind != NOISE_JITTER) return 1.0;
    return jitter_factor(noise_uniform(noise_bits(token, expert).x));
}

bool grad_noise_wanted() { return (P.flags & FLAG_GRAD_NOISE) != 0u; }
bool learned_std() { return (P.flags & FLAG_NOISE_STD_LEARNED) != 0u; }
// grad_noise holds the results first ([E], or [d, E] for a learned std), then dL/dstd [T, E].
uint grad_std_offset() { return learned_std() ? P.hidden_size * P.num_experts : P.num_experts; }

void logits_backward(uint token) {
    uint E = P.num_experts;
    uint base = token * E;
    uint std_base = grad_std_offset() + base;
    if (row_flags[token] != ROW_VALID) {
        for (uint e = 0; e < E; ++e) grad_logits[base + e] = 0.0;
        for (uint e = 0; e < E && grad_noise_wanted(); ++e) grad_noise[std_base + e] = 0.0;
        return;
    }
    vec4 stats = row_stats[token];
    bool sigmoid = sigmoid_scores();
    float tau = P.temperature;

    // dL/dq_j of each choice's score q (before renormalisation and scale).
    float q[CHOICES], grad_q[CHOICES];
    float q_sum = 0.0;
    for (uint j = 0; j < CHOICES; ++j) {
        q[j] = 0.0;
        grad_q[j] = 0.0;
        int expert = expert_ids[token * P.choices + j];
        if (expert < 0) continue;
        float s = score_logit(logit_at(token, uint(expert)), token, uint(expert));
        q[j] = sigmoid ? 1.0 / (1.0 + exp(-(s / tau))) : exp((s - stats.x) / tau) * stats.y;
        q_sum += q[j];
        float g = 0.0;
        if ((P.flags & (FLAG_GRAD_WEIGHTS | FLAG_GRAD_COMBINED)) != 0u)
            g = grad_weights[token * P.choices + j];
        if (P.importance_coef != 0.0)
            g += P.importance_coef *
                 loss_totals[LOSS_TOTAL_IMPORTANCE_SLOPE * P.num_experts + uint(expert)];
        grad_q[j] = g * P.scale;
    }
    if ((P.flags & FLAG_RENORMALIZE) != 0u && q_sum > 0.0) {
        float weighted = 0.0;
        for (uint j = 0; j < CHOICES; ++j) weighted += grad_q[j] * q[j];
        for (uint j = 0; j < CHOICES; ++j) grad_q[j] = (grad_q[j] - weighted / q_sum) / q_sum;
    }

    // dL/dp: the dense losses' slope plus, for softmax, the choices' (q is p there).
    // dot = sum_e p_e dL/dp_e, for the softmax's (and the sigmoid normalisation's) Jacobian.
    float dot = 0.0;
    for (uint e = 0; e < E; ++e) {
        float p = probability(token, e, stats);
        dot += p * dense_slope(token, e, p);
    }
    if (!sigmoid)
        for (uint j = 0; j < CHOICES; ++j) dot += q[j] * grad_q[j];

    vec4 thresholds = P.load_coef != 0.0 ? loss_rows[token] : vec4(0.0);
    float into_kth = 0.0, into_next = 0.0; // load slopes owed to the two threshold experts
    bool noisy_scores = (P.flags & FLAG_NOISY_SCORES) != 0u;
    for (uint e = 0; e < E; ++e) {
        float logit = logit_at(token, e);
        float grad = 0.0, grad_std = 0.0;
        if (!isinf(logit)) {
            float s = score_logit(logit, token, e);
            float p = probability(token, e, stats);
            float choice_slope = 0.0;
            for (uint j = 0; j < CHOICES; ++j)
                if (expert_ids[token * P.choices + j] == int(e)) choice_slope += grad_q[j];
            float grad_s;
            if (sigmoid) {
                float sig = 1.0 / (1.0 + exp(-(s / tau)));
                float grad_sig = (dense_slope(token, e, p) - dot) * stats.y + choice_slope;
                grad_s = grad_sig * sig * (1.0 - sig) / tau;
            } else {
                grad_s = p * (dense_slope(token, e, p) + choice_slope - dot) / tau;
            }
            grad = grad_s * noise_slope(logit, token, e);
            // The std moves the noisy scores by the sample: d noisy / d std = n.
            if (grad_noise_wanted() && noisy_scores) grad_std = grad_s * gaussian_sample(token, e);
            if (P.z_coef != 0.0)
                grad += P.z_coef * 2.0 / valid_row_count() * stats.z * exp(logit - stats.z);
            if (P.load_coef != 0.0) {
                bool in_top_k = selected(token, e);
                float z = load_z(token, e, thresholds, in_top_k);
                if (!isinf(z)) {
                    float slope = P.load_coef * loss_totals[LOSS_TOTAL_LOAD_SLOPE * E + e] *
                                  normal_pdf(z) / noise_std(token, e);
                    grad += slope;
                    grad_std -= slope * z; // dz/dstd = -z / std
                    if (in_top_k) into_next += slope; else into_kth += slope;
                }
            }
        }
        grad_logits[base + e] = grad;
        if (grad_noise_wanted()) grad_noise[std_base + e] = grad_std;
    }
    // The thresholds are the noisy keys of two experts: moving their logits moves them.
    int next_expert = floatBitsToInt(thresholds.z), kth_expert = floatBitsToInt(thresholds.w);
    if (P.load_coef != 0.0 && next_expert >= 0) grad_logits[base + uint(next_expert)] -= into_next;
    if (P.load_coef != 0.0 && kth_expert >= 0) grad_logits[base + uint(kth_expert)] -= into_kth;
    // A threshold is its expert's noisy key: its std moves it by the sample.
    if (grad_noise_wanted() && P.load_coef != 0.0 && next_expert >= 0)
        grad_noise[std_base + uint(next_expert)] -= into_next * gaussian_sample(token, uint(next_expert));
    if (grad_noise_wanted() && P.load_coef != 0.0 && kth_expert >= 0)
        grad_noise[std_base + uint(kth_expert)] -= into_kth * gaussian_sample(token, uint(kth_expert));
}

// Learned std: dL/dz_te = dL/dstd_te * sigmoid(z_te), z_te = x_t . W_noise[:, e] (softplus').
void noise_slope_of(uint i) {
    uint E = P.num_experts;
    float dot_product = learned_noise_preactivation(i / E, i % E);
    grad_noise[grad_std_offset() + i] *= 1.0 / (1.0 + exp(-dot_product));
}

// dL/dnoise_std_e = sum_t dL/dstd_te, or dL/dW_noise[j, e] = sum_t x_tj dL/dz_te, in token order.
void noise_reduce(uint i) {
    uint E = P.num_experts, d = P.hidden_size, expert = i % E, j = i / E;
    uint begin = P.token_chunk * TOKEN_CHUNK, end = min(begin + TOKEN_CHUNK, P.num_tokens);
    float sum = P.token_chunk > 0u ? grad_noise[i] : 0.0;
    for (uint t = begin; t < end; ++t) {
        float g = grad_noise[grad_std_offset() + t * E + expert];
        sum += learned_std() ? gradient_hidden_element(t * d + j) * g : g;
    }
    grad_noise[i] = sum;
}

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (P.phase == LOSS_PHASE_THRESHOLDS) {
        for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride) thresholds(t);
    } else if (P.phase == LOSS_PHASE_PARTIALS) {
        partial_sums();
    } else if (P.phase == LOSS_PHASE_COLUMNS) {
        column_sums();
    } else if (P.phase == LOSS_PHASE_CV2_SLOPES) {
        uint E = P.num_experts;
        cv2_slopes_of(LOSS_TOTAL_IMPORTANCE * E, LOSS_TOTAL_IMPORTANCE_SLOPE * E);
        cv2_slopes_of(LOSS_TOTAL_LOAD * E, LOSS_TOTAL_LOAD_SLOPE * E);
    } else if (P.phase == LOSS_PHASE_SEQUENCES) {
        uint sequences = P.num_tokens / P.sequence_length;
        for (uint b = gl_WorkGroupID.x; b < sequences; b += gl_NumWorkGroups.x) sequence_counts(b);
    } else if (P.phase == LOSS_PHASE_SEQUENCE_TOKENS) {
        for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride) sequence_token_term(t);
    } else if (P.phase == LOSS_PHASE_SEQUENCE_TOTALS) {
        uint sequences = P.num_tokens / P.sequence_length;
        for (uint b = gl_WorkGroupID.x; b < sequences; b += gl_NumWorkGroups.x) sequence_total(b);
    } else if (P.phase == LOSS_PHASE_WEIGHTS_BACKWARD) {
        for (uint c = gl_GlobalInvocationID.x; c < P.num_tokens * P.choices; c += stride)
            weights_backward(c);
    } else if (P.phase == LOSS_PHASE_LOGITS_BACKWARD) {
        for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride) logits_backward(t);
    } else if (P.phase == LOSS_PHASE_NOISE_SLOPE) {
        for (uint i = gl_GlobalInvocationID.x; i < P.num_tokens * P.num_experts; i += stride)
            noise_slope_of(i);
    } else if (P.phase == LOSS_PHASE_COUNTS) {
        write_counts();
    } else if (P.phase == LOSS_PHASE_LOAD_TERMS) {
        for (uint i = gl_GlobalInvocationID.x; i < P.num_tokens * P.num_experts; i += stride)
            grad_logits[i] = load_term(i / P.num_experts, i % P.num_experts);
    } else {
        uint results = learned_std() ? P.hidden_size * P.num_experts : P.num_experts;
        for (uint i = gl_GlobalInvocationID.x; i < results; i += stride) noise_reduce(i);
    }
}
