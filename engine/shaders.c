/* The stages' SPIR-V, compiled from shaders/ at build time and embedded as uint32_t arrays
 * (aligned for VkShaderModuleCreateInfo::pCode): nothing is read from disk at run time. */
#include "internal.h"

#include "bucket_assign.spv.h"
#include "bucket_count.spv.h"
#include "bucket_scan.spv.h"
#include "combine.spv.h"
#include "dispatch.spv.h"
#include "score_select.spv.h"
#include "scores_topk.spv.h"
#include "stats.spv.h"
#include "losses.spv.h"

#include "combine_addresses.spv.h"
#include "dispatch_addresses.spv.h"
#include "scores_topk_addresses.spv.h"
#include "stats_addresses.spv.h"

#include "scores_topk_rte.spv.h"
#include "scores_topk_rte_addresses.spv.h"

#define SHADER_ENTRY(name)                                                                         \
    { #name, name##_spv, sizeof name##_spv }

static const shader_code SHADERS[STAGE_COUNT] = {
    [STAGE_SCORES_TOPK] = SHADER_ENTRY(scores_topk),
    [STAGE_BUCKET_COUNT] = SHADER_ENTRY(bucket_count),
    [STAGE_BUCKET_SCAN] = SHADER_ENTRY(bucket_scan),
    [STAGE_BUCKET_ASSIGN] = SHADER_ENTRY(bucket_assign),
    [STAGE_SCORE_SELECT] = SHADER_ENTRY(score_select),
    [STAGE_DISPATCH] = SHADER_ENTRY(dispatch),
    [STAGE_COMBINE] = SHADER_ENTRY(combine),
    [STAGE_STATS] = SHADER_ENTRY(stats),
    [STAGE_LOSSES] = SHADER_ENTRY(losses),
};

/* The variants that reach the large buffers through device addresses (MOEVK_ADDRESSES). */
#define ADDRESSES_ENTRY(name)                                                                      \
    { #name "_addresses", name##_addresses_spv, sizeof name##_addresses_spv }

static const shader_code ADDRESS_SHADERS[STAGE_COUNT] = {
    [STAGE_SCORES_TOPK] = ADDRESSES_ENTRY(scores_topk),
    [STAGE_DISPATCH] = ADDRESSES_ENTRY(dispatch),
    [STAGE_COMBINE] = ADDRESSES_ENTRY(combine),
    [STAGE_STATS] = ADDRESSES_ENTRY(stats),
};

/* Scores and top-k asking for round-to-nearest-even f32 arithmetic (MOEVK_RTE). */
static const shader_code RTE_SCORES_TOPK[2] = {
    {"scores_topk_rte", scores_topk_rte_spv, sizeof scores_topk_rte_spv},
    {"scores_topk_rte_addresses", scores_topk_rte_addresses_spv,
     sizeof scores_topk_rte_addresses_spv},
};

const shader_code *shader_for_stage_rte(stage which, int addresses) {
    return which == STAGE_SCORES_TOPK ? &RTE_SCORES_TOPK[addresses ? 1 : 0] : NULL;
}

const shader_code *shader_for_stage(stage which, int addresses) {
    if (!addresses) return &SHADERS[which];
    return ADDRESS_SHADERS[which].code ? &ADDRESS_SHADERS[which] : NULL;
}
