/* The expert-parallel layer's collective steps: nonblocking MPI calls polled up to a deadline
 * (a rank that died or hangs must not hang the others), and errors agreed by every rank. */
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ep_internal.h"

enum { MESSAGE_BYTES = sizeof((moevk_ep_layer *)0)->message };

moevk_result ep_fail(moevk_ep_layer *layer, moevk_result result, const char *format, ...) {
    char message[MESSAGE_BYTES];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    return moevk_parts_fail(layer->context, result, message);
}

/* Lets the other ranks (and this rank's MPI progress) run while a call is pending: ranks often
 * outnumber the cores they share. */
void ep_pause(void) {
    struct timespec pause = {0, 50000};
    nanosleep(&pause, NULL);
}

/* SUCCESS for MPI_SUCCESS; else the layer is broken and the result PEER, with MPI's words. */
static moevk_result mpi_failed(moevk_ep_layer *layer, int mpi_result, const char *what) {
    if (mpi_result == MPI_SUCCESS) return MOEVK_SUCCESS;
    layer->broken = 1;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(mpi_result, text, &length) != MPI_SUCCESS) length = 0;
    text[length] = '\0';
    return ep_fail(layer, MOEVK_ERROR_PEER, "rank %d: MPI failed (%s): %s", layer->rank, what,
                   text);
}

moevk_result ep_wait(moevk_ep_layer *layer, int mpi_result, MPI_Request *request,
                     const char *what) {
    if (layer->broken)
        return ep_fail(layer, MOEVK_ERROR_PEER, "rank %d: an earlier exchange failed", layer->rank);
    int done = 0;
    double deadline = MPI_Wtime() + layer->timeout_seconds;
    while (mpi_result == MPI_SUCCESS) {
        mpi_result = MPI_Test(request, &done, MPI_STATUS_IGNORE);
        if (mpi_result != MPI_SUCCESS || done) break;
        if (MPI_Wtime() > deadline) {
            /* The request stays pending: its buffers go to the layer (ep_abandon). One of
             * `pending` stays there. */
            layer->broken = 1;
            if (request < layer->pending || request >= layer->pending + EP_PENDING)
                layer->abandoned = *request;
            return ep_fail(layer, MOEVK_ERROR_PEER,
                           "rank %d: no answer from the other ranks within %g s (%s)", layer->rank,
                           layer->timeout_seconds, what);
        }
        ep_pause();
    }
    return mpi_failed(layer, mpi_result, what);
}

moevk_result ep_progress(moevk_ep_layer *layer) {
    int done = 0, indices[EP_PENDING];
    int result = MPI_Testsome(EP_PENDING, layer->pending, &done, indices, MPI_STATUSES_IGNORE);
    return mpi_failed(layer, result, "moving the exchanges on");
}

int ep_requests_outstanding(moevk_ep_layer *layer) {
    int outstanding = 0;
    for (int i = 0; i < EP_PENDING; ++i) outstanding |= layer->pending[i] != MPI_REQUEST_NULL;
    return outstanding || layer->abandoned != MPI_REQUEST_NULL;
}

int ep_abandon(moevk_ep_layer *layer, void *memory) {
    if (!memory || !ep_requests_outstanding(layer)) return 0;
    if (layer->abandoned_count == (int)(sizeof layer->abandoned_memory / sizeof(void *)))
        return 1; /* never reached: a forward abandons fewer */
    layer->abandoned_memory[layer->abandoned_count++] = memory;
    return 1;
}

moevk_result ep_agree(moevk_ep_layer *layer, moevk_result local, const uint32_t *table,
                      size_t words, uint32_t *gathered, const char *what) {
    /* In place: this rank's words where the gathered table keeps them. */
    uint32_t *mine = gathered + (size_t)layer->rank * (1 + words);
    mine[0] = (uint32_t)local;
    if (words && table && table != mine + 1) memcpy(mine + 1, table, words * sizeof *mine);
    if (words && !table) memset(mine + 1, 0, words * sizeof *mine);
    MPI_Request request;
    int count = (int)(1 + words);
    int started = MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, gathered, count, MPI_UINT32_T,
                                 layer->comm, &request);
    moevk_result r = ep_wait(layer, started, &request, what);
    if (r != MOEVK_SUCCESS) return r;
    int failed = -1;
    for (int q = 0; q < layer->ranks && failed < 0; ++q)
        if (gathered[(size_t)q * (1 + words)] != 0) failed = q;
    if (failed < 0) return MOEVK_SUCCESS;
    moevk_result result = (moevk_result)(int32_t)gathered[(size_t)failed * (1 + words)];
    /* The failing rank's message, to every rank. */
    char *message = layer->message;
    memset(message, 0, MESSAGE_BYTES);
    if (layer->rank == failed)
        snprintf(message, MESSAGE_BYTES, "%s", moevk_context_last_error(layer->context));
    started = MPI_Ibcast(message, MESSAGE_BYTES, MPI_CHAR, failed, layer->comm, &request);
    r = ep_wait(layer, started, &request, what);
    if (r != MOEVK_SUCCESS) return r;
    message[MESSAGE_BYTES - 1] = '\0';
    /* Messages this library wrote already name their rank. */
    if (strncmp(message, "rank ", 5) == 0) return ep_fail(layer, result, "%s", message);
    return ep_fail(layer, result, "rank %d: %s", failed, message);
}

moevk_result ep_agree_result(moevk_ep_layer *layer, moevk_result local, const char *what) {
    uint32_t *gathered = calloc((size_t)layer->ranks, sizeof *gathered);
    if (!gathered) /* this rank cannot take part: the others time out (PEER) */
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d", layer->rank);
    moevk_result r = ep_agree(layer, local, NULL, 0, gathered, what);
    if (!ep_abandon(layer, gathered)) free(gathered);
    return r;
}

/* Every rank's `per_token` values of each of its tokens, gathered into all [batch, per_token] in
 * rank order. Counts and displacements [R] are the caller's scratch. */
moevk_result ep_gather_rows(moevk_ep_layer *layer, const uint32_t *tokens, uint32_t per_token,
                            const void *mine, MPI_Datatype type, void *all, int *counts,
                            int *displacements, const char *what) {
    uint64_t total = 0;
    for (int q = 0; q < layer->ranks; ++q) {
        counts[q] = (int)((uint64_t)tokens[q] * per_token);
        displacements[q] = (int)total;
        total += (uint64_t)tokens[q] * per_token;
    }
    MPI_Request request;
    int started = MPI_Iallgatherv(mine, counts[layer->rank], type, all, counts, displacements, type,
                                  layer->comm, &request);
    return ep_wait(layer, started, &request, what);
}

moevk_result ep_gather_choices(moevk_ep_layer *layer, const forward_state *s,
                               const uint32_t *tokens, int32_t *ids, float *weights, int *counts,
                               int *displacements) {
    uint32_t k = layer->top_k;
    moevk_result r = ep_gather_rows(layer, tokens, k, s->ids, MPI_INT32_T, ids, counts,
                                    displacements, "gathering the batch's choices");
    if (r != MOEVK_SUCCESS) return r;
    return ep_gather_rows(layer, tokens, k, s->weights, MPI_FLOAT, weights, counts, displacements,
                          "gathering the batch's weights");
}
