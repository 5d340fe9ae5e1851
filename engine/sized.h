/* The structs that grow (moevk.h, "Structs that grow"): reading and filling a caller's struct up
 * to its struct_size, by the layouts each struct has had. Host only: history.c uses it too. */
#ifndef MOEVK_SIZED_H
#define MOEVK_SIZED_H

#include <stddef.h>

#include "moevk.h"

/* One layout a struct has had. */
typedef struct struct_layout {
    size_t size;       /* its sizeof */
    size_t fields_end; /* where its last field ends: past it, tail padding that is never read */
} struct_layout;

/* Copies a caller's struct into `full` (which holds the defaults): the fields of the newest of
 * `layouts` (oldest first) whose size the caller's struct_size reaches (0: the first's).
 * Refuses a struct_size below the first layout, and bytes past the newest that are not zero. */
moevk_result sized_read(moevk_context *context, const char *name, const void *given,
                        const struct_layout *layouts, size_t count, void *full);
/* Fills a caller's struct from `full`: the fields its struct_size reaches, which it keeps. */
void sized_write(void *given, const void *full, const struct_layout *layouts, size_t count);

#define SIZED_ROUND_UP_(value, alignment) (((value) + (alignment)-1) / (alignment) * (alignment))
/* The layout of this header. */
#define LAYOUT_NOW(type)                                                                           \
    { sizeof(type), sizeof(type) }
/* The layout of a version that ended where `field`, the first field a later one added,
 * begins (the struct's alignment is the same in every version). */
#define LAYOUT_BEFORE(type, field)                                                                 \
    { SIZED_ROUND_UP_(offsetof(type, field), _Alignof(type)), offsetof(type, field) }

/* Each struct's layouts, oldest first: the first is moevk 0.2's, what struct_size 0 means. */
#define LAYOUTS_moevk_context_info                                                                 \
    LAYOUT_BEFORE(moevk_context_info, subgroup_size_control), LAYOUT_NOW(moevk_context_info)
#define LAYOUTS_moevk_device_info                                                                  \
    LAYOUT_BEFORE(moevk_device_info, portability_enumeration),                                     \
        LAYOUT_BEFORE(moevk_device_info, selection_lanes), LAYOUT_NOW(moevk_device_info)
#define LAYOUTS_moevk_router_info                                                                  \
    LAYOUT_BEFORE(moevk_router_info, padding_0_2),                                                 \
        LAYOUT_BEFORE(moevk_router_info, bias_on_scores),                                          \
        LAYOUT_BEFORE(moevk_router_info, choice_block_tokens), LAYOUT_NOW(moevk_router_info)
#define LAYOUTS_moevk_router_bounds LAYOUT_NOW(moevk_router_bounds)
#define LAYOUTS_moevk_route_input                                                                  \
    LAYOUT_BEFORE(moevk_route_input, capacity_factor), LAYOUT_NOW(moevk_route_input)
#define LAYOUTS_moevk_route_output                                                                 \
    LAYOUT_BEFORE(moevk_route_output, token_scores), LAYOUT_BEFORE(moevk_route_output, profile),   \
        LAYOUT_NOW(moevk_route_output)
#define LAYOUTS_moevk_route_stats                                                                  \
    LAYOUT_BEFORE(moevk_route_stats, drift), LAYOUT_BEFORE(moevk_route_stats, resubmitted),        \
        LAYOUT_NOW(moevk_route_stats)
#define LAYOUTS_moevk_profile_info LAYOUT_NOW(moevk_profile_info)
#define LAYOUTS_moevk_drift_thresholds LAYOUT_NOW(moevk_drift_thresholds)
#define LAYOUTS_moevk_loss_info LAYOUT_NOW(moevk_loss_info)
#define LAYOUTS_moevk_losses LAYOUT_NOW(moevk_losses)
#define LAYOUTS_moevk_history_info LAYOUT_NOW(moevk_history_info)
#define LAYOUTS_moevk_step_report                                                                  \
    LAYOUT_BEFORE(moevk_step_report, drift), LAYOUT_NOW(moevk_step_report)
#define LAYOUTS_moevk_timings                                                                      \
    LAYOUT_BEFORE(moevk_timings, layer_ms), LAYOUT_BEFORE(moevk_timings, experts_ms),              \
        LAYOUT_NOW(moevk_timings)
#define LAYOUTS_moevk_layer_info                                                                   \
    LAYOUT_BEFORE(moevk_layer_info, separate_down_type), LAYOUT_NOW(moevk_layer_info)
#define LAYOUTS_moevk_layer_output LAYOUT_NOW(moevk_layer_output)
#define LAYOUTS_moevk_layer_backward_info LAYOUT_NOW(moevk_layer_backward_info)
#define LAYOUTS_moevk_optimizer_info LAYOUT_NOW(moevk_optimizer_info)
#define LAYOUTS_moevk_recording_counts LAYOUT_NOW(moevk_recording_counts)

#define SIZED_LAYOUTS_(type) ((const struct_layout[]){LAYOUTS_##type})
#define SIZED_COUNT_(type) (sizeof SIZED_LAYOUTS_(type) / sizeof(struct_layout))
#define SIZED_READ(context, type, given, full)                                                     \
    sized_read(context, #type, given, SIZED_LAYOUTS_(type), SIZED_COUNT_(type), full)
#define SIZED_WRITE(type, given, full)                                                             \
    sized_write(given, full, SIZED_LAYOUTS_(type), SIZED_COUNT_(type))
/* The size of the caller's struct: its struct_size, or the first layout's for 0. */
#define CALLER_SIZE(type, given)                                                                   \
    ((given)->struct_size ? (size_t)(given)->struct_size : SIZED_LAYOUTS_(type)[0].size)

#endif
