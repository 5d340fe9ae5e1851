/* A monotonic wall clock for moevk's programs (the command line, the benchmark), the same on
 * POSIX (CLOCK_MONOTONIC) and Windows (QueryPerformanceCounter: MinGW's clock_gettime would
 * need winpthreads). Header only: the library itself keeps no clock of the host's. */
#ifndef MOEVK_PORTABLE_MONOTONIC_CLOCK_H
#define MOEVK_PORTABLE_MONOTONIC_CLOCK_H

#include <time.h>
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#endif

/* Seconds since an arbitrary start, never going back. */
static inline double monotonic_seconds(void) {
#ifdef _WIN32
    LARGE_INTEGER now, frequency;
    QueryPerformanceCounter(&now);
    QueryPerformanceFrequency(&frequency);
    return (double)now.QuadPart / (double)frequency.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#endif
}

#endif
