/* volk for the bench itself, compiled into the executable: the bench is an application with
 * its own process-wide loader, beside the copy inside libmoevk that never touches globals. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wcast-function-type"
#endif
#include <volk.c>
