/* A small test harness: a table of named tests, one shared context with the validation layer
 * (synchronization validation on), seeded random inputs, and a closing "N passed, N failed". */
#ifndef MOEVK_TEST_HARNESS_H
#define MOEVK_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "moevk.h"

typedef struct test_case {
    const char *name;
    void (*run)(void);
    /* Or a row of a case table, run by run_row (tests/test_routing.c's are the model). */
    void (*run_row)(const void *row);
    const void *row;
} test_case;

/* The table entry of the test function test_NAME, registered as NAME: written once. */
#define TEST(name)                                                                                 \
    { #name, test_##name, NULL, NULL }

/* The context all tests of a binary share, created with validation on. */
moevk_context *test_context(void);
/* Whether tests run with the validation layer (always, except MOEVK_TEST_VALIDATION=0). */
int test_validation(void);
/* The lanes of the test context's device's subgroup kernel of scores and top-k
 * (moevk_device_info.selection_lanes; 0: it runs none). */
uint32_t test_selection_lanes(void);
/* Marks the running test failed with a message (printed with the test's seed). */
void test_fail(const char *file, int line, const char *format, ...)
#ifdef __MINGW32__ /* MinGW's C99 printf (__USE_MINGW_ANSI_STDIO) */
    __attribute__((format(gnu_printf, 3, 4)));
#else
    __attribute__((format(printf, 3, 4)));
#endif
int test_failed(void);
int test_main(const test_case *tests, size_t count, int argc, char **argv);
/* test_main over a case table and the tests written as functions: each row (of row_size bytes,
 * its first member the test's name, a const char *) runs as run_row(row), then the functions. */
int test_main_with_table(const void *rows, size_t row_count, size_t row_size,
                         void (*run_row)(const void *row), const test_case *functions,
                         size_t function_count, int argc, char **argv);

#define CHECK(condition, ...)                                                                      \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            test_fail(__FILE__, __LINE__, __VA_ARGS__);                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        moevk_result check_result_ = (call);                                                       \
        CHECK(check_result_ == MOEVK_SUCCESS, "%s -> %s (%s)", #call,                              \
              moevk_result_string(check_result_), moevk_context_last_error(test_context()));       \
    } while (0)

/* Random numbers: xoshiro128** seeded per test from the run's seed and the test's name. */
uint32_t rng_u32(void);
float rng_uniform(float low, float high);
float rng_normal(void);
uint64_t test_seed(void);

/* A path for a temporary file of this test run (in TMPDIR, TEMP or /tmp; the name and the run's
 * seed make it unique); static storage, overwritten by the next call. */
const char *test_temp_path(const char *name);
/* Reads a text file into text (at most size - 1 bytes, NUL-terminated; "" when it cannot be
 * read) and returns how many bytes it read. */
size_t read_text_file(const char *path, char *text, size_t size);
/* 1 when both files exist and hold the same bytes. */
int same_file_bytes(const char *a, const char *b);

#endif
