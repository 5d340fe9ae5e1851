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
#include "sequence_mean.spv.h"
#include "sinkhorn.spv.h"
#include "expert_choice.spv.h"
#include "noise_std.spv.h"
#include "expert_loss.spv.h"

#include "combine_addresses.spv.h"
#include "dispatch_addresses.spv.h"
#include "scores_topk_addresses.spv.h"
#include "sequence_mean_addresses.spv.h"
#include "sinkhorn_addresses.spv.h"
#include "expert_choice_addresses.spv.h"
#include "noise_std_addresses.spv.h"
#include "stats_addresses.spv.h"

#include "scores_topk_rte.spv.h"
#include "scores_topk_rte_addresses.spv.h"
#include "sequence_mean_rte.spv.h"
#include "sequence_mean_rte_addresses.spv.h"

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
    [STAGE_SEQUENCE_MEAN] = SHADER_ENTRY(sequence_mean),
    [STAGE_SINKHORN] = SHADER_ENTRY(sinkhorn),
    [STAGE_EXPERT_CHOICE] = SHADER_ENTRY(expert_choice),
    [STAGE_NOISE_STD] = SHADER_ENTRY(noise_std),
    [STAGE_EXPERT_LOSS] = SHADER_ENTRY(expert_loss),
};

/* The variants that reach the large buffers through device addresses (MOEVK_ADDRESSES). */
#define ADDRESSES_ENTRY(name)                                                                      \
    { #name "_addresses", name##_addresses_spv, sizeof name##_addresses_spv }

static const shader_code ADDRESS_SHADERS[STAGE_COUNT] = {
    [STAGE_SCORES_TOPK] = ADDRESSES_ENTRY(scores_topk),
    [STAGE_DISPATCH] = ADDRESSES_ENTRY(dispatch),
    [STAGE_COMBINE] = ADDRESSES_ENTRY(combine),
    [STAGE_STATS] = ADDRESSES_ENTRY(stats),
    [STAGE_SEQUENCE_MEAN] = ADDRESSES_ENTRY(sequence_mean),
    [STAGE_SINKHORN] = ADDRESSES_ENTRY(sinkhorn),
    [STAGE_EXPERT_CHOICE] = ADDRESSES_ENTRY(expert_choice),
    [STAGE_NOISE_STD] = ADDRESSES_ENTRY(noise_std),
};

/* The stages whose results must round alike everywhere (jitter, the sequences' means), asking
 * for round-to-nearest-even f32 arithmetic (MOEVK_RTE): plain and with addresses. */
#define RTE_ENTRIES(name)                                                                          \
    {                                                                                              \
        {#name "_rte", name##_rte_spv, sizeof name##_rte_spv}, {                                   \
#name "_rte_addresses", name##_rte_addresses_spv, sizeof name##_rte_addresses_spv      \
        }                                                                                          \
    }

static const shader_code RTE_SHADERS[STAGE_COUNT][2] = {
    [STAGE_SCORES_TOPK] = RTE_ENTRIES(scores_topk),
    [STAGE_SEQUENCE_MEAN] = RTE_ENTRIES(sequence_mean),
};

const shader_code *shader_for_stage_rte(stage which, int addresses) {
    const shader_code *code = &RTE_SHADERS[which][addresses ? 1 : 0];
    return code->code ? code : NULL;
}

const shader_code *shader_for_stage(stage which, int addresses) {
    if (!addresses) return &SHADERS[which];
    return ADDRESS_SHADERS[which].code ? &ADDRESS_SHADERS[which] : NULL;
}
