/* The expert-parallel layer's parts (moevk_mpi.h): its state, and the exchange helpers that
 * keep every collective call bounded by the layer's timeout and every error agreed. */
#ifndef MOEVK_EP_INTERNAL_H
#define MOEVK_EP_INTERNAL_H

#include <stddef.h>

#include "moevk_mpi.h"
#include "moevk_parts.h"

/* The exchanges a forward may have in flight: each chunk's rows out and its results back. */
enum { EP_PENDING = 2 * MOEVK_EP_MAX_CHUNKS };

/* A forward's exchange: its chunks and MPI types (ep_pipeline.c). */
typedef struct ep_exchange ep_exchange;

/* One forward's host memory. */
typedef struct forward_state {
    uint32_t T, total_tokens, capacity;
    int32_t *ids;     /* [T, k] this rank's choices */
    float *weights;   /* [T, k] */
    int32_t *slots;   /* [T, k] global slots, -1 where dropped */
    int32_t *rows;    /* [T, k] the row of the returned results, -1 where dropped */
    uint32_t *tables; /* [R][1 + TABLE words]: every rank's counts and sums */
    uint32_t *kept;   /* [R][E] rows rank q keeps for expert e */
    /* [k][R][E]: rank q's kept choices j of expert e, and the global slot of the first: a run
     * of consecutive slots (one process's order is choice-major, then token order). */
    uint32_t *runs, *run_first;
    uint32_t *counts_before, *counts; /* [E] the whole batch's */
    uint32_t *offsets;    /* [E + 1] each expert's first row, padded as one process pads */
    uint32_t *send_first; /* [E + 1] each expert's first row in what this rank sends */
    void *send;           /* [sent, d] hidden_type: this rank's kept rows, expert by expert */
    float *returned;      /* [sent, d] f32: their experts' outputs */
    /* [N, d] hidden_type: rows for this rank's experts, chunk-major, then expert-major, each
     * expert's rows in global slot order, as one process's layer holds them (ep_pipeline.c) */
    void *received;
    float *expert_out; /* [N, d] f32, as received */
    float *grad_rows;  /* [N, d] f32: a backward's dL/d(received rows) (ep_backward.c) */
    uint32_t sent, received_rows;
    moevk_route_stats stats; /* the home route's (this rank's tokens) */
    ep_exchange *exchange;
} forward_state;

struct moevk_ep_layer {
    moevk_context *context;
    MPI_Comm comm; /* the caller's, duplicated, with MPI_ERRORS_RETURN */
    int rank, ranks;
    double timeout_seconds;
    int broken;               /* an exchange timed out or failed in MPI: only destroy is taken */
    moevk_router_info router; /* the caller's whole router (its capacity options) */
    moevk_layer *home;        /* routes this rank's tokens, runs the shared experts, combines */
    moevk_layer *experts;     /* this rank's experts, over the rows every rank sends */
    uint32_t num_experts, top_k, hidden_size, hidden_bytes;
    uint32_t first_expert, local_experts; /* this rank's experts */
    uint32_t max_tokens;                  /* this rank's largest T */
    uint32_t chunks;                      /* the exchange's overlap degree; 0: automatic */
    int trainable;      /* the forward keeps its state for a backward, and exchanges in one chunk */
    forward_state last; /* a trainable layer's last successful forward (has_last) */
    int has_last;
    /* The forward's exchanges in flight, each chunk's rows out and its results back ([2][chunk]),
     * MPI_REQUEST_NULL once done. */
    MPI_Request pending[EP_PENDING];
    moevk_ep_timings timings; /* the last forward's */
    /* After a timeout: the request MPI still holds (beside those in `pending`), and the memory
     * they may still write (freed at destroy if they have ended by then, else left to MPI,
     * which may complete them). */
    MPI_Request abandoned;
    void *abandoned_memory[32];
    int abandoned_count;
    char message[512]; /* a failing rank's message, broadcast (the layer outlives a timeout) */
};

/* The chunks and types of s's exchange, from every rank's kept rows (this rank's part of the
 * plan: its failure is agreed before any exchange). */
moevk_result ep_plan_exchange(moevk_ep_layer *layer, const forward_state *s, ep_exchange **out);
void ep_free_exchange(ep_exchange *exchange); /* NULL: no-op */

/* Frees a forward's memory (that a timed-out request may still write goes to the layer). */
void ep_free_forward(moevk_ep_layer *layer, forward_state *s);

/* The whole batch's statistics of forward s, the same on every rank (unrouted_tokens 0). */
void ep_batch_stats(moevk_ep_layer *layer, const forward_state *s, moevk_route_stats *stats);

