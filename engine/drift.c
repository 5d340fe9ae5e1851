/* A batch judged against a routing profile (moevk_route_output.drift_profile), in double on the
 * host from the counts the device made: the Jensen-Shannon divergence of the experts' usage, each
 * measure's population stability index over ten bins of equal profile mass, the share of energies
 * past the profile's 99th percentile, and the experts whose share moved most. */
#include <math.h>
#include <stdint.h>

#include "internal.h"
#include "profile_object.h"

#define PSI_GROUPS 10
#define PSI_PSEUDO_COUNT 0.5 /* per group, so that an empty one has a finite logarithm */
#define LISTED 3

/* JSD(p, q) = (KL(p || m) + KL(q || m)) / 2, m = (p + q) / 2, in nats (0 log 0 = 0). */
static double usage_jsd(const uint64_t *profile, const uint32_t *batch, uint32_t E) {
    double profile_total = 0, batch_total = 0;
    for (uint32_t e = 0; e < E; ++e) {
        profile_total += (double)profile[e];
        batch_total += batch[e];
    }
    if (profile_total == 0 || batch_total == 0) return 0.0;
    double sum = 0.0;
    for (uint32_t e = 0; e < E; ++e) {
        double p = profile[e] / profile_total, q = batch[e] / batch_total, m = (p + q) / 2;
        if (p > 0) sum += p * log(p / m);
        if (q > 0) sum += q * log(q / m);
    }
    return sum / 2;
}

/* The bins of a histogram grouped at the profile's deciles: a bin belongs to the group of the
 * tenths of the profile's mass that the bins before it hold (so a bin holding more than a tenth
 * makes fewer groups); a last group without profile mass (bins past all of it) joins the one
 * before. */
static double psi(const uint64_t *profile, const uint32_t *batch, uint32_t words) {
    double profile_total = 0, batch_total = 0;
    for (uint32_t b = 0; b < words; ++b) {
        profile_total += (double)profile[b];
        batch_total += batch[b];
    }
    if (profile_total == 0 || batch_total == 0) return 0.0;
    double group_profile[PSI_GROUPS] = {0}, group_batch[PSI_GROUPS] = {0}, before = 0;
    int groups = 0, tenths_of_group = -1;
    for (uint32_t b = 0; b < words; ++b) {
        int tenths = 0;
        while (tenths < PSI_GROUPS - 1 && before >= (tenths + 1) * profile_total / PSI_GROUPS)
            ++tenths;
        if (tenths != tenths_of_group) {
            tenths_of_group = tenths;
            ++groups;
        }
        group_profile[groups - 1] += (double)profile[b];
        group_batch[groups - 1] += batch[b];
        before += (double)profile[b];
    }
    if (groups > 1 && group_profile[groups - 1] == 0) {
        group_batch[groups - 2] += group_batch[groups - 1];
        --groups;
    }
    double sum = 0.0;
    for (int g = 0; g < groups; ++g) {
        double p =
            (group_profile[g] + PSI_PSEUDO_COUNT) / (profile_total + PSI_PSEUDO_COUNT * groups);
        double q = (group_batch[g] + PSI_PSEUDO_COUNT) / (batch_total + PSI_PSEUDO_COUNT * groups);
        sum += (q - p) * log(q / p);
    }
    return sum;
}

/* The LISTED experts of largest change (sign +1: gains, -1: losses), largest first, lowest
 * index on ties. */
static void list_changes(const double *change, uint32_t E, int sign, uint32_t *experts,
                         double *shares) {
    for (int i = 0; i < LISTED; ++i) {
        experts[i] = UINT32_MAX;
        shares[i] = 0.0;
    }
    for (uint32_t e = 0; e < E; ++e) {
        double c = change[e] * sign;
        for (int i = 0; i < LISTED; ++i) {
            if (experts[i] != UINT32_MAX && !(c > shares[i] * sign)) continue;
            for (int j = LISTED - 1; j > i; --j) {
                experts[j] = experts[j - 1];
                shares[j] = shares[j - 1];
            }
            experts[i] = e;
            shares[i] = change[e];
            break;
        }
    }
}

void drift_judge(const moevk_profile *profile, const uint32_t *counts_before,
                 const uint32_t *device_profile, uint32_t valid_rows, moevk_route_stats *stats) {
    uint32_t E = profile->info.num_experts, words = profile->info.bins + 2;
    moevk_drift_thresholds thresholds = profile_thresholds(profile);
    stats->usage_jsd = usage_jsd(profile->usage, counts_before, E);
    for (uint32_t q = 0; q < MOEVK_MEASURES; ++q)
        stats->psi[q] =
            psi(profile_histogram(profile, q),
                device_profile + PROFILE_HISTOGRAMS + q * PROFILE_HISTOGRAM_WORDS(PROFILE_MAX_BINS),
                words);
    stats->energy_p99 = moevk_profile_energy_p99(profile);
    stats->energy_tail = (double)device_profile[PROFILE_TAIL_COUNT] / valid_rows;
    double change[MOEVK_MAX_EXPERTS] = {0}, profile_total = 0, batch_total = 0;
    for (uint32_t e = 0; e < E; ++e) {
        profile_total += (double)profile->usage[e];
        batch_total += counts_before[e];
    }
    for (uint32_t e = 0; e < E; ++e)
        change[e] = (batch_total ? counts_before[e] / batch_total : 0.0) -
                    (profile_total ? profile->usage[e] / profile_total : 0.0);
    list_changes(change, E, 1, stats->gained_experts, stats->gained_shares);
    list_changes(change, E, -1, stats->lost_experts, stats->lost_shares);
    /* Sampling alone gives a batch of N assignments a JSD of about (E - 1) / (8 N). */
    double noise_floor = batch_total > 0 ? 0.75 * (E - 1) / batch_total : 0.0;
    stats->usage_jsd_threshold = fmax(thresholds.usage_jsd, noise_floor);
    stats->drift_judged = valid_rows >= thresholds.min_tokens;
    if (!stats->drift_judged) return;
    uint32_t drift = 0;
    if (stats->usage_jsd > stats->usage_jsd_threshold) drift |= MOEVK_DRIFT_USAGE;
    for (uint32_t q = 0; q < MOEVK_MEASURES; ++q)
        if (stats->psi[q] > thresholds.psi) drift |= MOEVK_DRIFT_PSI(q);
    if (stats->energy_tail > thresholds.energy_tail) drift |= MOEVK_DRIFT_ENERGY_TAIL;
    stats->drift = drift;
}
