/*
 * moevk_testing.h: what tests of moevk, and of applications' error paths, use and nothing else
 * needs. Include it after moevk.h.
 */
#ifndef MOEVK_TESTING_H
#define MOEVK_TESTING_H

#include "moevk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fault injection, for tests of the application's (and moevk's) error paths; pass it as
 * moevk_context_info.test_hooks. Zero: off. (Failing allocations can also be injected through
 * moevk_context_info.allocator, which the driver shares.) */
struct moevk_test_hooks {
    uint32_t fail_host_allocation;   /* N: moevk's own Nth host allocation for the context (the
                                        context itself is the first) fails */
    uint32_t fail_device_allocation; /* N: the context's Nth device memory allocation fails with
                                        MOEVK_ERROR_OUT_OF_DEVICE_MEMORY */
    uint32_t lose_device_at_submit;  /* N: the context's Nth queue submission reports
                                        VK_ERROR_DEVICE_LOST */
};

#ifdef __cplusplus
}
#endif
#endif /* MOEVK_TESTING_H */
