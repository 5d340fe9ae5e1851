/* A layer's forward in two halves on separate objects, for expert parallelism (libmoevk_mpi,
 * mpi/): a HOME layer routes a rank's tokens and combines, an EXPERTS layer runs a rank's
 * experts over rows from every rank. Not installed and not part of moevk's API: libmoevk_mpi
 * is built from the same tree as the libmoevk it calls, and nothing else may call these. */
#ifndef MOEVK_PARTS_H
#define MOEVK_PARTS_H

#include "moevk.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moevk_parts_role {
    /* The layer's router (its options, but DROPLESS with no padding: the decisions on drops
     * are the caller's), router projection, shared experts and combine; no routed experts. */
    MOEVK_PARTS_HOME = 1,
    /* info's FFN shape for info->router->num_experts experts (a rank's share), at most
     * info->router->max_tokens rows at a time (its other routing options are not used); no
     * shared experts. */
    MOEVK_PARTS_EXPERTS = 2,
} moevk_parts_role;

/* The capacity C that one process's router made with info (the caller's whole moevk_router_info)
 * gives a call like input over num_tokens tokens (all ranks' together); UINT32_MAX where
 * dropless. */
MOEVK_API uint32_t moevk_parts_capacity(const moevk_router_info *info,
                                        const moevk_route_input *input, uint32_t num_tokens);

/* A layer for one role; weights through moevk_layer_set_weights (a HOME layer has no routed
 * experts' weights; an EXPERTS layer's experts are numbered from 0). */
MOEVK_API moevk_result moevk_parts_layer_create(moevk_context *context,
                                                const moevk_layer_info *info, moevk_parts_role role,
                                                moevk_layer **out);

/* HOME: the first half of moevk_layer_forward (router projection, route, shared experts), its
 * route outputs and router_logits written as the forward writes them (output->output is not
 * read). ffn_tokens (> 0) is the T whose size picks the FFN's decode form: the global T, so
 * that the shared experts compute what one process's layer computes. probability_sums [E]
 * and scalars [3] (may be NULL) get the route's statistics' sums over its valid rows: each
 * expert's routing probability, and the logsumexp, its square and the entropy. Waits. */
MOEVK_API moevk_result moevk_parts_route(moevk_layer *layer, const moevk_route_input *input,
                                         const moevk_layer_output *output, uint32_t ffn_tokens,
                                         float *probability_sums, float *scalars);

/* HOME: the second half: output[t] (host, [T, d] hidden_type) = sum over j ascending of
 * weights[t, j] * expert_out[rows[t, j]] + the shared experts' output, for the last
 * moevk_parts_route's T tokens; rows [T, k] (-1: the choice adds nothing), expert_out
 * [expert_rows, d] f32 (host). Waits. */
MOEVK_API moevk_result moevk_parts_combine(moevk_layer *layer, const int32_t *rows,
                                           const float *expert_out, uint32_t expert_rows,
                                           void *output);

/* EXPERTS: rows [N, d] (host, hidden_type) grouped by expert, counts[e] rows of expert e after
 * expert e - 1's, N = the sum of counts (at most max_tokens), through each one's FFN into
 * expert_out [N, d] f32 (host), written by moevk_parts_wait. Each row's output depends on that
 * row alone (and ffn_tokens), never on the others in the call: a batch split into calls gives
 * the same bits. ffn_tokens as moevk_parts_route takes it. Submits and returns (N = 0: nothing
 * to wait for); rows may be reused at once. */
MOEVK_API moevk_result moevk_parts_experts_submit(moevk_layer *layer, const void *rows,
                                                  const uint32_t *counts, uint32_t ffn_tokens,
                                                  float *expert_out);

/* Waits up to timeout_ns for the last moevk_parts_experts_submit (MOEVK_NOT_READY: still
 * running; SUCCESS: its expert_out written, or nothing was pending). */
MOEVK_API moevk_result moevk_parts_wait(moevk_layer *layer, uint64_t timeout_ns);

/* The backward of a trainable layer's halves: moevk_layer_backward's steps, in its order, over
 * the last forward. Each waits.
 *
 * HOME, first: from dL/doutput grad_output [T, d] f32, dL/dweights grad_weights [T, k] (may be
 * NULL) and each row the last moevk_parts_combine took its share of dL/doutput,
 * grad_expert_rows [expert_rows, d] f32 (all host); batch (may be NULL: no losses) gives the
 * losses and what their gradient needs of the whole batch. */
typedef struct moevk_parts_batch {
    /* the losses; NULL: none */
    const moevk_loss_info *losses;
    const uint32_t *counts_before; /* [E] the whole batch's, before drops */
    uint32_t valid_rows;           /* the whole batch's rows neither non-finite nor masked */
    /* The sequence loss: the whole batch's sequences (this half's T a multiple of the
     * sequence length: its sequences are whole), and where this half's sequences' totals go
     * ([T / S] f32, the terms the loss's value sums over the batch; NULL: not asked). */
    uint32_t sequences;
    float *sequence_totals;
    /* The importance and load losses: the whole batch's sums [2E]
     * (moevk_parts_balance_totals). */
    const float *balance_totals;
} moevk_parts_batch;

