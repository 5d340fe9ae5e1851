/* A route's part in the routing profile: checking the profile a call gives, the header the
 * device starts from, and afterwards adding the batch's counts to a profile or judging the
 * batch against one (engine/drift.c). */
#include <string.h>

#include "internal.h"
#include "profile_object.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

static moevk_result check_match(moevk_context *context, const moevk_router_info *router,
                                const moevk_profile *profile, const char *name) {
    const moevk_profile_info *info = &profile->info;
    if (info->num_experts != router->num_experts || info->top_k != router->top_k)
        REJECT("%s is of E = %u, k = %u; the router's are E = %u, k = %u", name, info->num_experts,
               info->top_k, router->num_experts, router->top_k);
    if (info->mode != router->mode || info->score != router->score)
        REJECT("%s was made for mode %d and score function %d; the router has mode %d and %d", name,
               (int)info->mode, (int)info->score, (int)router->mode, (int)router->score);
    if (info->temperature != router->temperature)
        REJECT("%s was made at temperature %g; the router's is %g", name, (double)info->temperature,
               (double)router->temperature);
    return MOEVK_SUCCESS;
}

moevk_result route_profile_check(const moevk_router *router, const moevk_route_output *output) {
    moevk_context *context = router->context;
    if (!output->profile && !output->drift_profile) return MOEVK_SUCCESS;
    if (!profile_mode(&router->info))
        REJECT("a routing profile needs the TOKEN, EXPERT_CHOICE or SINKHORN mode (a routing "
               "distribution per token)");
    if (output->profile && output->drift_profile)
        REJECT("give profile (to add this batch) or drift_profile (to judge it), not both");
    if (output->profile) return check_match(context, &router->info, output->profile, "profile");
    moevk_result r = check_match(context, &router->info, output->drift_profile, "drift_profile");
    if (r == MOEVK_SUCCESS && output->drift_profile->tokens == 0)
        REJECT("drift_profile holds no tokens: add calibration batches to it first");
    return r;
}

static uint64_t profile_words(const moevk_router *router, const moevk_route_output *output) {
    uint64_t E = router->info.num_experts;
    return PROFILE_PAIRS + (output->profile && profile_counts_pairs(&router->info) ? E * E : 0);
}

void route_profile_plan(moevk_router *router, const moevk_route_output *output, route_plan *plan,
                        transfer_plan *transfer) {
    const moevk_profile *profile = output->profile ? output->profile : output->drift_profile;
    if (!profile || plan->num_tokens == 0) return;
    uint32_t header[PROFILE_HEADER_WORDS] = {0};
    plan->flags |= FLAG_PROFILE;
    plan->profile_bins = profile->info.bins;
    if (profile->info.given_bounds) {
        plan->flags |= FLAG_PROFILE_BOUNDS;
        memcpy(header + PROFILE_GIVEN_LOWER, profile->info.lower, sizeof profile->info.lower);
        memcpy(header + PROFILE_GIVEN_UPPER, profile->info.upper, sizeof profile->info.upper);
    }
    if (output->drift_profile) {
        plan->flags |= FLAG_PROFILE_TAIL;
        float threshold = (float)moevk_profile_energy_p99(output->drift_profile);
        memcpy(header + PROFILE_TAIL_THRESHOLD, &threshold, 4);
    }
    if (output->profile && profile_counts_pairs(&router->info)) plan->flags |= FLAG_PROFILE_PAIRS;
    for (int q = 0; q < MOEVK_MEASURES; ++q) header[PROFILE_LEAST + q] = 0xFFFFFFFFu;
    transfer_upload(transfer, BINDING_PROFILE, header, sizeof header);
}

void route_profile_download(moevk_router *router, const moevk_route_output *output,
                            const route_plan *plan, transfer_plan *transfer) {
    if (plan->flags & FLAG_PROFILE)
        transfer_download(transfer, BINDING_PROFILE, NULL, profile_words(router, output) * 4);
}

static void add_batch(moevk_profile *profile, const uint32_t *counts_before, const uint32_t *words,
                      uint32_t valid_rows, int pairs) {
    moevk_profile_info *info = &profile->info;
    uint64_t E = info->num_experts;
    if (!info->given_bounds) { /* the first batch's bounds, as the device chose them */
        memcpy(info->lower, words + PROFILE_USED_LOWER, sizeof info->lower);
        memcpy(info->upper, words + PROFILE_USED_UPPER, sizeof info->upper);
        info->given_bounds = 1;
    }
    for (uint64_t e = 0; e < E; ++e) profile->usage[e] += counts_before[e];
    for (uint32_t q = 0; q < MOEVK_MEASURES; ++q) {
        const uint32_t *batch =
            words + PROFILE_HISTOGRAMS + q * PROFILE_HISTOGRAM_WORDS(PROFILE_MAX_BINS);
        uint64_t *total = profile_histogram(profile, q);
        for (uint32_t b = 0; b < info->bins + 2; ++b) total[b] += batch[b];
    }
    for (uint64_t i = 0; pairs && i < E * E; ++i)
        profile->co_selection[i] += words[PROFILE_PAIRS + i];
    profile->batches++;
    profile->tokens += valid_rows;
}

void route_profile_complete(moevk_router *router, const moevk_route_output *output,
                            const route_plan *plan, const uint32_t *expert_info,
                            moevk_route_stats *stats) {
    if (!output->profile && !output->drift_profile) return;
    uint32_t valid = plan->num_tokens - stats->nonfinite_rows - stats->masked_rows;
    /* A batch without valid rows ran no profile stage: nothing it downloaded is its own. */
    const uint32_t *words =
        valid ? transfer_downloaded(&router->pending_plan, BINDING_PROFILE) : NULL;
    if (output->profile) {
        if (words)
            add_batch(output->profile, expert_info, words, valid,
                      profile_counts_pairs(&router->info));
        else
            output->profile->batches++;
        return;
    }
    if (words) drift_judge(output->drift_profile, expert_info, words, valid, stats);
}
