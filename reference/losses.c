/* Reference of the balancing losses and the router's backward (shaders/losses.comp), in double
 * from double logits: a forward pass that the tests differentiate by central finite differences,
 * and the analytic gradient the device's is held to. The noise is a constant per (token,
 * expert): the jitter factor, or the additive Gaussian or Gumbel sample. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moevk_reference.h"

/* One row routed in double: validity, choices, scores and the load thresholds. */
typedef struct row_route {
    int valid;
    int32_t ids[MOEVK_MAX_TOP_K];
    double q[MOEVK_MAX_TOP_K]; /* scores of the choices before renormalisation and scale */
    double w[MOEVK_MAX_TOP_K]; /* combine weights */
    double q_sum;
    double lse;               /* of the clean logits */
    double entropy;           /* of p */
    double inv_norm;          /* 1 / (softmax sum, or sum of sigmoids) */
    double next_key, kth_key; /* the (k+1)-th and k-th largest selection keys */
    int32_t next_expert, kth_expert;
} row_route;

static double noise_value(const moevk_router_info *info, const ref_call *call, uint32_t t,
                          uint32_t e, int *jitter) {
    *jitter = info->noise == MOEVK_NOISE_JITTER;
    if (info->noise == MOEVK_NOISE_NONE || (call && call->inference)) {
        *jitter = 0;
        return 0.0;
    }
    if (info->noise == MOEVK_NOISE_GAUSSIAN) /* in double: smooth in the std, for its gradient */
        return ref_noise_std(info, call, t, e) * (double)ref_gaussian_sample(info, call, t, e);
    return *jitter ? ref_noisy_logit(info, call, 1.0f, t, e)
                   : ref_noisy_logit(info, call, 0.0f, t, e);
}

static double noisy(const moevk_router_info *info, const ref_call *call, double logit, uint32_t t,
                    uint32_t e) {
    if (isinf(logit) || isnan(logit)) return logit;
    int jitter;
    double value = noise_value(info, call, t, e, &jitter);
    return jitter ? logit * value : logit + value;
}

/* d noisy / d logit. */
static double noisy_slope(const moevk_router_info *info, const ref_call *call, uint32_t t,
                          uint32_t e) {
    int jitter;
    double value = noise_value(info, call, t, e, &jitter);
    return jitter ? value : 1.0;
}

static double score_logit(const moevk_router_info *info, const ref_call *call, double logit,
                          uint32_t t, uint32_t e) {
    return info->noisy_scores ? noisy(info, call, logit, t, e) : logit;
}

/* p_e (normalised) and, for sigmoid, the raw sigmoids; logits is the row. */
static void route_row(const moevk_router_info *info, const ref_call *call, uint32_t t,
                      const double *logits, const float *bias, double *p, double *sig,
                      row_route *row) {
    uint32_t E = info->num_experts, K = info->top_k;
    double tau = info->temperature;
    int sigmoid = info->score == MOEVK_SCORE_SIGMOID;
    double keys[MOEVK_MAX_TOP_K + 1];
    int32_t experts[MOEVK_MAX_TOP_K + 1];
    for (uint32_t j = 0; j <= K; ++j) {
        keys[j] = -INFINITY;
        experts[j] = -1;
    }
    int nonfinite = 0;
    double max_raw = -INFINITY, max_score = -INFINITY;
    /* The kept groups from the keys as the device computes them, in f32. */
    float float_keys[MOEVK_MAX_EXPERTS] = {0};
    for (uint32_t e = 0; e < E; ++e) {
        float noisy_key = ref_noisy_logit(info, call, (float)logits[e], t, e);
        float_keys[e] = bias ? noisy_key + bias[e] : noisy_key;
    }
    uint32_t groups = ref_kept_groups(info, float_keys);
    for (uint32_t e = 0; e < E; ++e) {
        double key = noisy(info, call, logits[e], t, e) + (bias ? bias[e] : 0.0);
        if (!ref_group_kept(info, groups, e) && !isnan(key) && key != INFINITY) key = -INFINITY;
        if (isnan(key) || key == INFINITY) nonfinite = 1;
        max_raw = fmax(max_raw, logits[e]);
        max_score = fmax(max_score, score_logit(info, call, logits[e], t, e));
        ref_insert_descending(keys, experts, K + 1, key, (int32_t)e);
    }
    memset(row, 0, sizeof *row);
    for (uint32_t e = 0; e < E; ++e) p[e] = sig[e] = 0.0;
    for (uint32_t j = 0; j < K; ++j) row->ids[j] = -1;
    if (nonfinite || isinf(max_raw)) return;
    row->valid = 1;
    for (uint32_t j = 0; j < K; ++j) row->ids[j] = experts[j];
    row->next_key = keys[K];
    row->kth_key = keys[K - 1];
    row->next_expert = experts[K];
    row->kth_expert = experts[K - 1];
    double norm = 0.0, raw_sum = 0.0;
    for (uint32_t e = 0; e < E; ++e) {
        if (isinf(logits[e])) continue;
        raw_sum += exp(logits[e] - max_raw);
        double s = score_logit(info, call, logits[e], t, e);
        sig[e] = sigmoid ? 1.0 / (1.0 + exp(-s / tau)) : exp((s - max_score) / tau);
        norm += sig[e];
    }
    row->lse = max_raw + log(raw_sum);
    row->inv_norm = 1.0 / norm;
    row->entropy = 0.0;
    for (uint32_t e = 0; e < E; ++e) {
        p[e] = sig[e] / norm;
        if (p[e] > 0.0) row->entropy -= p[e] * log(p[e]);
    }
    row->q_sum = 0.0;
    for (uint32_t j = 0; j < K; ++j) {
        if (row->ids[j] < 0) continue;
        uint32_t e = (uint32_t)row->ids[j];
        row->q[j] = sigmoid ? sig[e] : p[e];
        row->q_sum += row->q[j];
    }
    int renormalize = info->renormalize && row->q_sum > 0.0;
    for (uint32_t j = 0; j < K; ++j)
        row->w[j] = row->ids[j] < 0
                        ? 0.0
                        : (renormalize ? row->q[j] / row->q_sum : row->q[j]) * info->scale;
}

