/* Strict parsing of command-line numbers: the whole text must be the number. */
#ifndef MOEVK_CLI_OPTIONS_H
#define MOEVK_CLI_OPTIONS_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static inline int parse_float(const char *text, float *out) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (!*text || *end || errno) return 0;
    *out = (float)value;
    return 1;
}

static inline int parse_int(const char *text, long long low, long long high, long long *out) {
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (!*text || *end || errno || value < low || value > high) return 0;
    *out = value;
    return 1;
}

#endif
