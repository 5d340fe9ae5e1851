/* moevk_history: per-step router reports in a ring buffer, the collapse and oscillation
 * warnings, and the CSV and JSON writers. Host only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moevk.h"
#include "sized.h"

struct moevk_history {
    moevk_history_info info;
    uint32_t first, count;      /* ring: the oldest step held, and how many */
    moevk_step_report *reports; /* [max_steps] */
    uint32_t *counts;           /* [max_steps, 2E]: before drops, then after */
    double *expert_loss;        /* [max_steps, E] */
};

moevk_result moevk_history_create(const moevk_history_info *caller_info, moevk_history **out) {
    if (!out || !caller_info) return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    moevk_history_info full;
    moevk_history_info_init(&full);
    moevk_result read = SIZED_READ(NULL, moevk_history_info, caller_info, &full);
    if (read != MOEVK_SUCCESS) return read;
    const moevk_history_info *info = &full;
    if (info->num_experts < 1 || info->num_experts > MOEVK_MAX_EXPERTS ||
        !(info->collapse_share >= 0.0f && info->collapse_share <= 1.0f))
        return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_history *history = calloc(1, sizeof *history);
    if (!history) return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    history->info = *info;
    moevk_history_info *options = &history->info;
    if (!options->max_steps) options->max_steps = 1024;
    if (options->collapse_share == 0.0f) options->collapse_share = 0.5f;
    if (!options->collapse_steps) options->collapse_steps = 20;
    if (!options->oscillation_steps) options->oscillation_steps = 20;
    history->reports = calloc(options->max_steps, sizeof *history->reports);
    history->counts = calloc((size_t)options->max_steps * 2 * info->num_experts, sizeof(uint32_t));
    history->expert_loss = calloc((size_t)options->max_steps * info->num_experts, sizeof(double));
    if (!history->reports || !history->counts || !history->expert_loss) {
        moevk_history_destroy(history);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    *out = history;
    return MOEVK_SUCCESS;
}

void moevk_history_destroy(moevk_history *history) {
    if (!history) return;
    free(history->reports);
    free(history->counts);
    free(history->expert_loss);
    free(history);
}

static uint32_t slot_of(const moevk_history *history, uint32_t i) {
    return (history->first + i) % history->info.max_steps;
}

moevk_result moevk_history_add(moevk_history *history, uint32_t step,
                               const moevk_route_stats *stats, const uint32_t *counts_before,
                               const uint32_t *counts) {
    if (!history || !stats || !counts_before || !counts) return MOEVK_ERROR_INVALID_ARGUMENT;
    uint32_t E = history->info.num_experts;
    uint32_t slot;
    if (history->count < history->info.max_steps) {
        slot = slot_of(history, history->count++);
    } else {
        slot = history->first;
        history->first = (history->first + 1) % history->info.max_steps;
    }
    moevk_step_report *report = &history->reports[slot];
    moevk_step_report_init(report);
    report->step = step;
    report->entropy = stats->entropy;
    report->z_loss = stats->z_loss;
    report->mean_logsumexp = stats->mean_logsumexp;
    report->unrouted_tokens = stats->unrouted_tokens;
    report->aux_loss = stats->aux_loss;
    report->drop_fraction = stats->drop_fraction;
    report->nonfinite_rows = stats->nonfinite_rows;
    report->masked_rows = stats->masked_rows;
    /* A caller's stats from before moevk 0.6 end before the drift. */
    if (CALLER_SIZE(moevk_route_stats, stats) >= sizeof(moevk_route_stats)) {
        report->drift = stats->drift;
        report->drift_judged = stats->drift_judged;
        report->usage_jsd = stats->usage_jsd;
        for (int q = 0; q < MOEVK_MEASURES; ++q)
            report->max_psi = fmax(report->max_psi, stats->psi[q]);
        report->energy_tail = stats->energy_tail;
    }
    double total = 0.0, squares = 0.0;
    for (uint32_t e = 0; e < E; ++e) {
        total += counts_before[e];
        squares += (double)counts_before[e] * counts_before[e];
        if (counts_before[e] > counts_before[report->top_expert]) report->top_expert = e;
    }
    if (total > 0.0) {
        double mean = total / E;
        report->imbalance = counts_before[report->top_expert] / mean;
        report->load_cv = sqrt(fmax(squares / E - mean * mean, 0.0)) / mean;
        report->top_share = counts_before[report->top_expert] / total;
    }
    uint32_t *stored = history->counts + (size_t)slot * 2 * E;
    memcpy(stored, counts_before, E * sizeof *stored);
    memcpy(stored + E, counts, E * sizeof *stored);
    memset(history->expert_loss + (size_t)slot * E, 0, E * sizeof(double));
    return MOEVK_SUCCESS;
}

moevk_result moevk_history_set_expert_loss(moevk_history *history, const double *expert_loss) {
    if (!history || !expert_loss || history->count == 0) return MOEVK_ERROR_INVALID_ARGUMENT;
    uint32_t slot = slot_of(history, history->count - 1), E = history->info.num_experts;
    memcpy(history->expert_loss + (size_t)slot * E, expert_loss, E * sizeof(double));
    history->reports[slot].has_expert_loss = 1;
    return MOEVK_SUCCESS;
}

moevk_result moevk_history_get_expert_loss(const moevk_history *history, uint32_t i,
                                           double *expert_loss) {
    if (!history || !expert_loss || i >= history->count) return MOEVK_ERROR_INVALID_ARGUMENT;
    uint32_t E = history->info.num_experts;
    memcpy(expert_loss, history->expert_loss + (size_t)slot_of(history, i) * E, E * sizeof(double));
    return MOEVK_SUCCESS;
}

uint32_t moevk_history_count(const moevk_history *history) { return history ? history->count : 0; }

moevk_result moevk_history_get(const moevk_history *history, uint32_t i, moevk_step_report *report,
                               uint32_t *counts_before, uint32_t *counts) {
    if (!history || i >= history->count) return MOEVK_ERROR_INVALID_ARGUMENT;
    uint32_t slot = slot_of(history, i), E = history->info.num_experts;
    const uint32_t *stored = history->counts + (size_t)slot * 2 * E;
    if (report) SIZED_WRITE(moevk_step_report, report, &history->reports[slot]);
    if (counts_before) memcpy(counts_before, stored, E * sizeof *stored);
    if (counts) memcpy(counts, stored + E, E * sizeof *stored);
    return MOEVK_SUCCESS;
}

static const moevk_step_report *recent(const moevk_history *history, uint32_t back) {
    return &history->reports[slot_of(history, history->count - 1 - back)];
}

uint32_t moevk_history_warnings(const moevk_history *history) {
    if (!history || history->count == 0) return 0;
    const moevk_history_info *info = &history->info;
    uint32_t warnings = 0;
    if (history->count >= info->collapse_steps) {
        uint32_t held = 0;
        while (held < info->collapse_steps &&
               recent(history, held)->top_share > info->collapse_share &&
               recent(history, held)->top_expert == recent(history, 0)->top_expert)
            ++held;
        if (held == info->collapse_steps) warnings |= MOEVK_WARNING_COLLAPSE;
    }
    uint32_t window = info->oscillation_steps;
    if (history->count >= window && window >= 2) {
        uint32_t changes = 0, unbalanced = 1;
        for (uint32_t back = 0; back + 1 < window; ++back) {
            changes += recent(history, back)->top_expert != recent(history, back + 1)->top_expert;
            unbalanced = unbalanced && recent(history, back)->imbalance > 1.5;
        }
        unbalanced = unbalanced && recent(history, window - 1)->imbalance > 1.5;
        if (unbalanced && 2 * changes >= window) warnings |= MOEVK_WARNING_OSCILLATION;
    }
    if (recent(history, 0)->drift) warnings |= MOEVK_WARNING_DRIFT;
    return warnings;
}

/* An expert's dropped share of its selections (0 when it had none). */
static double drop_rate(const uint32_t *counts, uint32_t E, uint32_t e) {
    return counts[e] ? (double)(counts[e] - counts[E + e]) / counts[e] : 0.0;
}

moevk_result moevk_history_write_csv(const moevk_history *history, const char *path) {
    if (!history || !path) return MOEVK_ERROR_INVALID_ARGUMENT;
    FILE *file = fopen(path, "w");
    if (!file) return MOEVK_ERROR_INVALID_ARGUMENT;
    uint32_t E = history->info.num_experts;
    fprintf(file, "step,entropy,z_loss,mean_logsumexp,aux_loss,drop_fraction,imbalance,load_cv,"
                  "top_expert,top_share,nonfinite_rows,masked_rows,unrouted_tokens,drift,"
                  "usage_jsd,max_psi,energy_tail");
    static const char *const columns[] = {"before", "kept", "overflow", "drop_rate", "loss"};
    for (int c = 0; c < 5; ++c)
        for (uint32_t e = 0; e < E; ++e) fprintf(file, ",%s_%u", columns[c], e);
    fprintf(file, "\n");
    for (uint32_t i = 0; i < history->count; ++i) {
        uint32_t slot = slot_of(history, i);
        const moevk_step_report *r = &history->reports[slot];
        fprintf(file, "%u,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%u,%.9g,%u,%u,%u", r->step, r->entropy,
                r->z_loss, r->mean_logsumexp, r->aux_loss, r->drop_fraction, r->imbalance,
                r->load_cv, r->top_expert, r->top_share, r->nonfinite_rows, r->masked_rows,
                r->unrouted_tokens);
        /* Drift: its bits, or empty where the step was not judged. */
        if (r->drift_judged)
            fprintf(file, ",%u,%.9g,%.9g,%.9g", r->drift, r->usage_jsd, r->max_psi, r->energy_tail);
        else
            fprintf(file, ",,,,");
        const uint32_t *counts = history->counts + (size_t)slot * 2 * E;
        for (uint32_t e = 0; e < 2 * E; ++e) fprintf(file, ",%u", counts[e]);
        for (uint32_t e = 0; e < E; ++e) fprintf(file, ",%u", counts[e] - counts[E + e]);
        for (uint32_t e = 0; e < E; ++e) fprintf(file, ",%.9g", drop_rate(counts, E, e));
        const double *loss = history->expert_loss + (size_t)slot * E;
        for (uint32_t e = 0; e < E; ++e) {
            if (r->has_expert_loss)
                fprintf(file, ",%.9g", loss[e]);
            else
                fprintf(file, ",");
        }
        fprintf(file, "\n");
    }
    return fclose(file) == 0 ? MOEVK_SUCCESS : MOEVK_ERROR_INVALID_ARGUMENT;
}

static void write_counts_json(FILE *file, const uint32_t *counts, uint32_t E) {
    fprintf(file, "[");
    for (uint32_t e = 0; e < E; ++e) fprintf(file, e ? ", %u" : "%u", counts[e]);
    fprintf(file, "]");
}

moevk_result moevk_history_write_json(const moevk_history *history, const char *path) {
    if (!history || !path) return MOEVK_ERROR_INVALID_ARGUMENT;
    FILE *file = fopen(path, "w");
    if (!file) return MOEVK_ERROR_INVALID_ARGUMENT;
    uint32_t E = history->info.num_experts;
    fprintf(file, "{\n  \"num_experts\": %u,\n  \"warnings\": %u,\n  \"steps\": [", E,
            moevk_history_warnings(history));
    for (uint32_t i = 0; i < history->count; ++i) {
        uint32_t slot = slot_of(history, i);
        const moevk_step_report *r = &history->reports[slot];
        const uint32_t *counts = history->counts + (size_t)slot * 2 * E;
        fprintf(file,
                "%s\n    {\"step\": %u, \"entropy\": %.9g, \"z_loss\": %.9g, "
                "\"mean_logsumexp\": %.9g, \"aux_loss\": %.9g, \"drop_fraction\": %.9g, "
                "\"imbalance\": %.9g, \"load_cv\": %.9g, \"top_expert\": %u, "
                "\"top_share\": %.9g, \"nonfinite_rows\": %u, \"masked_rows\": %u, "
                "\"unrouted_tokens\": %u, ",
                i ? "," : "", r->step, r->entropy, r->z_loss, r->mean_logsumexp, r->aux_loss,
                r->drop_fraction, r->imbalance, r->load_cv, r->top_expert, r->top_share,
                r->nonfinite_rows, r->masked_rows, r->unrouted_tokens);
        if (r->drift_judged)
            fprintf(file,
                    "\"drift\": %u, \"usage_jsd\": %.9g, \"max_psi\": %.9g, "
                    "\"energy_tail\": %.9g, ",
                    r->drift, r->usage_jsd, r->max_psi, r->energy_tail);
        else
            fprintf(file, "\"drift\": null, ");
        fprintf(file, "\"before\": ");
        write_counts_json(file, counts, E);
        fprintf(file, ", \"kept\": ");
        write_counts_json(file, counts + E, E);
        fprintf(file, ", \"overflow\": [");
        for (uint32_t e = 0; e < E; ++e)
            fprintf(file, e ? ", %u" : "%u", counts[e] - counts[E + e]);
        fprintf(file, "], \"drop_rate\": [");
        for (uint32_t e = 0; e < E; ++e)
            fprintf(file, e ? ", %.9g" : "%.9g", drop_rate(counts, E, e));
        fprintf(file, "], \"expert_loss\": ");
        if (r->has_expert_loss) {
            const double *loss = history->expert_loss + (size_t)slot * E;
            fprintf(file, "[");
            for (uint32_t e = 0; e < E; ++e) fprintf(file, e ? ", %.9g" : "%.9g", loss[e]);
            fprintf(file, "]");
        } else {
            fprintf(file, "null");
        }
        fprintf(file, "}");
    }
    fprintf(file, "\n  ]\n}\n");
    return fclose(file) == 0 ? MOEVK_SUCCESS : MOEVK_ERROR_INVALID_ARGUMENT;
}
