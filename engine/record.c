/* A route's stages, as a table the router runs in order: which run for a call, and each one's
 * record function (engine/<stage>.c). Between them, each stage's own barriers; around them the
 * fills the stages start from and the profiling timestamps. */
#include "recording.h"

#define COMPUTE VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT
#define SHADER_RW (VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT)

/* What decides which stages a call runs. */
typedef struct route_call {
    const route_params *params;
    int with_dispatch; /* hidden states were given */
} route_call;

static int has_tokens(const route_call *c) { return c->params->num_tokens > 0; }
static int learned_std(const route_call *c) {
    return has_tokens(c) && (c->params->flags & FLAG_NOISE_STD_LEARNED);
}
static int by_rows(const route_call *c) {
    return has_tokens(c) && (c->params->flags & (FLAG_SEQUENCE_DECISIONS | FLAG_SINKHORN));
}
static int by_sequence(const route_call *c) {
    return has_tokens(c) && (c->params->flags & FLAG_SEQUENCE_DECISIONS);
}
static int by_sinkhorn(const route_call *c) {
    return has_tokens(c) && (c->params->flags & FLAG_SINKHORN);
}
static int experts_choose(const route_call *c) {
    return has_tokens(c) && (c->params->flags & FLAG_EXPERT_CHOICE);
}
static int tokens_choose(const route_call *c) {
    return has_tokens(c) && !(c->params->flags & FLAG_EXPERT_CHOICE);
}
static int drop_by_score(const route_call *c) {
    return has_tokens(c) && (c->params->flags & FLAG_DROP_BY_SCORE);
}
static int dispatches(const route_call *c) { return c->with_dispatch; }
static int always(const route_call *c) { return c != NULL; }

#define NO_TIMESTAMP TIMESTAMP_COUNT

/* The route, in order. `after`: the profiling timestamp written once the stage's turn has come,
 * whether or not it ran (so that every query of a profiling router is written). */
static const struct route_stage {
    const char *name;
    int (*runs)(const route_call *c);
    void (*record)(moevk_router *router, const route_params *params);
    enum timestamp_point after;
} ROUTE_STAGES[] = {
    {"noise std", learned_std, record_noise_std, NO_TIMESTAMP},
    {"row flags", by_rows, record_row_flags, NO_TIMESTAMP},
    {"sequence means", by_sequence, record_sequence_means, NO_TIMESTAMP},
    {"sinkhorn", by_sinkhorn, record_sinkhorn, NO_TIMESTAMP},
    {"scores and top-k", has_tokens, record_scores_topk, TIMESTAMP_AFTER_TOPK},
    {"expert choice", experts_choose, record_expert_choice, NO_TIMESTAMP},
    {"bucketing", tokens_choose, record_bucketing, NO_TIMESTAMP},
    {"score select", drop_by_score, record_score_select, TIMESTAMP_AFTER_BUCKETING},
    {"dispatch", dispatches, record_dispatch, TIMESTAMP_AFTER_DISPATCH},
    {"stats", always, record_stats, TIMESTAMP_ROUTE_END},
};

void record_route(moevk_router *router, const route_params *params, int with_dispatch) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    VkCommandBuffer cmd = router->recording;
    record_bind_set(router);
    record_reset_timestamps(router, TIMESTAMP_ROUTE_START, TIMESTAMP_ROUTE_END + 1);
    record_timestamp(router, TIMESTAMP_ROUTE_START);
    /* Rows nobody fills gather from token -1 (zeros); counts start at zero. */
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_ROW_TOKEN].buffer, 0, VK_WHOLE_SIZE,
                        0xFFFFFFFFu);
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_EXPERT_INFO].buffer, 0, VK_WHOLE_SIZE, 0);
    record_barrier(router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, COMPUTE,
                   SHADER_RW);
    route_call call = {params, with_dispatch};
    for (size_t i = 0; i < sizeof ROUTE_STAGES / sizeof ROUTE_STAGES[0]; ++i) {
        const struct route_stage *s = &ROUTE_STAGES[i];
        if (s->runs(&call)) s->record(router, params);
        if (s->after != NO_TIMESTAMP) record_timestamp(router, s->after);
    }
}
