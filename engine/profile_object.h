/* The routing profile's object (engine/profile_object.c), shared with the route that fills or
 * reads it (engine/route_profile.c) and its JSON file (engine/profile_json.c). */
#ifndef MOEVK_PROFILE_OBJECT_H
#define MOEVK_PROFILE_OBJECT_H

#include "moevk.h"

#define PROFILE_DEFAULT_BINS 64u

struct moevk_profile {
    moevk_profile_info info;           /* bins set; given_bounds once the bounds are known */
    moevk_drift_thresholds thresholds; /* as the caller set them (zeros: defaults) */
    uint64_t batches, tokens;
    uint64_t *usage;        /* [E] */
    uint64_t *histograms;   /* [MOEVK_MEASURES, bins + 2] */
    uint64_t *co_selection; /* [E, E] */
};

/* Checks an info (the message into error, when not NULL); 0 when it is fine. */
int profile_info_invalid(const moevk_profile_info *info, char *error, size_t error_size);
/* An empty profile of a checked info. */
moevk_profile *profile_new(const moevk_profile_info *info);
/* The thresholds in force: the caller's, defaults where zero. */
moevk_drift_thresholds profile_thresholds(const moevk_profile *profile);
static inline uint64_t *profile_histogram(const moevk_profile *profile, uint32_t measure) {
    return profile->histograms + (uint64_t)measure * (profile->info.bins + 2);
}
/* The quantile q of a measure's histogram (linear within a bin; NaN when empty). */
double profile_quantile(const moevk_profile *profile, uint32_t measure, double q);

/* engine/profile.c: the modes a profile takes (a routing distribution per token), and those
 * whose tokens each pick k experts (co-selection). */
int profile_mode(const moevk_router_info *info);
int profile_counts_pairs(const moevk_router_info *info);
/* engine/drift.c: a batch judged against a profile from the device's counts (its usage before
 * drops, and BINDING_PROFILE's words) into stats' drift fields. */
void drift_judge(const moevk_profile *profile, const uint32_t *counts_before,
                 const uint32_t *device_profile, uint32_t valid_rows, moevk_route_stats *stats);

#endif
