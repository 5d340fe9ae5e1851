/* The kinds of router logits the per-token tests draw (test_token_scores.c, test_profile.c):
 * normal, ties, -inf experts and rows, NaN and +inf rows, huge values. */
#ifndef MOEVK_TEST_LOGIT_PATTERNS_H
#define MOEVK_TEST_LOGIT_PATTERNS_H

#include <stdint.h>

typedef enum logit_pattern { RANDOM, TIES, MASKED, NONFINITE, HUGE_VALUES } logit_pattern;

/* Token t's logit of expert e, fresh from the test's random numbers. */
float pattern_logit(logit_pattern pattern, uint32_t t, uint32_t e);

#endif
