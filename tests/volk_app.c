/* volk for the test applications, compiled into them: their own process-wide loader. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wcast-function-type"
#endif
#include <volk.c>
