/* What the stage modules (engine/<stage>.c) record with, and each module's record function.
 * A stage records its dispatches into router->recording, with a barrier after each whose
 * results a later dispatch reads; record.c runs the route's stages from a table. */
#ifndef MOEVK_RECORDING_H
#define MOEVK_RECORDING_H

#include "internal.h"

/* A global barrier: compute writes before, compute reads and writes after. */
void record_compute_barrier(moevk_router *router);
/* The same, for a dispatch that also reads its arguments from what the last one wrote. */
void record_indirect_barrier(moevk_router *router);
/* Binds the stage's pipeline, pushes params and dispatches. */
void record_stage(moevk_router *router, stage which, const route_params *params, uint32_t groups);
void record_stage_2d(moevk_router *router, stage which, const route_params *params,
                     uint32_t groups_x, uint32_t groups_y);
/* Pushes params to the bound pipeline (for indirect dispatches). */
void record_push(moevk_router *router, const route_params *params);
/* A row-wise stage over [rows, d]: x covers a row's units (at most 64 workgroups), y the rows. */
void record_rows_stage(moevk_router *router, stage which, const route_params *params,
                       uint64_t rows);
/* Workgroups for a grid-stride loop over `items`: enough to fill the device, within limits. */
uint32_t grid_for(const moevk_router *router, uint64_t items);
/* Workgroups for a loop over `count` workgroup-sized items (blocks, experts): at most
 * MAX_GROUPS_X, which every device allows and the shaders assume. */
uint32_t groups_for(uint64_t count);
/* A two-phase reduction stage: phase 0 over the statistics blocks (params->stat_blocks), a
 * barrier, then phase 1 with `totals` workgroups. */
void record_blocks_then_totals(moevk_router *router, stage which, const route_params *params,
                               uint32_t totals);
void record_timestamp(moevk_router *router, enum timestamp_point point);
void record_reset_timestamps(moevk_router *router, uint32_t first, uint32_t count);
/* Binds the router's current descriptor set (its own, or the application's buffers). */
void record_bind_set(moevk_router *router);

/* ---- The stage modules: each records its stage for one call ---- */
void record_noise_std(moevk_router *router, const route_params *params);      /* noise_std.c */
void record_row_flags(moevk_router *router, const route_params *params);      /* sequence_mean.c */
void record_sequence_means(moevk_router *router, const route_params *params); /* sequence_mean.c */
void record_sinkhorn(moevk_router *router, const route_params *params);       /* sinkhorn.c */
void record_scores_topk(moevk_router *router, const route_params *params);    /* scores_topk.c */
void record_expert_choice(moevk_router *router, const route_params *params);  /* expert_choice.c */
void record_bucketing(moevk_router *router, const route_params *params);      /* bucket.c */
void record_score_select(moevk_router *router, const route_params *params);   /* score_select.c */
void record_dispatch(moevk_router *router, const route_params *params);       /* dispatch.c */
void record_stats(moevk_router *router, const route_params *params);          /* stats.c */

#endif
