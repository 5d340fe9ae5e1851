/* The CPU reference of every routing stage, in plain C, that the tests hold the shaders to.
 * Each function is one stage with the same semantics as its shader (see README, "Routing
 * semantics"); stages take the previous stage's outputs, so a test can feed a stage the device's
 * own inputs and compare integers exactly. Single-threaded, allocation only where noted. */
#ifndef MOEVK_REFERENCE_H
#define MOEVK_REFERENCE_H

#include <stdint.h>

#include "moevk.h"

/* 16-bit float conversions (round to nearest even, NaN kept). */
float ref_half_to_float(uint16_t bits);
uint16_t ref_float_to_half(float value);
float ref_bf16_to_float(uint16_t bits);
uint16_t ref_float_to_bf16(float value);
/* ggml's block formats (MOEVK_DTYPE_Q8_0 ... Q6_K, quant.c): weight i of an array of blocks,
 * the weights of one block (1 for F32, F16, BF16) and a matrix's bytes (cols whole blocks). */
float ref_quant_weight(const void *blocks, uint64_t i, moevk_dtype type);
uint32_t ref_block_weights(moevk_dtype type);
uint64_t ref_matrix_bytes(moevk_dtype type, uint64_t rows, uint64_t cols);
/* Element i of a [n] array stored as dtype (a block format: its weight i). */
float ref_load(const void *data, uint64_t i, moevk_dtype dtype);
void ref_store(void *data, uint64_t i, moevk_dtype dtype, float value);

enum { REF_ROW_VALID = 0, REF_ROW_NONFINITE = 1, REF_ROW_MASKED = 2 };

/* What a route call adds to the router's options: the noise counter's step and layer, and
 * inference mode (no noise). NULL where a function takes one: step 0, layer 0, training. */
typedef struct ref_call {
    uint32_t step, layer;
    uint32_t noise_row_offset; /* added to the noise counter's row */
    int inference;
    /* Gaussian noise's std: NULL for the router's noise_amount; else [E] per expert, or with
     * std_per_token [T, E] (a learned std, ref_learned_noise_std). */
    const float *noise_std;
    int std_per_token;
} ref_call;

/* The standard normal sample of (token, expert): sqrt(-2 ln u0) * cos(2 pi u1), in f32. */
float ref_gaussian_sample(const moevk_router_info *info, const ref_call *call, uint32_t token,
                          uint32_t expert);
/* The Gaussian noise's std for (token, expert). */
float ref_noise_std(const moevk_router_info *info, const ref_call *call, uint32_t token,
                    uint32_t expert);
/* The router projection: logits [T, E] f32 = hidden [T, d] (hidden_type) . W_router^T, W_router
 * [E, d] f32, each logit summed over j in ascending order. */
void ref_router_projection(const moevk_router_info *info, uint32_t T, const void *hidden,
                           const float *router_weights, float *logits);
/* A learned std [T, E]: softplus(x_t . W_noise[:, e]) + noise_epsilon, x [T, d] in hidden_type,
 * W_noise [d, E] f32, the dot product in f32 in index order. */
void ref_learned_noise_std(const moevk_router_info *info, uint32_t T, const void *hidden,
                           const float *noise_weights, float *std);

/* Schedules: a schedule's value; the options in force at a step; the capacity at a step. */
float ref_schedule_value(const moevk_schedule *schedule, uint32_t step);
moevk_router_info ref_at_step(const moevk_router_info *info, uint32_t step);
uint32_t ref_capacity(const moevk_router_info *info, uint32_t T, uint32_t step);

/* Philox4x32-10 (Random123's philox4x32_R with R = 10). */
void ref_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);
/* u = (x >> 8) * 2^-24 + 2^-25, in (0, 1). */
float ref_noise_uniform(uint32_t word);
/* The logit after the router's noise (selection uses it); the logit the scores use. */
float ref_noisy_logit(const moevk_router_info *info, const ref_call *call, float logit,
                      uint32_t token, uint32_t expert);
float ref_score_logit(const moevk_router_info *info, const ref_call *call, float logit,
                      uint32_t token, uint32_t expert);

