/* stats_json.h */
#include "stats_json.h"

#include <stdio.h>

int stats_json_write(const char *path, const moevk_route_stats *s, const char *device) {
    FILE *file = fopen(path, "w");
    if (!file) return 0;
    fprintf(file,
            "{\n  \"aux_loss\": %.9g,\n  \"z_loss\": %.9g,\n  \"entropy\": %.9g,\n"
            "  \"drop_fraction\": %.9g,\n  \"nonfinite_rows\": %u,\n  \"masked_rows\": %u,\n"
            "  \"assignments\": %llu,\n  \"dropped\": %llu,\n  \"capacity\": %u,\n"
            "  \"dispatched_rows\": %u,\n  \"unrouted_tokens\": %u,\n"
            "  \"mean_logsumexp\": %.9g,\n  \"sinkhorn_iterations\": %u,\n"
            "  \"sinkhorn_error\": %.9g,\n  \"device\": \"",
            s->aux_loss, s->z_loss, s->entropy, s->drop_fraction, s->nonfinite_rows, s->masked_rows,
            (unsigned long long)s->assignments, (unsigned long long)s->dropped, s->capacity,
            s->dispatched_rows, s->unrouted_tokens, s->mean_logsumexp, s->sinkhorn_iterations,
            (double)s->sinkhorn_error);
    for (const char *c = device; *c; ++c) {
        if (*c == '"' || *c == '\\') fputc('\\', file);
        if ((unsigned char)*c >= 0x20) fputc(*c, file);
    }
    fprintf(file, "\"\n}\n");
    return fclose(file) == 0;
}