/* HOME, after its route, for the load loss (losses->load_coef != 0, the route's Gaussian
 * noise): terms [T, E] f32, each of its tokens' experts' term Phi((clean key - threshold) /
 * std) as one process's losses stage adds it (0 for a row the route left out). Waits. */
MOEVK_API moevk_result moevk_parts_load_terms(moevk_layer *layer, const moevk_loss_info *losses,
                                              float *terms);

/* HOME: the importance and load losses' sums over a whole batch of num_tokens tokens (every
 * half's, in the batch's order) into totals [2E]: the combine weights of each expert's choices,
 * then each expert's load terms (load_terms [num_tokens, E], moevk_parts_load_terms; NULL: the
 * load's totals 0), added in the order and grouping one process's losses stage adds them over
 * the same batch, so that the same bits (on a device that keeps subnormal sums; one that
 * flushes them may differ where a sum is below 2^-126); values [2] (may be NULL): the losses,
 * cv2 of each, as one process's (the load's 0 without terms). expert_ids and weights
 * [num_tokens, k] as the halves' routes wrote them (-1: no choice). */
MOEVK_API moevk_result moevk_parts_balance_totals(moevk_layer *layer, uint32_t num_tokens,
                                                  const int32_t *expert_ids, const float *weights,
                                                  const float *load_terms, float *totals,
                                                  double *values);

MOEVK_API moevk_result moevk_parts_home_backward_combine(moevk_layer *layer,
                                                         const float *grad_output,
                                                         const moevk_parts_batch *batch,
                                                         float *grad_weights,
                                                         float *grad_expert_rows);

/* EXPERTS: the routed experts' backward over the rows of the last moevk_parts_experts_submit
 * (the whole forward in one call: its kept pre-activations): grad_expert_out [N, d] f32 in,
 * dL/d(rows) grad_rows [N, d] f32 out; the experts' weights' gradients added to the layer's
 * (zeroed first unless accumulate), each summed over the expert's rows in their order. */
MOEVK_API moevk_result moevk_parts_experts_backward(moevk_layer *layer,
                                                    const float *grad_expert_out, int accumulate,
                                                    float *grad_rows);

/* HOME, last: from the rows' gradients grad_rows [expert_rows, d] f32 (in moevk_parts_combine's
 * rows), dL/dx grad_hidden [T, d] f32 (may be NULL), and the router's and shared experts' gradients
 * added to the layer's (zeroed first unless accumulate). */
MOEVK_API moevk_result moevk_parts_home_backward_finish(moevk_layer *layer, const float *grad_rows,
                                                        int accumulate, float *grad_hidden);

/* The optimizer step over ranks: whether the half has a weight; a weight's gradient written
 * (f32 host, as moevk_layer_read_gradient reads it); the half's gradients' sum of squares
 * (moevk_layer_optimizer_step's, before its square root; the master weights widened first
 * where the stored ones changed); the SGD or AdamW update with the gradients scaled by
 * grad_scale; and the clipping scale of a norm (torch.nn.utils.clip_grad_norm_'s). Each waits. */
MOEVK_API int moevk_parts_has_weight(moevk_layer *layer, moevk_layer_weight which);
MOEVK_API moevk_result moevk_parts_write_gradient(moevk_layer *layer, moevk_layer_weight which,
                                                  uint32_t first, uint32_t count,
                                                  const float *values);
MOEVK_API moevk_result moevk_parts_gradient_squares(moevk_layer *layer,
                                                    const moevk_optimizer_info *info, double *sum);
MOEVK_API moevk_result moevk_parts_optimizer_update(moevk_layer *layer,
                                                    const moevk_optimizer_info *info,
                                                    float grad_scale);
MOEVK_API float moevk_parts_clip_scale(float max_grad_norm, double norm);

/* The bytes moevk_layer_read_gradient writes for these arguments (f32 elements), or its
 * INVALID_ARGUMENT for a weight or range the layer does not have. */
MOEVK_API moevk_result moevk_parts_gradient_bytes(moevk_layer *layer, moevk_layer_weight which,
                                                  uint32_t first, uint32_t count, uint64_t *bytes);

/* The route's statistics as one process's route computes them from its counts and sums:
 * expert_info counts before drops [E], kept [E] and offsets [E + 1]; capacity (UINT32_MAX:
 * dropless); sums over the valid rows, [E] of each expert's probability, then of the logsumexp,
 * its square and the entropy. The other fields are the caller's. */
MOEVK_API void moevk_parts_stats_from_sums(moevk_route_stats *stats, uint32_t num_experts,
                                           const uint32_t *expert_info, uint32_t capacity,
                                           uint32_t valid_rows, const double *sums);

/* Records result and message (a line, no newline) as the context's last error, for
 * moevk_context_last_error; returns result. */
MOEVK_API moevk_result moevk_parts_fail(moevk_context *context, moevk_result result,
                                        const char *message);

#ifdef __cplusplus
}
#endif

#endif