/* Top-n by stable insertion: key goes into keys/ids [n] (descending) if it beats the last;
 * an equal key goes after the earlier one, so ties keep the lower id, as the shaders do. -inf
 * and NaN keys never enter. */
void ref_insert_descending(double *keys, int32_t *ids, uint32_t n, double key, int32_t id);

/* Group-limited routing: the mask of a row's kept groups from its selection keys [E] (all bits
 * when groups are off), and whether an expert's group is kept. */
uint32_t ref_kept_groups(const moevk_router_info *info, const float *keys);
int ref_group_kept(const moevk_router_info *info, uint32_t mask, uint32_t expert);

/* The routing modes (moevk_routing_mode). A token row's own validity from its raw logits
 * (REF_ROW_*); the tokens per decision (1 in TOKEN and SINKHORN modes); the mean logits
 * [sequences, E] of SEQUENCE and BATCH modes; the correctly rounded f32 1/n (n < 2^31). */
uint32_t ref_row_validity(const moevk_router_info *info, const void *logits, uint32_t token);
uint32_t ref_sequence_length(const moevk_router_info *info, uint32_t T);
void ref_sequence_means(const moevk_router_info *info, uint32_t T, const void *logits,
                        float *means);
float ref_exact_reciprocal(uint32_t n);

/* Sinkhorn's factors (d0 [T] allocated: free it). Returns 0 when out of memory. */
typedef struct ref_sinkhorn_factors {
    float shift;
    float d1[MOEVK_MAX_EXPERTS];
    float *d0;
    uint32_t iterations;
    float error;
} ref_sinkhorn_factors;
int ref_sinkhorn(const moevk_router_info *info, const ref_call *call, uint32_t T,
                 const void *logits, ref_sinkhorn_factors *out);
/* The selection key of a noisy logit: (d1_e * exp(noisy - shift)) * d0_t; non-finite stays. */
float ref_sinkhorn_key(const ref_sinkhorn_factors *factors, float noisy, uint32_t token,
                       uint32_t expert);

/* EXPERT_CHOICE mode. The keys [T, E] experts rank tokens by (the routing score of the noisy
 * logits; -1 where not eligible), from the row stats of a TOKEN-mode ref_scores_topk; the weight
 * of a taken token; and the choice: taken [T, E] (1: expert e took token t) and each expert's
 * threshold (its C-th key, or -1 when it took every eligible token). 0: out of memory. */
struct ref_row_stats;
void ref_choice_keys(const moevk_router_info *info, const ref_call *call, uint32_t T,
                     const void *logits, const struct ref_row_stats *row_stats, float *keys);
float ref_choice_weight(const moevk_router_info *info, const ref_call *call, const void *logits,
                        const struct ref_row_stats *stats, uint32_t token, uint32_t expert);
int ref_expert_choice(const moevk_router_info *info, uint32_t T, uint32_t capacity,
                      const float *keys, uint8_t *taken, float *thresholds);

/* Per-row values the stats need: largest logit, 1/normaliser, raw logsumexp, entropy. */
typedef struct ref_row_stats {
    float max_logit, inv_norm, lse_raw, entropy;
    uint32_t flag;
} ref_row_stats;

/* Scores and top-k, in the router's mode. logits [T, E] in info->logits_type; bias [E] or NULL.
 * Writes ids, weights [T, k] and row_stats [T]. Allocates scratch in the SEQUENCE, BATCH and
 * SINKHORN modes; returns 0 if that fails, else 1. */
int ref_scores_topk(const moevk_router_info *info, const ref_call *call, uint32_t T,
                    const void *logits, const float *bias, int32_t *ids, float *weights,
                    ref_row_stats *row_stats);

/* Bucketing with the capacity (ignored when dropless) and the drop policy.
 * Writes slots, rows [T, k]; row_token [dispatched rows] (-1 where unfilled);
 * counts_before, counts [E]; offsets [E + 1] (dropless first rows, else zeros).
 * Returns the number of dispatched rows. Allocates scratch (returns 0 and leaves outputs
 * unset if that fails; callers in tests treat it as fatal). */
