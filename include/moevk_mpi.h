/* libmoevk_mpi: an expert-parallel MoE layer over an MPI communicator (moevk 0.7).
 *
 * R ranks, each with its own moevk context (its own Vulkan device, or several ranks on one),
 * hold E / R experts each: rank r owns experts [r * E / R, (r + 1) * E / R). Every rank routes
 * its own tokens with the same router, the rows each expert keeps travel to the expert's rank
 * and back (MPI_Ialltoallw through host memory: no MPI moves Vulkan memory), and every rank
 * combines its own tokens. The result is what one process would compute for all ranks' tokens
 * one after another (rank 0's first): every output bit for bit, the statistics' float sums
 * within the rounding of a different order of summation (see the README, "Expert
 * parallelism over MPI").
 *
 * Capacity is global: C comes from all ranks' tokens together (the factor times T_total * k /
 * E), and an expert keeps the same choices one process would (k-major, then token order over
 * the ranks in rank order). DROPLESS keeps everything.
 *
 * Collective calls (create, forward, backward, some gradient reads) must be made by every rank of
 * the communicator in the same order. A rank's error is every rank's: each returns the first
 * failing rank's result and its message (moevk_context_last_error: "rank q: ..."); a rank that does
 * not answer within the timeout makes the others return MOEVK_ERROR_PEER, and the layer then only
 * takes destroy. */
#ifndef MOEVK_MPI_H
#define MOEVK_MPI_H

#include <mpi.h>

#include "moevk.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moevk_ep_layer moevk_ep_layer;

typedef struct moevk_ep_layer_info {
    uint32_t struct_size; /* see "Structs that grow" */
    /* The whole layer: E (all ranks' experts, a multiple of R), k, d and every option as one
     * process's moevk_layer takes them; router->max_tokens is this rank's largest T. The same on
     * every rank (but max_tokens and host_weights), or create fails on every rank naming the
     * first field that differs. Not kept. */
    const moevk_layer_info *layer;
    MPI_Comm comm;          /* duplicated: the layer's exchanges never meet the caller's */
    double timeout_seconds; /* the longest a rank waits for the others; 0: 600 s */
    /* The overlap degree (Tutel's): each expert's rows travel and run in this many chunks, the
     * device computing one while MPI moves the next rows in and the last results out. 1: no
     * overlap; at most MOEVK_EP_MAX_CHUNKS. 0: chosen at every forward from the whole batch's
     * kept rows: one chunk for each MOEVK_EP_AUTO_CHUNK_ROWS rows an expert runs on average, 1
     * to MOEVK_EP_AUTO_MAX_CHUNKS (a chunk pays for whole row tiles, so small chunks cost the
     * device more than their overlap saves). The same on every rank. The outputs do not depend
     * on it. Since moevk 0.7. */
    uint32_t exchange_chunks;
    uint32_t reserved; /* must be zero */
} moevk_ep_layer_info;

enum { MOEVK_EP_MAX_CHUNKS = 16, MOEVK_EP_AUTO_CHUNK_ROWS = 512, MOEVK_EP_AUTO_MAX_CHUNKS = 4 };

static inline void moevk_ep_layer_info_init(moevk_ep_layer_info *info) { MOEVK_INIT_STRUCT_(info); }

/* Collective. Errors: INVALID_ARGUMENT (a bad layer, E not a multiple of R, ranks that
 * disagree), UNSUPPORTED (what the expert-parallel layer does not do yet: the BATCH,
 * EXPERT_CHOICE and SINKHORN modes, whose decisions need the whole batch), PEER, and those of
 * moevk_layer_create on any rank. */
MOEVK_API moevk_result moevk_ep_layer_create(moevk_context *context,
                                             const moevk_ep_layer_info *info, moevk_ep_layer **out);
/* Not collective: frees this rank's part (waits for its device). NULL: no-op. */
MOEVK_API void moevk_ep_layer_destroy(moevk_ep_layer *layer);

/* This rank, the ranks, and the experts this rank owns: [*first, *first + *count). */
MOEVK_API moevk_result moevk_ep_layer_experts(const moevk_ep_layer *layer, uint32_t *rank,
                                              uint32_t *ranks, uint32_t *first, uint32_t *count);

/* Not collective: moevk_layer_set_weights with global expert indices. A routed expert's weights
 * (GATE .. DOWN_BIAS) are set on its own rank only: [first, first + count) must lie in this
 * rank's experts. The router's and the shared experts' weights are set on every rank, the same
 * everywhere (the layer does not compare them). */
MOEVK_API moevk_result moevk_ep_layer_set_weights(moevk_ep_layer *layer, moevk_layer_weight which,
                                                  uint32_t first, uint32_t count,
                                                  moevk_tensor source);

/* Collective: moevk_layer_forward of this rank's input->num_tokens tokens (0 is fine), host
 * tensors. Written as one process's forward of all ranks' tokens writes them: output [T, d] and
 * router_logits for this rank's tokens; the route's expert_ids, weights, slots (the global slot,
 * -1 where dropped) and token_scores for this rank's tokens; counts, counts_before and offsets
 * (DROPLESS) for the whole batch; stats of the whole batch, the same on every rank. Not taken:
 * route->dispatched, a profile or a drift profile (INVALID_ARGUMENT). The SEQUENCE mode needs
 * each rank's T a multiple of sequence_length (each sequence on one rank; the last rank's may
 * end short, as one process's last sequence may). Noise in training is
 * drawn for the batch's rows: this rank's first row is input->noise_row_offset plus the tokens
 * of the ranks before it, so the choices are one process's bit for bit. */
