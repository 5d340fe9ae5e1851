/* The expert-parallel forward's middle (ep_internal.h): the kept rows to their experts' ranks,
 * this rank's experts over what arrives, the results back, in chunks that overlap.
 *
 * Expert l's n rows (every source rank's, in global slot order) split into D chunks: chunk c
 * holds slots [n c / D, n (c + 1) / D), as Tutel splits its capacity. The D exchanges of rows are
 * posted at once; the device runs chunk c while MPI moves the rows of the chunks after it in
 * and the results of those before it out. Each row's output depends on that row alone, so the
 * chunks change no bit. Both sides of each exchange are indexed MPI types: no reordering copy.
 *
 * Layouts: this rank's send (and returned) rows are expert by expert, each expert's in slot
 * order (gather_sends); the received (and expert_out) rows are chunk-major, then expert-major,
 * then in global slot order: each expert's rows in the order one process's layer holds them,
 * so that a backward's sums over them (the weights' gradients) add in the same order. A source
 * rank's rows of one expert are k runs of consecutive slots (one per choice j), so each
 * (chunk, rank, expert) pair has k blocks. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ep_internal.h"

/* Where one chunk of one (source, expert, choice) run lies: `length` rows from row `at_source`
 * of the source's rows and from row `at_expert` of the experts' received rows. */
typedef struct block {
    int length, at_source, at_expert;
} block;

/* The whole exchange's blocks, [chunk][source or destination rank][local expert][choice]. */
typedef struct chunk_plan {
    uint32_t chunks, ranks, local, choices;
    block *to_experts;   /* this rank's rows to rank q's experts (q: destination) */
    block *from_sources; /* rank q's rows to this rank's experts (q: source) */
    uint32_t *counts;    /* [chunk][local expert] rows this rank's experts run in each chunk */
    uint32_t *first;     /* [chunk + 1] each chunk's first received row */
} chunk_plan;

static uint64_t split(uint64_t n, uint32_t c, uint32_t chunks) { return n * c / chunks; }

/* Chunk c of a run of slots [before, before + mine) among an expert's n. */
static block chunk_block(uint64_t n, uint64_t before, uint64_t mine, uint32_t c, uint32_t D,
                         uint64_t expert_first) {
    uint64_t lo = split(n, c, D), hi = split(n, c + 1, D);
    uint64_t from = before > lo ? before : lo, to = before + mine < hi ? before + mine : hi;
    block b = {0, 0, 0};
    if (to <= from) return b;
    b.length = (int)(to - from);
    b.at_source = (int)(from - before);
    b.at_expert = (int)(expert_first + from - lo);
    return b;
}

static void free_chunk_plan(chunk_plan *plan) {
    free(plan->to_experts);
    free(plan->counts);
}

/* The forward's overlap degree: the layer's, or (0) one chunk per MOEVK_EP_AUTO_CHUNK_ROWS
 * rows an expert runs on average over the whole batch, which every rank has agreed on. */
static uint32_t chunks_for(const moevk_ep_layer *layer, const forward_state *s) {
    if (layer->trainable) return 1; /* the backward runs each expert over all its rows at once */
    if (layer->chunks) return layer->chunks;
    uint64_t kept = 0;
    for (size_t i = 0; i < (size_t)layer->ranks * layer->num_experts; ++i) kept += s->kept[i];
    uint64_t D = kept / layer->num_experts / MOEVK_EP_AUTO_CHUNK_ROWS;
    return D < 1 ? 1 : D > MOEVK_EP_AUTO_MAX_CHUNKS ? MOEVK_EP_AUTO_MAX_CHUNKS : (uint32_t)D;
}

static moevk_result plan_chunks(moevk_ep_layer *layer, const forward_state *s, chunk_plan *plan) {
    uint32_t D = chunks_for(layer, s), R = (uint32_t)layer->ranks, L = layer->local_experts;
    uint32_t E = layer->num_experts, k = layer->top_k, me = (uint32_t)layer->rank;
    memset(plan, 0, sizeof *plan);
    plan->chunks = D, plan->ranks = R, plan->local = L, plan->choices = k;
    size_t blocks = (size_t)D * R * L * k;
    plan->to_experts = calloc(2 * blocks, sizeof(block));
    plan->counts = calloc((size_t)D * L + D + 1, sizeof(uint32_t));
    if (!plan->to_experts || !plan->counts) {
        free_chunk_plan(plan);
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the exchange's chunks",
                       layer->rank);
    }
    plan->from_sources = plan->to_experts + blocks;
    plan->first = plan->counts + (size_t)D * L;