uint64_t ref_bucket(const moevk_router_info *info, uint32_t T, uint32_t capacity,
                    const int32_t *ids, const float *weights, int32_t *slots, int32_t *rows,
                    int32_t *row_token, uint32_t *counts_before, uint32_t *counts,
                    uint32_t *offsets);

/* Dispatch: out[r] = hidden[row_token[r]] or zeros, bit for bit. Row size in bytes. */
void ref_dispatch(uint64_t num_rows, uint64_t row_bytes, const int32_t *row_token,
                  const void *hidden, void *out);

/* Combine: combined[t] = sum over j of weights[t,j] * expert_out[rows[t,j]] (f32 sums). */
void ref_combine(const moevk_router_info *info, uint32_t T, const int32_t *rows,
                 const float *weights, const void *expert_out, void *combined);

/* Each token's scores [T, 3] (shaders/token_scores.comp): energy -tau logsumexp(logits / tau)
 * of its own logits (double), its routing distribution's entropy and top-1 probability; NaN x3
 * for non-finite rows, +inf, 0, 0 for masked ones. TOKEN and EXPERT_CHOICE modes. */
void ref_token_scores(const moevk_router_info *info, const ref_call *call, uint32_t T,
                      const void *logits, const ref_row_stats *row_stats, float *out);
/* The routing profile (shaders/profile.comp, engine/drift.c). Each valid token's five measures
 * [T, REF_MEASURES] in double (NaN rows for the others): entropy, top-1, top-1 - top-2, raw
 * logsumexp, energy. */
#define REF_MEASURES 5
void ref_profile_measures(const moevk_router_info *info, const ref_call *call, uint32_t T,
                          const void *logits, const ref_row_stats *row_stats, double *out);
/* The histogram word of x: 0 below lower, 1 + bin, bins + 1 at or above upper. */
uint32_t ref_profile_bin(double x, double lower, double upper, uint32_t bins);
/* A first batch's bounds of one measure: its extremes widened by a quarter of their span. */
void ref_profile_bounds(const double *measures, uint32_t T, uint32_t measure, double *lower,
                        double *upper);
/* Adds each token's co-selected pairs (a, b), a != b, and (a, a) to pairs [E, E]. */
void ref_profile_pairs(uint32_t E, uint32_t k, uint32_t T, const int32_t *ids, uint64_t *pairs);
/* The drift statistics from counts: JSD (nats) of usage, PSI over the profile's deciles (0.5
 * pseudo-counts per group), a histogram's quantile (linear within its bin). */
double ref_usage_jsd(const double *profile, const double *batch, uint32_t E);
double ref_psi(const double *profile, const double *batch, uint32_t n);
double ref_histogram_quantile(const double *counts, uint32_t bins, double lower, double upper,
                              double q);

/* Statistics from the logits, row stats and counts (in double). Allocates in SEQUENCE and BATCH
 * modes: returns 0 if that fails, else 1. */
int ref_stats(const moevk_router_info *info, const ref_call *call, uint32_t T, const void *logits,
              const ref_row_stats *row_stats, const uint32_t *counts_before,
              moevk_route_stats *stats);

/* The losses of a batch and sum_tj grad_weights_tj * w_tj (grad_weights [T, k] or NULL), in
 * double from double logits [T, E], routing them again (selection, f_i and the sequence counts
 * are the forward's own). Returns that total (NAN if out of memory); fills losses (their
 * values) and ids [T, k] where not NULL. */
double ref_loss_forward(const moevk_router_info *info, const ref_call *call,
                        const moevk_loss_info *loss, uint32_t T, const double *logits,
                        const float *bias, const double *grad_weights, moevk_losses *losses,
                        int32_t *ids);
/* The analytic gradient of that total with respect to the logits, [T, E], and (grad_std, NULL:
 * not computed) with respect to each (token, expert)'s Gaussian noise std, [T, E]: through the
 * load loss's z and thresholds and, with noisy_scores, the scores. 0: out of memory. */
