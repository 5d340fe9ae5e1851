/* The file readers' one-line errors: fail(error, size, format, ...) writes the message and
 * returns 0, so that a check reads `return fail(...)`. */
#ifndef MOEVK_CLI_FAIL_H
#define MOEVK_CLI_FAIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __MINGW32__ /* MinGW's C99 printf (__USE_MINGW_ANSI_STDIO) */
static inline int fail(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(gnu_printf, 3, 4)));
#else
static inline int fail(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
#endif
static inline int fail(char *error, size_t error_size, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
    return 0;
}

#endif