#define RUN(j, q, e) (((size_t)(j)*R + (q)) * E + (e))
#define BLOCK(c, q, l, j) ((((size_t)(c)*R + (q)) * L + (l)) * k + (j))
    /* Chunk-major received rows: where (chunk c, local expert l) starts. */
    for (uint32_t c = 0; c < D; ++c) {
        uint32_t row = plan->first[c];
        for (uint32_t l = 0; l < L; ++l) {
            uint32_t e = layer->first_expert + l;
            uint64_t n = s->counts[e]; /* every rank's kept rows */
            uint32_t rows = (uint32_t)(split(n, c + 1, D) - split(n, c, D));
            plan->counts[(size_t)c * L + l] = rows;
            for (uint32_t q = 0; q < R; ++q)
                for (uint32_t j = 0; j < k; ++j)
                    plan->from_sources[BLOCK(c, q, l, j)] = chunk_block(
                        n, s->run_first[RUN(j, q, e)], s->runs[RUN(j, q, e)], c, D, row);
            row += rows;
        }
        plan->first[c + 1] = row;
    }
    /* This rank's rows for every rank's experts (their chunks as those ranks split them); its
     * rows of expert e are its runs one after another. */
    for (uint32_t q = 0; q < R; ++q)
        for (uint32_t l = 0; l < L; ++l) {
            uint32_t e = q * L + l, at = s->send_first[e];
            for (uint32_t j = 0; j < k; ++j) {
                uint32_t mine = s->runs[RUN(j, me, e)];
                for (uint32_t c = 0; c < D; ++c) {
                    block b = chunk_block(s->counts[e], s->run_first[RUN(j, me, e)], mine, c, D, 0);
                    b.at_source += (int)at; /* into the send rows */
                    plan->to_experts[BLOCK(c, q, l, j)] = b;
                }
                at += mine;
            }
        }
#undef RUN
#undef BLOCK
    return MOEVK_SUCCESS;
}

/* One side of one chunk's exchange in one direction: per rank, an indexed type over this
 * side's rows of that rank's blocks (rows of row_bytes), sent or received once. */
typedef struct chunk_types {
    int *counts, *displs; /* [R]: 1 or 0 blocks of the indexed type; displacements 0 */
    MPI_Datatype *types;  /* [R] */
    MPI_Datatype row;
    uint32_t ranks;
} chunk_types;

static void free_types(chunk_types *t) {
    for (uint32_t q = 0; t->types && q < t->ranks; ++q)
        if (t->types[q] != MPI_DATATYPE_NULL && t->types[q] != t->row) MPI_Type_free(&t->types[q]);
    if (t->row != MPI_DATATYPE_NULL) MPI_Type_free(&t->row);
    free(t->counts);
    free(t->types);
}

/* This rank's side of chunk c over blocks [c][q][l]: its send rows (to_experts, at_source) or
 * its experts' received rows (from_sources, at_expert). */
static moevk_result make_types(moevk_ep_layer *layer, const chunk_plan *plan, const block *blocks,
                               int experts_side, uint32_t c, size_t row_bytes, int *lengths,
                               chunk_types *t) {
    uint32_t R = plan->ranks, L = plan->local * plan->choices; /* blocks per rank */
    memset(t, 0, sizeof *t);
    t->ranks = R;
    t->row = MPI_DATATYPE_NULL;
    t->counts = calloc((size_t)R * 2, sizeof(int));
    t->types = calloc(R, sizeof(MPI_Datatype));
    if (!t->counts || !t->types)
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: exchange", layer->rank);
    t->displs = t->counts + R;
    for (uint32_t q = 0; q < R; ++q) t->types[q] = MPI_DATATYPE_NULL;
    if (MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &t->row) != MPI_SUCCESS ||
        MPI_Type_commit(&t->row) != MPI_SUCCESS)
        return ep_fail(layer, MOEVK_ERROR_PEER, "rank %d: MPI_Type_contiguous", layer->rank);
    int *at = lengths + L;
    for (uint32_t q = 0; q < R; ++q) {
        int rows = 0;
        for (uint32_t l = 0; l < L; ++l) {
            const block *b = &blocks[((size_t)c * R + q) * L + l];
            lengths[l] = b->length, at[l] = experts_side ? b->at_expert : b->at_source;
            rows += b->length;
        }
        t->types[q] = t->row;
        t->counts[q] = rows > 0;
        if (rows > 0 && (MPI_Type_indexed((int)L, lengths, at, t->row, &t->types[q]) ||
                         MPI_Type_commit(&t->types[q])))
            return ep_fail(layer, MOEVK_ERROR_PEER, "rank %d: MPI_Type_indexed", layer->rank);
    }
    return MOEVK_SUCCESS;
}