MOEVK_API moevk_result moevk_ep_layer_forward(moevk_ep_layer *layer, const moevk_route_input *input,
                                              const moevk_layer_output *output);

/* Collective: moevk_layer_backward of the last forward (a trainable layer's; waits), host
 * tensors: grad_output [T, d] for this rank's tokens in, grad_hidden and grad_weights for them
 * out (NONE: not taken), bit for bit what one process's backward of all ranks' tokens writes
 * for them. The routed experts' weights' gradients are made on each expert's own rank, bit for
 * bit one process's (each expert's rows in one process's order); the router's and shared
 * experts' are this rank's tokens' part, summed over the ranks when read. A trainable layer
 * exchanges in one chunk (its backward runs each expert over all its rows at once, as one
 * process does): exchange_chunks is not used. losses: every balancing loss (its gradient each
 * token's, over the whole batch's counts, valid rows, sequences and importance and load sums:
 * dL/dx stays bit for bit; the sequence loss needs each rank's T a multiple of
 * sequence_length, the load loss the router's Gaussian noise; the importance, load and sequence
 * losses need the same settings on every rank: whether each is asked for, and the sequence
 * length); loss_values from the batch's statistics, the same on every rank (the importance,
 * load and sequence losses one process's bit for bit: every rank's choices, weights and load
 * terms, or sequences' totals, gathered and added in one process's order). */
MOEVK_API moevk_result moevk_ep_layer_backward(moevk_ep_layer *layer,
                                               const moevk_layer_backward_info *info);

/* moevk_layer_read_gradient with global expert indices. A routed expert's (GATE .. DOWN_BIAS):
 * not collective, on its own rank only ([first, first + count) in this rank's experts), into
 * HOST or BUFFER. The router's and the shared experts': collective, into host memory, every
 * rank's part summed in rank order (((rank 0 + rank 1) + rank 2) ...), the same on every rank:
 * one process's sum over all tokens within the rounding of that other order. */
MOEVK_API moevk_result moevk_ep_layer_read_gradient(moevk_ep_layer *layer, moevk_layer_weight which,
                                                    uint32_t first, uint32_t count,
                                                    moevk_tensor destination);

/* Not collective: moevk_layer_zero_gradients of this rank's part (waits). */
MOEVK_API moevk_result moevk_ep_layer_zero_gradients(moevk_ep_layer *layer);

/* Collective: moevk_layer_optimizer_step over the whole layer. Each rank updates its routed
 * experts from their gradients (one process's bit for bit: so are the updated weights, unless
 * clipping scales them), and every rank the router and shared experts from their gradient
 * summed over the ranks in rank order (moevk_ep_layer_read_gradient's: the same weights on
 * every rank, one process's within that sum's rounding). The gradients the ranks hold are left
 * as they were. grad_norm (may be NULL) and max_grad_norm's clipping use the global norm: the
 * summed router and shared gradients' squares plus each rank's experts', added in rank order
 * (one process's within rounding). info: the whole struct (moevk_optimizer_info_init), the
 * same on every rank. Errors: as moevk_layer_optimizer_step's, on every rank; PEER. */
MOEVK_API moevk_result moevk_ep_layer_optimizer_step(moevk_ep_layer *layer,
                                                     const moevk_optimizer_info *info,
                                                     double *grad_norm);

/* Not collective: moevk_layer_read_weights with global expert indices: a routed expert's on its
 * own rank only, the router's and shared experts' on every rank. */
MOEVK_API moevk_result moevk_ep_layer_read_weights(moevk_ep_layer *layer, moevk_layer_weight which,
                                                   uint32_t first, uint32_t count,
                                                   moevk_tensor destination);

/* Where the last forward's time went on this rank, and the bytes it exchanged. */
typedef struct moevk_ep_timings {
    uint32_t struct_size;   /* see "Structs that grow" */
    uint32_t chunks;        /* its overlap degree (the one chosen, where automatic) */
    double forward_seconds; /* the whole call */
    /* Routing this rank's tokens (router projection, route, shared experts) and agreeing on
     * every rank's counts. */
    double route_seconds;
    /* From posting the rows' exchange until the last result came back: what an exchange
     * without overlap adds to the experts' time. */
    double exchange_seconds;
    /* Of exchange_seconds: the time this rank's experts ran on the device (submit to seen
     * done), and the time the host waited on MPI with none of them running. */
    double experts_seconds, exposed_seconds;
    double combine_seconds;
    /* Bytes this rank's two exchanges (rows out, results back) sent to and received from the
     * other ranks, and those it sent itself (copied by MPI, not over a link). */
    uint64_t bytes_to_others, bytes_from_others, bytes_to_self;
} moevk_ep_timings;

static inline void moevk_ep_timings_init(moevk_ep_timings *timings) { MOEVK_INIT_STRUCT_(timings); }

/* Not collective: the last successful forward's timings on this rank (zeros before one). */
MOEVK_API moevk_result moevk_ep_layer_timings(const moevk_ep_layer *layer,
                                              moevk_ep_timings *timings);

#ifdef __cplusplus
}
#endif

#endif
