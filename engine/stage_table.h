/* The stage table: every stage module of the engine, in the order a route runs them. A stage is
 * its shader(s) and header under shaders/, its engine/<stage>.c (which defines <stage>_stage),
 * its reference and its tests; adding one means a line here and its entry in meson.build's
 * stage list. The route runs the stages that have a `runs` test (engine/record.c); the others
 * (combine, the losses, the per-expert loss, the layer's experts and combine, the layer's backward)
 * are recorded by their own calls. */
#ifndef MOEVK_STAGE_TABLE_H
#define MOEVK_STAGE_TABLE_H

#define MOEVK_STAGE_TABLE(X)                                                                       \
    X(ROUTER_PROJECTION, router_projection)                                                        \
    X(NOISE_STD, noise_std)                                                                        \
    X(SEQUENCE_MEAN, sequence_mean)                                                                \
    X(SINKHORN, sinkhorn)                                                                          \
    X(SCORES_TOPK, scores_topk)                                                                    \
    X(EXPERT_CHOICE, expert_choice)                                                                \
    X(BUCKET, bucket)                                                                              \
    X(SCORE_SELECT, score_select)                                                                  \
    X(DISPATCH, dispatch)                                                                          \
    X(TOKEN_SCORES, token_scores)                                                                  \
    X(PROFILE, profile)                                                                            \
    X(STATS, stats)                                                                                \
    X(COMBINE, combine)                                                                            \
    X(LOSSES, losses)                                                                              \
    X(EXPERT_LOSS, expert_loss)                                                                    \
    X(EXPERTS, experts)                                                                            \
    X(SHARED_EXPERTS, shared_experts)                                                              \
    X(LAYER_COMBINE, layer_combine)                                                                \
    X(COMBINE_BACKWARD, combine_backward)                                                          \
    X(EXPERTS_BACKWARD, experts_backward)                                                          \
    X(SHARED_BACKWARD, shared_backward)                                                            \
    X(ROUTER_BACKWARD, router_backward)                                                            \
    X(OPTIMIZER, optimizer)

typedef enum stage_id {
#define STAGE_ENUM_(id, name) STAGE_##id,
    MOEVK_STAGE_TABLE(STAGE_ENUM_)
#undef STAGE_ENUM_
        STAGE_COUNT
} stage_id;

/* The most kernels (shaders) of one stage. */
#define MAX_STAGE_KERNELS 6

#endif
