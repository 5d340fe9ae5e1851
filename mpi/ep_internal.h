/* The expert-parallel layer's parts (moevk_mpi.h): its state, and the exchange helpers that
 * keep every collective call bounded by the layer's timeout and every error agreed. */
#ifndef MOEVK_EP_INTERNAL_H
#define MOEVK_EP_INTERNAL_H

#include <stddef.h>

#include "moevk_mpi.h"
#include "moevk_parts.h"

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
    /* After a timeout: the request MPI still holds, and the memory it may still write (freed
     * at destroy if the request has ended by then, else left to MPI, which may complete it). */
    MPI_Request abandoned;
    void *abandoned_memory[16];
    int abandoned_count;
    char message[512]; /* a failing rank's message, broadcast (the layer outlives a timeout) */
};

/* Hands memory a timed-out request may still write to the layer (a no-op for NULL, or when
 * nothing timed out: then the caller frees it). Returns 1 when taken. */
int ep_abandon(moevk_ep_layer *layer, void *memory);

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

/* Waits for a nonblocking MPI call up to the layer's timeout (PEER after it, or when MPI
 * fails: the layer is then broken). */
moevk_result ep_wait(moevk_ep_layer *layer, int mpi_result, MPI_Request *request, const char *what);

#endif
