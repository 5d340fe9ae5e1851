#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

static moevk_context *shared_context;
static int current_failed;
static const char *current_name;
static uint64_t run_seed;
static uint32_t rng_state[4];

static unsigned messages_seen;

static void on_message(void *user, int is_error, const char *message) {
    (void)user;
    ++messages_seen;
    printf("  validation %s: %s\n", is_error ? "error" : "warning", message);
}

moevk_context *test_context(void) { return shared_context; }

uint32_t test_selection_lanes(void) {
    moevk_device_info device;
    moevk_device_info_init(&device);
    moevk_context_device_info(test_context(), &device);
    return device.selection_lanes;
}

int test_validation(void) {
    /* Off only for the LeakSanitizer pass: the layer's own one-off allocations are unloaded with it
     * and cannot be told apart from moevk's. */
    const char *text = getenv("MOEVK_TEST_VALIDATION");
    return !(text && strcmp(text, "0") == 0);
}
uint64_t test_seed(void) { return run_seed; }
int test_failed(void) { return current_failed; }

void test_fail(const char *file, int line, const char *format, ...) {
    if (current_failed++ >= 10) return; /* the first mismatches tell the story */
    va_list args;
    va_start(args, format);
    printf("  %s:%d: ", file, line);
    vprintf(format, args);
    printf("  [test %s, MOEVK_TEST_SEED=%llu]\n", current_name, (unsigned long long)run_seed);
    va_end(args);
}

static uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

uint32_t rng_u32(void) {
    uint32_t *s = rng_state;
    uint32_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
}

float rng_uniform(float low, float high) {
    return low + (high - low) * (float)((rng_u32() >> 8) * (1.0 / 16777216.0));
}

float rng_normal(void) {
    double u1 = ((rng_u32() >> 8) + 0.5) / 16777216.0, u2 = (rng_u32() >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void seed_for(const char *name) {
    uint64_t h = run_seed ^ 0x9E3779B97F4A7C15ull;
    for (const char *c = name; *c; ++c) h = (h ^ (unsigned char)*c) * 0x100000001B3ull;
    for (int i = 0; i < 4; ++i) {
        h += 0x9E3779B97F4A7C15ull;
        uint64_t z = h;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        rng_state[i] = (uint32_t)(z ^ (z >> 31)) | 1u;
    }
}

int test_main(const test_case *tests, size_t count, int argc, char **argv) {
    const char *seed_text = getenv("MOEVK_TEST_SEED");
    run_seed = seed_text ? strtoull(seed_text, NULL, 10) : (uint64_t)time(NULL);
    const char *filter = argc > 1 ? argv[1] : NULL;
    const char *staging = getenv("MOEVK_TEST_STAGING");
    moevk_context_info info = {
        .validation = test_validation(),
        .message_fn = on_message,
        .memory_mode = staging && !strcmp(staging, "1") ? MOEVK_MEMORY_STAGING : MOEVK_MEMORY_AUTO};
    moevk_result r = moevk_context_create(&info, &shared_context);
    if (r != MOEVK_SUCCESS) {
        printf("cannot create a context with validation: %s\n0 passed, 1 failed\n",
               moevk_result_string(r));
        return 1;
    }
    moevk_device_info device = {0};
    moevk_context_device_info(shared_context, &device);
    printf("# device: %s (%s), subgroup size %u, validation %s, %s memory, seed %llu\n",
           device.name, device.driver_info, device.subgroup_size, test_validation() ? "on" : "OFF",
           device.host_visible_device_memory ? "mapped" : "staged", (unsigned long long)run_seed);
    const char *expected = getenv("MOEVK_TEST_EXPECT_SUBGROUP");
    if (expected && (uint32_t)atoi(expected) != device.subgroup_size) {
        printf("the device runs subgroup size %u, not %s as this run asks\n0 passed, 1 failed\n",
               device.subgroup_size, expected);
        moevk_context_destroy(shared_context);
        return 1;
    }
    int passed = 0, failed = 0;
    for (size_t i = 0; i < count; ++i) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        current_name = tests[i].name;
        current_failed = 0;
        seed_for(tests[i].name);
        uint32_t messages_before = moevk_context_validation_messages(shared_context);
        if (tests[i].run_row)
            tests[i].run_row(tests[i].row);
        else
            tests[i].run();
        uint32_t messages = moevk_context_validation_messages(shared_context) - messages_before;
        if (messages) test_fail(__FILE__, __LINE__, "%u validation messages", messages);
        printf("%s %s\n", current_failed ? "FAIL" : "ok  ", tests[i].name);
        fflush(stdout);
        if (current_failed)
            ++failed;
        else
            ++passed;
    }
    unsigned messages_in_tests = messages_seen;
    moevk_context_destroy(shared_context);
    if (messages_seen != messages_in_tests) {
        printf("FAIL validation messages while destroying the context\n");
        ++failed;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

size_t read_text_file(const char *path, char *text, size_t size) {
    FILE *file = fopen(path, "r");
    size_t n = file ? fread(text, 1, size - 1, file) : 0;
    if (file) fclose(file);
    text[n] = 0;
    return n;
}

int same_file_bytes(const char *a, const char *b) {
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    int same = x && y;
    while (same) {
        int c = fgetc(x), d = fgetc(y);
        same = c == d;
        if (c == EOF) break;
    }
    if (x) fclose(x);
    if (y) fclose(y);
    return same;
}

int test_main_with_table(const void *rows, size_t row_count, size_t row_size,
                         void (*run_row)(const void *row), const test_case *functions,
                         size_t function_count, int argc, char **argv) {
    test_case *tests = calloc(row_count + function_count, sizeof *tests);
    if (!tests) {
        printf("out of memory\n0 passed, 1 failed\n");
        return 1;
    }
    for (size_t i = 0; i < row_count; ++i) {
        const void *row = (const char *)rows + i * row_size;
        tests[i] = (test_case){*(const char *const *)row, NULL, run_row, row};
    }
    for (size_t i = 0; i < function_count; ++i) tests[row_count + i] = functions[i];
    int result = test_main(tests, row_count + function_count, argc, argv);
    free(tests);
    return result;
}

const char *test_temp_path(const char *name) {
    static char path[1024];
    const char *dir = getenv("TMPDIR");
    if (!dir) dir = getenv("TEMP"); /* Windows (and Wine) */
    if (!dir) dir = "/tmp";
    snprintf(path, sizeof path, "%s/moevk-%llx-%s", dir, (unsigned long long)test_seed(), name);
    return path;
}