static double normal_cdf(double z) { return 0.5 * erfc(-z / sqrt(2.0)); }
static double normal_pdf(double z) {
    return exp(-0.5 * z * z) / sqrt(2.0 * 3.14159265358979323846);
}

static int chosen(const row_route *row, uint32_t K, uint32_t e) {
    for (uint32_t j = 0; j < K; ++j)
        if (row->ids[j] == (int32_t)e) return 1;
    return 0;
}

/* z of the load term, +-inf where decided (see shaders/losses.comp). */
static double load_z(double std, const row_route *row, double logit, const float *bias, uint32_t e,
                     int in_top_k) {
    double key = logit + (bias ? bias[e] : 0.0);
    double threshold = in_top_k ? row->next_key : row->kth_key;
    if (isinf(key)) return -INFINITY;
    if (isinf(threshold)) return INFINITY;
    return (key - threshold) / std;
}

/* Everything both passes need, for the whole batch. */
typedef struct batch {
    row_route *rows;
    double *p, *sig;      /* [T, E] */
    double *importance;   /* [E] */
    double *load;         /* [E] */
    uint32_t *counts;     /* [E]: selections before drops */
    uint32_t *seq_counts; /* [T / S, E] */
    double assignments, valid;
} batch;

static void batch_free(batch *b) {
    free(b->rows);
    free(b->p);
    free(b->sig);
    free(b->importance);
    free(b->load);
    free(b->counts);
    free(b->seq_counts);
}

static int batch_route(const moevk_router_info *info, const ref_call *call,
                       const moevk_loss_info *loss, uint32_t T, const double *logits,
                       const float *bias, batch *b) {
    uint32_t E = info->num_experts, K = info->top_k;
    uint32_t S = loss->sequence_length ? loss->sequence_length : 1;
    memset(b, 0, sizeof *b);
    b->rows = calloc(T ? T : 1, sizeof *b->rows);
    b->p = calloc((size_t)T * E + 1, sizeof *b->p);
    b->sig = calloc((size_t)T * E + 1, sizeof *b->sig);
    b->importance = calloc(E, sizeof *b->importance);
    b->load = calloc(E, sizeof *b->load);
    b->counts = calloc(E, sizeof *b->counts);
    b->seq_counts = calloc((size_t)(T / S + 1) * E, sizeof *b->seq_counts);
    if (!b->rows || !b->p || !b->sig || !b->importance || !b->load || !b->counts ||
        !b->seq_counts) {
        batch_free(b);
        return 0;
    }
    for (uint32_t t = 0; t < T; ++t) {
        row_route *row = &b->rows[t];
        route_row(info, call, t, logits + (size_t)t * E, bias, b->p + (size_t)t * E,
                  b->sig + (size_t)t * E, row);
        if (!row->valid) continue;
        b->valid += 1;
        for (uint32_t j = 0; j < K; ++j) {
            if (row->ids[j] < 0) continue;
            b->counts[row->ids[j]] += 1;
            b->assignments += 1;
            b->importance[row->ids[j]] += row->w[j];
            b->seq_counts[(size_t)(t / S) * E + row->ids[j]] += 1;
        }
        if (loss->load_coef != 0.0f)
            for (uint32_t e = 0; e < E; ++e)
                b->load[e] +=
                    normal_cdf(load_z(ref_noise_std(info, call, t, e), row,
                                      logits[(size_t)t * E + e], bias, e, chosen(row, K, e)));
    }
    return 1;
}

