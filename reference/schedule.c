/* Reference of the schedules: options that follow the training step, written from the header's
 * definitions (moevk_schedule_kind), not from the engine's code; test_noise.c also holds both
 * to values worked out by hand. */
#include <math.h>

#include "moevk_reference.h"

/* How far along the schedule a step is: min(step, steps) / steps, in [0, 1]. */
static double progress_at(const moevk_schedule *schedule, uint32_t step) {
    if (step >= schedule->steps) return 1.0;
    return (double)step / (double)schedule->steps;
}

float ref_schedule_value(const moevk_schedule *schedule, uint32_t step) {
    double start = schedule->start, end = schedule->end;
    if (schedule->steps == 0) return schedule->start; /* no schedule: its start */
    double p = progress_at(schedule, step);
    switch (schedule->kind) {
    case MOEVK_SCHEDULE_LINEAR: return (float)(start + (end - start) * p);
    case MOEVK_SCHEDULE_COSINE: {
        const double pi = 3.14159265358979323846;
        double towards_start = (1.0 + cos(pi * p)) / 2.0; /* 1 at the first step, 0 at the last */
        return (float)(end + (start - end) * towards_start);
    }
    case MOEVK_SCHEDULE_CONSTANT:
    default: return schedule->start;
    }
}

moevk_router_info ref_at_step(const moevk_router_info *info, uint32_t step) {
    moevk_router_info at = *info;
    if (info->noise_schedule.steps)
        at.noise_amount = ref_schedule_value(&info->noise_schedule, step);
    if (info->temperature_schedule.steps)
        at.temperature = ref_schedule_value(&info->temperature_schedule, step);
    if (info->capacity_factor_schedule.steps)
        at.capacity_factor = ref_schedule_value(&info->capacity_factor_schedule, step);
    return at;
}

uint32_t ref_capacity(const moevk_router_info *info, uint32_t T, uint32_t step) {
    moevk_router_info at = ref_at_step(info, step);
    if (at.capacity_mode == MOEVK_CAPACITY_FIXED) return (uint32_t)at.capacity;
    if (at.capacity_mode == MOEVK_CAPACITY_DROPLESS) return 0;
    uint32_t k = at.mode == MOEVK_MODE_EXPERT_CHOICE ? 1 : at.top_k; /* experts share T tokens */
    double wanted = ceil((double)at.capacity_factor * T * k / at.num_experts);
    uint32_t capacity = (uint32_t)wanted;
    return capacity > (uint32_t)at.min_capacity ? capacity : (uint32_t)at.min_capacity;
}
