/* The structs that grow (moevk.h, "Structs that grow"): reading and filling a caller's struct up
 * to its struct_size. Host only: history.c uses it too. */
#ifndef MOEVK_SIZED_H
#define MOEVK_SIZED_H

#include <stddef.h>

#include "moevk.h"

/* Copies a caller's struct into `full` (which holds the defaults), up to its struct_size (0:
 * `first`, the first layout's size); refuses a size below the first layout, and fields past
 * `known` that are not zero. */
moevk_result sized_read(moevk_context *context, const char *name, const void *given, size_t known,
                        size_t first, void *full);
/* Fills a caller's struct from `full` up to its struct_size, which it keeps. */
void sized_write(void *given, const void *full, size_t known, size_t first);
/* Each growable struct's first layout (moevk 0.2): what struct_size 0 stands for. */
#define FIRST_SIZE_moevk_context_info sizeof(moevk_context_info)
#define FIRST_SIZE_moevk_device_info sizeof(moevk_device_info)
#define FIRST_SIZE_moevk_router_info sizeof(moevk_router_info)
#define FIRST_SIZE_moevk_router_bounds sizeof(moevk_router_bounds)
#define FIRST_SIZE_moevk_route_input sizeof(moevk_route_input)
#define FIRST_SIZE_moevk_route_output sizeof(moevk_route_output)
#define FIRST_SIZE_moevk_route_stats sizeof(moevk_route_stats)
#define FIRST_SIZE_moevk_loss_info sizeof(moevk_loss_info)
#define FIRST_SIZE_moevk_losses sizeof(moevk_losses)
#define FIRST_SIZE_moevk_history_info sizeof(moevk_history_info)
#define FIRST_SIZE_moevk_step_report sizeof(moevk_step_report)
#define FIRST_SIZE_moevk_timings sizeof(moevk_timings)
#define SIZED_READ(context, type, given, full)                                                     \
    sized_read(context, #type, given, sizeof(type), FIRST_SIZE_##type, full)
#define SIZED_WRITE(type, given, full) sized_write(given, full, sizeof(type), FIRST_SIZE_##type)
/* The size of the caller's struct: its struct_size, or the first layout's for 0. */
#define CALLER_SIZE(type, given)                                                                   \
    ((given)->struct_size ? (size_t)(given)->struct_size : FIRST_SIZE_##type)

#endif