static double cv2(const double *v, uint32_t n, double *mean, double *variance) {
    double m = 0.0, var = 0.0;
    for (uint32_t i = 0; i < n; ++i) m += v[i];
    m /= n;
    for (uint32_t i = 0; i < n; ++i) var += (v[i] - m) * (v[i] - m);
    var /= n;
    if (mean) *mean = m;
    if (variance) *variance = var;
    return var / (m * m + 1e-10);
}

static double cv2_slope(double value, double mean, double variance, uint32_t n) {
    double d = mean * mean + 1e-10;
    return (2.0 * (value - mean) / n * d - variance * 2.0 * mean / n) / (d * d);
}

double ref_loss_forward(const moevk_router_info *info, const ref_call *call,
                        const moevk_loss_info *loss, uint32_t T, const double *logits,
                        const float *bias, const double *grad_weights, moevk_losses *losses,
                        int32_t *ids) {
    uint32_t E = info->num_experts, K = info->top_k;
    uint32_t S = loss->sequence_length ? loss->sequence_length : 1;
    batch b;
    moevk_losses out = {0};
    if (!batch_route(info, call, loss, T, logits, bias, &b)) return NAN;
    double extra = 0.0;
    if (b.valid > 0) {
        for (uint32_t e = 0; e < E; ++e) {
            double P = 0.0;
            for (uint32_t t = 0; t < T; ++t) P += b.p[(size_t)t * E + e];
            if (b.assignments > 0) out.aux += E * (b.counts[e] / b.assignments) * (P / b.valid);
        }
        for (uint32_t t = 0; t < T; ++t) {
            if (!b.rows[t].valid) continue;
            out.z += b.rows[t].lse * b.rows[t].lse / b.valid;
            out.entropy += b.rows[t].entropy / b.valid;
        }
        out.importance = cv2(b.importance, E, NULL, NULL);
        if (loss->load_coef != 0.0f) out.load = cv2(b.load, E, NULL, NULL);
    }
    if (loss->sequence_coef != 0.0f && T > 0) {
        uint32_t sequences = T / S;
        for (uint32_t s = 0; s < sequences; ++s)
            for (uint32_t e = 0; e < E; ++e) {
                double sum = 0.0;
                for (uint32_t t = s * S; t < (s + 1) * S; ++t) sum += b.p[(size_t)t * E + e];
                out.sequence += (double)E / ((double)K * S) * b.seq_counts[(size_t)s * E + e] *
                                sum / S / sequences;
            }
    }
    for (uint32_t t = 0; t < T; ++t) {
        if (ids) memcpy(ids + (size_t)t * K, b.rows[t].ids, K * sizeof *ids);
        if (grad_weights)
            for (uint32_t j = 0; j < K; ++j)
                extra += grad_weights[(size_t)t * K + j] * b.rows[t].w[j];
    }
    out.total = loss->aux_coef * out.aux + loss->z_coef * out.z +
                loss->importance_coef * out.importance + loss->load_coef * out.load +
                loss->entropy_coef * out.entropy + loss->sequence_coef * out.sequence;
    if (losses) *losses = out;
    batch_free(&b);
    return out.total + extra;
}

