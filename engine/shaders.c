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
};

const shader_code *shader_for_stage(stage which) { return &SHADERS[which]; }
