/* drift.json: a batch judged against a routing profile, as `moevk route --profile` writes it. */
#ifndef MOEVK_CLI_DRIFT_JSON_H
#define MOEVK_CLI_DRIFT_JSON_H

#include "moevk.h"

/* Each statistic with its threshold and whether it passed it, the experts that moved most, and
 * "drift". 1 when written. */
int drift_json_write(const char *path, const moevk_route_stats *stats,
                     const moevk_drift_thresholds *thresholds);

#endif
