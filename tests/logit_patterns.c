/* logit_patterns.h */
#include "logit_patterns.h"

#include <math.h>

#include "harness.h"

float pattern_logit(logit_pattern pattern, uint32_t t, uint32_t e) {
    switch (pattern) {
    case TIES: return (float)(rng_u32() % 3) * 0.5f;
    case MASKED:
        if (t % 17 == 5) return -INFINITY;
        return rng_u32() % 3 == 0 ? -INFINITY : 2.0f * rng_normal();
    case NONFINITE:
        if (t % 13 == 3 && e == t % 7) return NAN;
        if (t % 19 == 7 && e == 0) return INFINITY;
        return 2.0f * rng_normal();
    case HUGE_VALUES: {
        uint32_t r = rng_u32() % 4;
        return r == 0 ? 1e30f : r == 1 ? -1e30f : rng_normal();
    }
    case RANDOM: break;
    }
    return 2.0f * rng_normal();
}
