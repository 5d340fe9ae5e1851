/* The balancing losses and the router's backward (losses.comp): the stage's interface
 * (stage_params.h). It reaches no buffer by address (a router that would is refused). */
#ifndef MOEVK_LOSSES_H
#define MOEVK_LOSSES_H
#include "stage_params.h"

// clang-format off
#define LOSSES_BUFFERS(X) X(LOGITS) X(BIAS) X(DECISIONS) X(NOISE_STD) X(NOISE_STATE)               \
    X(NOISE_WEIGHTS) X(HIDDEN) X(EXPERT_IDS) X(WEIGHTS) X(ROW_STATS) X(ROW_FLAGS) X(EXPERT_INFO)   \
    X(ROWS) X(STAT_TOTALS) X(EXPERT_OUT) X(GRAD_COMBINED) X(LOSS_ROWS) X(LOSS_PARTIALS)            \
    X(LOSS_TOTALS) X(SEQ_COUNTS) X(GRAD_WEIGHTS) X(GRAD_LOGITS) X(GRAD_NOISE)
#define LOSSES_PARAMS(U, F, A) U(num_tokens) U(num_experts) U(choices) U(hidden_size) U(flags)      \
    U(phase) U(stat_blocks) U(rows_per_stat_block) F(scale) F(aux_coef) F(z_coef)                 \
    F(importance_coef) F(load_coef) F(entropy_coef) F(sequence_coef) U(sequence_length)           \
    U(batch_sequences) U(valid_rows) U(assignments) U(token_chunk) SCORE_PARAMS(U, F, A) NOISE_PARAMS(U, F, A)
// clang-format on

#endif
