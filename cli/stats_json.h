/* stats.json: a route's statistics and the device's name, as `moevk route` and `moevk layer`
 * write them. */
#ifndef MOEVK_CLI_STATS_JSON_H
#define MOEVK_CLI_STATS_JSON_H

#include "moevk.h"

/* 1 when written. */
int stats_json_write(const char *path, const moevk_route_stats *stats, const char *device);

#endif