/* A backward's exchange of one chunk-less forward's rows' gradients: to_experts, s->returned
 * (dL/d(expert output) of the rows this rank sent) into s->expert_out on the experts' ranks;
 * else s->grad_rows back into s->returned. Waits (the layer's timeout). */
moevk_result ep_exchange_gradients(moevk_ep_layer *layer, forward_state *s, int to_experts);

/* The rows' exchange to this rank's experts, the experts over what arrives, and their results'
 * exchange back into s->returned, in layer->chunks chunks that overlap (the device runs one
 * while MPI moves others). A rank whose experts fail still takes part in every exchange: the
 * result is its own, for the caller to agree on. Fills the timings' exchange fields. */
moevk_result ep_exchange_and_run(moevk_ep_layer *layer, forward_state *s);

/* The importance and load losses' sums totals [2E] over the whole batch of forward s, and their
 * values [2]: every rank's choices (and with `load`, the caller's losses asking for it, its
 * tokens' load terms) gathered (tokens [R]: each rank's T) and added as one process adds them,
 * the same bits on every rank. Collective; its failure is every rank's. */
moevk_result ep_balance_totals(moevk_ep_layer *layer, const forward_state *s,
                               const uint32_t *tokens, const moevk_loss_info *load, float *totals,
                               double *values);
/* Hands memory a timed-out request may still write to the layer (a no-op for NULL, or when
 * nothing timed out: then the caller frees it). Returns 1 when taken. */
int ep_abandon(moevk_ep_layer *layer, void *memory);

/* Whether a timed-out request may still be in MPI's hands. */
int ep_requests_outstanding(moevk_ep_layer *layer);

/* Records a formatted message as the context's last error; returns result. */
moevk_result ep_fail(moevk_ep_layer *layer, moevk_result result, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Every rank's step: gathers each rank's local result and `words` words of table (NULL where 0)
 * into gathered [ranks][1 + words] (the result first); when some rank failed, every rank gets
 * the first failing rank's result and message ("rank q: ...") and returns it. Waits at most the
 * layer's timeout (MOEVK_ERROR_PEER after it). `what` names the step in messages. */
moevk_result ep_agree(moevk_ep_layer *layer, moevk_result local, const uint32_t *table,
                      size_t words, uint32_t *gathered, const char *what);

/* ep_agree of the result alone (no table), its memory its own. */
moevk_result ep_agree_result(moevk_ep_layer *layer, moevk_result local, const char *what);

/* Waits for a nonblocking MPI call up to the layer's timeout (PEER after it, or when MPI
 * fails: the layer is then broken), driving the layer's pending requests meanwhile. */
moevk_result ep_wait(moevk_ep_layer *layer, int mpi_result, MPI_Request *request, const char *what);

/* Lets MPI move the layer's pending requests on (PEER when one fails: the layer is broken). */
moevk_result ep_progress(moevk_ep_layer *layer);

/* Every rank's `per_token` values of each of its tokens (tokens [R]: each rank's T; mine this
 * rank's) gathered into all [batch, per_token] in rank order, the batch's count within MPI's int
 * (the caller's check). counts and displacements [R] are scratch. Waits (the layer's timeout). */
moevk_result ep_gather_rows(moevk_ep_layer *layer, const uint32_t *tokens, uint32_t per_token,
                            const void *mine, MPI_Datatype type, void *all, int *counts,
                            int *displacements, const char *what);
/* Every rank's choices and weights [batch, k] of forward s, gathered as ep_gather_rows. */
moevk_result ep_gather_choices(moevk_ep_layer *layer, const forward_state *s,
                               const uint32_t *tokens, int32_t *ids, float *weights, int *counts,
                               int *displacements);
/* The SCORE drop policy's placement of forward s (place_choices' outputs: every rank's kept
 * rows, runs and counts, this rank's slots): every rank's choices and weights gathered, each
 * expert keeping its C of highest weight as one process does. Collective (tokens [R]: each
 * rank's T); its failure is every rank's. */
moevk_result ep_place_by_score(moevk_ep_layer *layer, forward_state *s, const uint32_t *tokens);
/* The half that holds a weight's experts [*first, *first + count) (global indices: a routed
 * expert must be this rank's), and *first there. */
moevk_result ep_weight_half(moevk_ep_layer *layer, moevk_layer_weight which, uint32_t *first,
                            uint32_t count, moevk_layer **half);
/* The router's or shared experts' gradient (first, count as moevk_layer_read_gradient takes
 * them): every rank's part gathered, summed in rank order into destination. Collective. */
moevk_result ep_summed_gradient(moevk_ep_layer *layer, moevk_layer_weight which, uint32_t first,
                                uint32_t count, float *destination);
/* Gives the other ranks and this rank's MPI progress the core a moment. */
void ep_pause(void);

#endif
