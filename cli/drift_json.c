/* drift_json.h */
#include "drift_json.h"

#include <stdio.h>

static const char *const MEASURE_NAMES[MOEVK_MEASURES] = {"entropy", "top1", "margin", "logsumexp",
                                                          "energy"};

static void statistic(FILE *file, const char *name, double value, double threshold, uint32_t bit,
                      uint32_t drift) {
    fprintf(file, "    \"%s\": {\"value\": %.9g, \"threshold\": %.9g, \"passed\": %s},\n", name,
            value, threshold, (drift & bit) ? "true" : "false");
}

static void experts(FILE *file, const char *name, const uint32_t *ids, const double *shares) {
    fprintf(file, "  \"%s\": [", name);
    for (int i = 0, first = 1; i < 3; ++i) {
        if (ids[i] == UINT32_MAX) continue;
        fprintf(file, "%s{\"expert\": %u, \"share_change\": %.9g}", first ? "" : ", ", ids[i],
                shares[i]);
        first = 0;
    }
    fprintf(file, "],\n");
}

int drift_json_write(const char *path, const moevk_route_stats *s,
                     const moevk_drift_thresholds *t) {
    FILE *file = fopen(path, "w");
    if (!file) return 0;
    fprintf(file, "{\n  \"judged\": %s,\n  \"min_tokens\": %u,\n  \"statistics\": {\n",
            s->drift_judged ? "true" : "false", t->min_tokens);
    statistic(file, "usage_jsd", s->usage_jsd, s->usage_jsd_threshold, MOEVK_DRIFT_USAGE, s->drift);
    for (int q = 0; q < MOEVK_MEASURES; ++q) {
        char name[32];
        snprintf(name, sizeof name, "psi_%s", MEASURE_NAMES[q]);
        statistic(file, name, s->psi[q], t->psi, MOEVK_DRIFT_PSI(q), s->drift);
    }
    fprintf(file,
            "    \"energy_tail\": {\"value\": %.9g, \"threshold\": %.9g, \"passed\": %s, "
            "\"energy_p99\": %.9g}\n  },\n",
            s->energy_tail, t->energy_tail, (s->drift & MOEVK_DRIFT_ENERGY_TAIL) ? "true" : "false",
            s->energy_p99);
    experts(file, "gained", s->gained_experts, s->gained_shares);
    experts(file, "lost", s->lost_experts, s->lost_shares);
    fprintf(file, "  \"drift\": %s\n}\n", s->drift ? "true" : "false");
    return fclose(file) == 0;
}
