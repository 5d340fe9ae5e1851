/* libFuzzer target: a routing profile's JSON (moevk_profile_parse) on arbitrary bytes. It must
 * refuse with a message, or give a profile whose counts agree, never crash or leak. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "moevk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moevk_profile *profile = NULL;
    char error[256];
    error[0] = 0;
    moevk_result r = moevk_profile_parse((const char *)data, size, &profile, error, sizeof error);
    if (r != MOEVK_SUCCESS) {
        if (profile || (r == MOEVK_ERROR_INVALID_ARGUMENT && !error[0])) __builtin_trap();
        return 0;
    }
    moevk_profile_info info;
    moevk_profile_info_init(&info);
    moevk_profile_get_info(profile, &info);
    if (info.num_experts < 1 || info.num_experts > MOEVK_MAX_EXPERTS || info.bins < 1 ||
        info.bins > MOEVK_PROFILE_MAX_BINS)
        __builtin_trap();
    uint64_t *counts = malloc((info.bins + 2) * sizeof *counts);
    for (int q = 0; counts && q < MOEVK_MEASURES; ++q) {
        uint64_t total = 0;
        moevk_profile_get_histogram(profile, (moevk_measure)q, counts);
        for (uint32_t b = 0; b < info.bins + 2; ++b) total += counts[b];
        if (total != moevk_profile_tokens(profile)) __builtin_trap(); /* the loader checked it */
    }
    double p99 = moevk_profile_energy_p99(profile);
    if (moevk_profile_tokens(profile) > 0 && !isfinite(p99)) __builtin_trap();
    free(counts);
    moevk_profile_destroy(profile);
    return 0;
}
