/* Bucketing (bucket_count.comp, bucket_scan.comp, bucket_assign.comp; in the fused front end
 * the counts are scores_topk.comp's and the scan the assignment's): the interface of each of its
 * kernels (stage_params.h). */
#ifndef MOEVK_BUCKET_H
#define MOEVK_BUCKET_H
#include "stage_params.h"

// clang-format off
#define BUCKET_COUNT_BUFFERS(X) X(EXPERT_IDS) X(BLOCK_COUNTS)
#define BUCKET_COUNT_PARAMS(U, F, A) U(num_tokens) U(choices) U(block_size)

#define BUCKET_SCAN_BUFFERS(X) X(BLOCK_COUNTS) X(EXPERT_INFO)
#define BUCKET_SCAN_PARAMS(U, F, A) U(num_blocks) U(flags) U(capacity)

#define BUCKET_ASSIGN_BUFFERS(X) X(EXPERT_IDS) X(BLOCK_COUNTS) X(EXPERT_INFO) X(SLOTS) X(ROWS)    \
    X(ROW_TOKEN) X(ORDER)
#define BUCKET_ASSIGN_PARAMS(U, F, A) U(num_tokens) U(choices) U(block_size) U(num_blocks)        \
    U(flags) U(capacity) U(pad_multiple)
// clang-format on

#endif