int ref_loss_gradient(const moevk_router_info *info, const ref_call *call,
                      const moevk_loss_info *loss, uint32_t T, const double *logits,
                      const float *bias, const double *grad_weights, double *grad,
                      double *grad_std) {
    int gaussian = info->noise == MOEVK_NOISE_GAUSSIAN && !(call && call->inference);
    uint32_t E = info->num_experts, K = info->top_k;
    uint32_t S = loss->sequence_length ? loss->sequence_length : 1;
    double tau = info->temperature;
    int sigmoid = info->score == MOEVK_SCORE_SIGMOID;
    batch b;
    if (!batch_route(info, call, loss, T, logits, bias, &b)) return 0;
    double imp_mean, imp_var, load_mean = 0, load_var = 0;
    cv2(b.importance, E, &imp_mean, &imp_var);
    if (loss->load_coef != 0.0f) cv2(b.load, E, &load_mean, &load_var);
    double sequences = T / S;
    double *dense = calloc(E, sizeof *dense);
    if (!dense) {
        batch_free(&b);
        return 0;
    }
    for (uint32_t t = 0; t < T; ++t) {
        const row_route *row = &b.rows[t];
        double *g = grad + (size_t)t * E;
        const double *p = b.p + (size_t)t * E, *sig = b.sig + (size_t)t * E;
        const double *l = logits + (size_t)t * E;
        double *gs = grad_std ? grad_std + (size_t)t * E : NULL;
        for (uint32_t e = 0; e < E; ++e) g[e] = 0.0;
        for (uint32_t e = 0; gs && e < E; ++e) gs[e] = 0.0;
        if (!row->valid) continue;
        /* dL/dp of the dense losses. */
        for (uint32_t e = 0; e < E; ++e) {
            double slope = 0.0;
            if (b.assignments > 0)
                slope += loss->aux_coef * E * (b.counts[e] / b.assignments) / b.valid;
            if (p[e] > 0.0) slope -= loss->entropy_coef * (log(p[e]) + 1.0) / b.valid;
            if (loss->sequence_coef != 0.0f)
                slope += loss->sequence_coef * E / ((double)K * S * S * sequences) *
                         b.seq_counts[(size_t)(t / S) * E + e];
            dense[e] = slope;
        }
        /* dL/dq of the choices: through the scale and the renormalisation. */
        double grad_q[MOEVK_MAX_TOP_K] = {0};
        for (uint32_t j = 0; j < K; ++j) {
            if (row->ids[j] < 0) continue;
            double gw = grad_weights ? grad_weights[(size_t)t * K + j] : 0.0;
            gw +=
                loss->importance_coef * cv2_slope(b.importance[row->ids[j]], imp_mean, imp_var, E);
            grad_q[j] = gw * info->scale;
        }
        if (info->renormalize && row->q_sum > 0.0) {
            double weighted = 0.0;
            for (uint32_t j = 0; j < K; ++j) weighted += grad_q[j] * row->q[j];
            for (uint32_t j = 0; j < K; ++j)
                grad_q[j] = (grad_q[j] - weighted / row->q_sum) / row->q_sum;
        }
        double choice[MOEVK_MAX_EXPERTS] = {0};
        for (uint32_t j = 0; j < K; ++j)
            if (row->ids[j] >= 0) choice[row->ids[j]] += grad_q[j];
        double dot = 0.0;
        for (uint32_t e = 0; e < E; ++e) dot += p[e] * (dense[e] + (sigmoid ? 0.0 : choice[e]));
        double into_next = 0.0, into_kth = 0.0;
        for (uint32_t e = 0; e < E; ++e) {
            if (isinf(l[e])) continue;
            double grad_s;
            if (sigmoid)
                grad_s =
                    ((dense[e] - dot) * row->inv_norm + choice[e]) * sig[e] * (1.0 - sig[e]) / tau;
            else
                grad_s = p[e] * (dense[e] + choice[e] - dot) / tau;
            g[e] += grad_s * (info->noisy_scores ? noisy_slope(info, call, t, e) : 1.0);
            /* The std moves the noisy scores by the sample: d noisy / d std = n. */
            if (gs && gaussian && info->noisy_scores)
                gs[e] += grad_s * ref_gaussian_sample(info, call, t, e);
            g[e] += loss->z_coef * 2.0 / b.valid * row->lse * exp(l[e] - row->lse);
            if (loss->load_coef != 0.0f) {
                int in_top_k = chosen(row, K, e);
                double std = ref_noise_std(info, call, t, e);
                double z = load_z(std, row, l[e], bias, e, in_top_k);
                if (isinf(z)) continue;
                double slope = loss->load_coef * cv2_slope(b.load[e], load_mean, load_var, E) *
                               normal_pdf(z) / std;
                g[e] += slope;
                if (gs) gs[e] -= slope * z; /* dz/dstd = -z / std */
                if (in_top_k)
                    into_next += slope;
                else
                    into_kth += slope;
            }
        }
        if (loss->load_coef != 0.0f && row->next_expert >= 0) g[row->next_expert] -= into_next;
        if (loss->load_coef != 0.0f && row->kth_expert >= 0) g[row->kth_expert] -= into_kth;
        /* A threshold is its expert's noisy key: its std moves it by the sample. */
        if (gs && gaussian && loss->load_coef != 0.0f && row->next_expert >= 0)
            gs[row->next_expert] -=
                into_next * ref_gaussian_sample(info, call, t, (uint32_t)row->next_expert);
        if (gs && gaussian && loss->load_coef != 0.0f && row->kth_expert >= 0)
            gs[row->kth_expert] -=
                into_kth * ref_gaussian_sample(info, call, t, (uint32_t)row->kth_expert);
    }
    free(dense);
    batch_free(&b);
    return 1;
}