/* Every chunk's types, both directions: [direction (0: rows out, 1: results back)][chunk],
 * this rank's send side (mine) and its experts' side (theirs: the rows from every rank). */
struct ep_exchange {
    chunk_plan plan;
    chunk_types mine[2][MOEVK_EP_MAX_CHUNKS], theirs[2][MOEVK_EP_MAX_CHUNKS];
};

void ep_free_exchange(ep_exchange *x) {
    if (!x) return;
    for (int way = 0; way < 2; ++way)
        for (uint32_t c = 0; c < MOEVK_EP_MAX_CHUNKS; ++c) {
            free_types(&x->mine[way][c]);
            free_types(&x->theirs[way][c]);
        }
    free_chunk_plan(&x->plan);
    free(x);
}

moevk_result ep_plan_exchange(moevk_ep_layer *layer, const forward_state *s, ep_exchange **out) {
    *out = NULL;
    size_t row_bytes = (size_t)layer->hidden_size * 4; /* the wider of the two rows */
    uint64_t largest = (uint64_t)(s->sent > s->received_rows ? s->sent : s->received_rows);
    if (largest * row_bytes > INT_MAX)
        return ep_fail(layer, MOEVK_ERROR_TOO_LARGE,
                       "rank %d: %llu rows of %zu bytes pass MPI's int displacements", layer->rank,
                       (unsigned long long)largest, row_bytes);
    ep_exchange *x = calloc(1, sizeof *x);
    int *lengths = calloc((size_t)layer->local_experts * layer->top_k * 2, sizeof(int));
    if (!x || !lengths) {
        free(x);
        free(lengths);
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: exchange", layer->rank);
    }
    for (int way = 0; way < 2; ++way)
        for (uint32_t c = 0; c < MOEVK_EP_MAX_CHUNKS; ++c)
            x->mine[way][c].row = x->theirs[way][c].row = MPI_DATATYPE_NULL;
    moevk_result r = plan_chunks(layer, s, &x->plan);
    for (int way = 0; way < 2 && r == MOEVK_SUCCESS; ++way) {
        size_t bytes = (size_t)layer->hidden_size * (way == 0 ? layer->hidden_bytes : 4);
        for (uint32_t c = 0; c < x->plan.chunks && r == MOEVK_SUCCESS; ++c) {
            r = make_types(layer, &x->plan, x->plan.to_experts, 0, c, bytes, lengths,
                           &x->mine[way][c]);
            if (r == MOEVK_SUCCESS)
                r = make_types(layer, &x->plan, x->plan.from_sources, 1, c, bytes, lengths,
                               &x->theirs[way][c]);
        }
    }
    free(lengths);
    if (r != MOEVK_SUCCESS) {
        ep_free_exchange(x);
        return r;
    }
    *out = x;
    return MOEVK_SUCCESS;
}

/* Posts chunk c's exchange into layer->pending: the rows to the experts (way 0) or the results
 * back (way 1). */
static moevk_result post_chunk(moevk_ep_layer *layer, forward_state *s, uint32_t c, int way) {
    const chunk_types *mine = &s->exchange->mine[way][c], *theirs = &s->exchange->theirs[way][c];
    /* mine: types[q] are this rank's rows for q; theirs: types[q] are q's rows here. */
    MPI_Request *request = &layer->pending[(way ? MOEVK_EP_MAX_CHUNKS : 0) + c];
    int started = way == 0 ? MPI_Ialltoallw(s->send, mine->counts, mine->displs, mine->types,
                                            s->received, theirs->counts, theirs->displs,
                                            theirs->types, layer->comm, request)
                           : MPI_Ialltoallw(s->expert_out, theirs->counts, theirs->displs,
                                            theirs->types, s->returned, mine->counts, mine->displs,
                                            mine->types, layer->comm, request);
    if (started == MPI_SUCCESS) return MOEVK_SUCCESS;
    layer->broken = 1;
    return ep_fail(layer, MOEVK_ERROR_PEER, "rank %d: MPI_Ialltoallw failed", layer->rank);
}