int ref_loss_gradient(const moevk_router_info *info, const ref_call *call,
                      const moevk_loss_info *loss, uint32_t T, const double *logits,
                      const float *bias, const double *grad_weights, double *grad,
                      double *grad_std);

/* The layer (moevk_layer). One FFN shape and its weights: gate and up [E, f, d], down [E, d, f]
 * in weight_type, biases [E, f], [E, f], [E, d] f32 (NULL: none); the shared experts are one
 * such FFN with E = 1. */
typedef struct ref_ffn {
    uint32_t hidden_size, intermediate_size; /* d, f (0: no such FFN) */
    moevk_activation activation;
    moevk_dtype weight_type;
    const void *gate, *up, *down;
    const float *gate_bias, *up_bias, *down_bias;
    int separate_down_type; /* non-zero: down is stored as down_type, not weight_type */
    moevk_dtype down_type;
} ref_ffn;
/* One row x [d] through expert `expert`'s FFN, in double: out [d], and the magnitude [d] of
 * the terms behind each output (x_magnitude: the input's). */
void ref_ffn_row(const ref_ffn *ffn, uint32_t expert, const double *x, const double *x_magnitude,
                 double *out, double *magnitude);
typedef struct ref_layer {
    const moevk_router_info *router;
    const float *router_weights; /* [E, d] */
    ref_ffn experts, shared;
    const float *shared_expert_gate; /* [d]; NULL: the shared output is not gated */
} ref_layer;
/* The layer's output [T, d] in double for a route's expert_ids, weights and slots [T, choices]
 * (the kept choices: slot >= 0), and each output's magnitude; NaN rows where the token's
 * logits are not finite. */
void ref_layer_output(const ref_layer *layer, uint32_t T, const void *hidden,
                      const int32_t *expert_ids, const float *weights, const int32_t *slots,
                      double *out, double *magnitude);

/* The layer's backward for a fixed route (reference/layer_backward.c), in double. Each output
 * accumulates (+=) where not NULL; ref_ffn_grads mirrors ref_ffn's weights (gate and its bias
 * only for SwiGLU). */
typedef struct ref_ffn_grads {
    double *gate, *up, *down;                /* [E, f, d], [E, f, d], [E, d, f] */
    double *gate_bias, *up_bias, *down_bias; /* [E, f], [E, f], [E, d] */
} ref_ffn_grads;
typedef struct ref_layer_grads {
    double *hidden;         /* [T, d] dL/dx through the experts and the shared experts */
    double *choice_weights; /* [T, choices] dL/dw_tj = <dL/dout_t, y_e(x_t)>: written, 0
                               for dropped choices and tokens routed nowhere */
    ref_ffn_grads experts, shared;
    double *shared_expert_gate; /* [d] */
} ref_layer_grads;
/* grad_output [T, d] = dL/doutput. Tokens whose logits are not finite get no gradient.
 * Returns 0 if out of memory. */
int ref_layer_backward(const ref_layer *layer, uint32_t T, const void *hidden,
                       const int32_t *expert_ids, const float *weights, const int32_t *slots,
                       const double *grad_output, const ref_layer_grads *grads);
/* One optimizer step on n parameters (moevk_optimizer_info), in f32 as PyTorch's SGD and AdamW
 * compute it: w and (AdamW) the moments m, v are updated in place from the gradient g times
 * grad_scale (the clipping's coefficient, 1 for none). */
void ref_optimizer_step(const moevk_optimizer_info *info, float grad_scale, uint64_t n, float *w,
                        float *m, float *v, const float *g);
/* The clipping's coefficient for a global norm: min(1, max_norm / (norm + 1e-6)), 1 when
 * max_norm is 0. */
float ref_clip_scale(float max_norm, double norm);

/* The router projection's backward given dL/dlogits [T, E]: dL/dW_g [E, d] += dlogits^T x and
 * dL/dx [T, d] += dlogits W_g (either NULL: not computed). */
void ref_router_projection_backward(const moevk_router_info *info, uint32_t T, const void *hidden,
                                    const float *router_weights, const double *grad_logits,
                                    double *grad_router, double *grad_hidden);

#endif
