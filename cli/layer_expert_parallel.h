/* `moevk layer --expert-parallel` under mpirun: the layer's experts spread over the ranks of
 * MPI_COMM_WORLD (libmoevk_mpi), each rank a share of the tokens, every output gathered on rank
 * 0, which writes the files one process writes. */
#ifndef MOEVK_CLI_LAYER_EXPERT_PARALLEL_H
#define MOEVK_CLI_LAYER_EXPERT_PARALLEL_H

#include "layer_weights.h"
#include "npy.h"

/* What the forward writes, for all T tokens (every rank holds whole arrays; rank 0's end up
 * complete): output [T, d] in hidden_type, logits [T, E], ids, weights and slots [T, choices],
 * token_scores [T, 3] (NULL: none), counts [E], offsets [E + 1], stats. */
typedef struct layer_forward_arrays {
    void *output;
    float *logits, *weights, *token_scores;
    int32_t *ids, *slots;
    uint32_t *counts, *offsets;
    moevk_route_stats *stats;
} layer_forward_arrays;

/* With --grad-output: the backward after the forward, every rank its tokens' part, and its
 * files (layer_gradients.h) written by rank 0; status gets layer_gradients_write's. */
typedef struct layer_backward_request {
    const npy_array *grad_output;  /* [T, d] f32, all tokens */
    const moevk_loss_info *losses; /* --loss (NULL: none) */
    const char *out_dir;
    int status;
} layer_backward_request;

/* Rank r runs tokens [r T / R, (r + 1) T / R) of input (input->num_tokens = T; with the sequence
 * loss, rounded down to whole sequences, the last rank the rest), its experts' and
 * the shared weights uploaded from weights, its exchange in exchange_chunks (0: automatic). Sets
 * *writer on rank 0 (which prints errors and writes the files); on failure, error gets a line (the
 * same on every rank where the layer agreed it). backward: NULL, or the backward to run too. MPI
 * is started and finished here. */
moevk_result layer_forward_expert_parallel(moevk_context *context, const moevk_layer_info *info,
                                           uint32_t exchange_chunks, const layer_weights *weights,
                                           const model_config *config,
                                           const moevk_route_input *input,
                                           const layer_forward_arrays *out,
                                           layer_backward_request *backward, int *writer,
                                           char *error, size_t error_size);

#endif