moevk_result ep_exchange_gradients(moevk_ep_layer *layer, forward_state *s, int to_experts) {
    /* One chunk (chunks_for), and f32 rows both ways: the results' types. */
    const chunk_types *mine = &s->exchange->mine[1][0], *theirs = &s->exchange->theirs[1][0];
    MPI_Request *request = &layer->pending[0];
    int started = to_experts ? MPI_Ialltoallw(s->returned, mine->counts, mine->displs, mine->types,
                                              s->expert_out, theirs->counts, theirs->displs,
                                              theirs->types, layer->comm, request)
                             : MPI_Ialltoallw(s->grad_rows, theirs->counts, theirs->displs,
                                              theirs->types, s->returned, mine->counts,
                                              mine->displs, mine->types, layer->comm, request);
    return ep_wait(layer, started, request,
                   to_experts ? "sending the rows' gradients to the experts' ranks"
                              : "returning the gradients of the experts' rows");
}

/* Bytes of the forward's exchanges: to other ranks, from them, and to itself. */
static void count_bytes(moevk_ep_layer *layer, const forward_state *s, moevk_ep_timings *t) {
    uint32_t E = layer->num_experts, L = layer->local_experts, me = (uint32_t)layer->rank;
    uint64_t both = (uint64_t)layer->hidden_size * (layer->hidden_bytes + 4);
    for (uint32_t q = 0; q < (uint32_t)layer->ranks; ++q) {
        uint64_t out = 0, in = 0;
        for (uint32_t l = 0; l < L; ++l) {
            out += s->kept[(size_t)me * E + q * L + l];
            in += s->kept[(size_t)q * E + me * L + l];
        }
        if (q == me)
            t->bytes_to_self = out * both;
        else
            t->bytes_to_others += out * both, t->bytes_from_others += in * both;
    }
}

/* Runs chunk c on the device while MPI moves the others on. */
static moevk_result run_chunk(moevk_ep_layer *layer, forward_state *s, const chunk_plan *plan,
                              uint32_t c) {
    uint32_t first = plan->first[c], L = plan->local;
    if (plan->first[c + 1] == first) return MOEVK_SUCCESS;
    size_t d = layer->hidden_size;
    double start = MPI_Wtime();
    moevk_result r = moevk_parts_experts_submit(
        layer->experts, (const char *)s->received + first * d * layer->hidden_bytes,
        plan->counts + (size_t)c * L, s->total_tokens, s->expert_out + first * d);
    if (r == MOEVK_SUCCESS) r = MOEVK_NOT_READY;
    while (r == MOEVK_NOT_READY) {
        r = moevk_parts_wait(layer->experts, 0);
        if (r != MOEVK_NOT_READY) break;
        moevk_result moved = ep_progress(layer);
        if (moved != MOEVK_SUCCESS) {
            moevk_parts_wait(layer->experts, UINT64_MAX); /* its memory is the forward's */
            return moved;
        }
        ep_pause();
    }
    layer->timings.experts_seconds += MPI_Wtime() - start;
    return r;
}

moevk_result ep_exchange_and_run(moevk_ep_layer *layer, forward_state *s) {
    const chunk_plan *plan = &s->exchange->plan;
    moevk_ep_timings *t = &layer->timings;
    t->chunks = plan->chunks;
    count_bytes(layer, s, t);
    double start = MPI_Wtime();
    /* A failure of MPI breaks the layer at once (every rank will time out or fail); this rank's
     * experts failing (`local`) leaves it in every exchange, for the caller to agree on. */
    moevk_result r = MOEVK_SUCCESS, local = MOEVK_SUCCESS;
    for (uint32_t c = 0; c < plan->chunks && r == MOEVK_SUCCESS; ++c)
        r = post_chunk(layer, s, c, 0);
    for (uint32_t c = 0; c < plan->chunks && r == MOEVK_SUCCESS; ++c) {
        double waited = MPI_Wtime();
        r = ep_wait(layer, MPI_SUCCESS, &layer->pending[c], "sending rows to the experts' ranks");
        t->exposed_seconds += MPI_Wtime() - waited;
        if (r == MOEVK_SUCCESS && local == MOEVK_SUCCESS) {
            local = run_chunk(layer, s, plan, c);
            if (layer->broken) r = local;
        }
        if (r == MOEVK_SUCCESS) r = post_chunk(layer, s, c, 1);
    }
    for (uint32_t c = 0; c < plan->chunks && r == MOEVK_SUCCESS; ++c) {
        double waited = MPI_Wtime();
        r = ep_wait(layer, MPI_SUCCESS, &layer->pending[MOEVK_EP_MAX_CHUNKS + c],
                    "returning the experts' outputs");
        t->exposed_seconds += MPI_Wtime() - waited;
    }
    t->exchange_seconds = MPI_Wtime() - start;
    return r != MOEVK_SUCCESS ? r : local;
}
