/* The safetensors reader (cli/safetensors.c): a valid file's tensors by name, dtype, shape and
 * bytes, from memory and from disk; each way a file can be wrong refused with a message naming
 * the tensor and the problem; and random damage to a valid file never read past it (the
 * sanitizer pass runs this too; tests/fuzz/fuzz_safetensors.c goes further). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "safetensors.h"

/* A file: the header's length (8 bytes, little-endian), the header, then `data`. */
static unsigned char *make_file(const char *header, const void *data, size_t data_size,
                                size_t *size) {
    size_t header_size = strlen(header);
    *size = 8 + header_size + data_size;
    unsigned char *file = malloc(*size);
    if (!file) return NULL;
    for (int i = 0; i < 8; ++i) file[i] = (unsigned char)((uint64_t)header_size >> (8 * i));
    memcpy(file + 8, header, header_size);
    if (data_size) memcpy(file + 8 + header_size, data, data_size);
    return file;
}

/* Three tensors of the three dtypes, listed out of their data order, and metadata. */
static const char VALID[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b.weight\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"c\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[32,36]}}";
#define VALID_DATA 36

static void test_a_valid_file_is_read_by_name(void) {
    unsigned char data[VALID_DATA];
    for (int i = 0; i < VALID_DATA; ++i) data[i] = (unsigned char)(i * 7 + 1);
    size_t size;
    unsigned char *bytes = make_file(VALID, data, sizeof data, &size);
    CHECK(bytes, "out of memory");
    safetensors_file file;
    char error[256] = "";
    int ok = safetensors_parse(bytes, size, &file, error, sizeof error);
    const model_tensor *a = ok ? safetensors_find(&file, "a.weight") : NULL;
    const model_tensor *b = ok ? safetensors_find(&file, "b.weight") : NULL;
    const model_tensor *c = ok ? safetensors_find(&file, "c") : NULL;
    int shapes = a && b && c && a->dtype == MODEL_F32 && a->ndim == 2 && a->shape[0] == 2 &&
                 a->shape[1] == 3 && a->count == 6 && b->dtype == MODEL_F16 && b->ndim == 1 &&
                 b->count == 4 && c->dtype == MODEL_BF16 && c->shape[1] == 2;
    const unsigned char *at = bytes + 8 + strlen(VALID);
    int data_ok = shapes && a->data == at && b->data == at + 24 && c->data == at + 32 &&
                  a->bytes == 24 && b->bytes == 8 && c->bytes == 4;
    int missing = ok && safetensors_find(&file, "d") == NULL && file.count == 3;
    if (ok) safetensors_close(&file);
    free(bytes);
    CHECK(ok, "a valid file refused: %s", error);
    CHECK(shapes, "dtypes or shapes read wrong");
    CHECK(data_ok, "tensors point at the wrong bytes");
    CHECK(missing, "a missing name was found, or the metadata counted as a tensor");
}

static void test_a_file_on_disk_is_mapped(void) {
    float values[6] = {1, 2, 3, 4, 5, 6};
    unsigned char data[VALID_DATA] = {0};
    memcpy(data, values, sizeof values);
    size_t size;
    unsigned char *bytes = make_file(VALID, data, sizeof data, &size);
    CHECK(bytes, "out of memory");
    char path[] = "/tmp/moevk_test_safetensors_XXXXXX";
    int fd = mkstemp(path);
    FILE *out = fd >= 0 ? fdopen(fd, "wb") : NULL;
    int written = out && fwrite(bytes, 1, size, out) == size;
    if (out) fclose(out);
    free(bytes);
    CHECK(written, "cannot write %s", path);
    safetensors_file file;
    char error[256] = "";
    int ok = safetensors_open(path, &file, error, sizeof error);
    const model_tensor *a = ok ? safetensors_find(&file, "a.weight") : NULL;
    int same = a && !memcmp(a->data, values, sizeof values);
    if (ok) safetensors_close(&file);
    int missing =
        !safetensors_open("/tmp/moevk_no_such_file.safetensors", &file, error, sizeof error) &&
        strstr(error, "moevk_no_such_file");
    remove(path);
    CHECK(ok, "%s", error);
    CHECK(same, "the mapped tensor holds other bytes");
    CHECK(missing, "a missing file: %s", error);
}

/* Each bad file, and a part of the message it must give. */
static const struct {
    const char *header;
    size_t data;
    const char *says;
} BAD[] = {
    {"[1, 2]", 0, "not a JSON object"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2]", 8, "not valid JSON"},
    {"{\"x\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
     "'x': dtype I64"},
    {"{\"x\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "'x': no dtype"},
    {"{\"x\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "'x': no shape"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, "shape[0]"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, "shape[0]"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4,
     "9 dimensions"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8,
     "8 bytes of data for a shape of 3"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8, "lie outside"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 8, "lie outside"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4, "data_offsets"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
     " \"y\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
     12, "overlap"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
     "before tensor 'x'"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 8,
     "after the last tensor"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
     8, "'x' is named twice"},
    {"{\"__metadata__\": [1], \"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, "
     "4]}}",
     4, "__metadata__"},
    {"{\"x\": 3}", 0, "'x': not an object"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296],"
     " \"data_offsets\": [0, 4]}}",
     4, "overflows"},
};

static void test_bad_files_name_the_tensor_and_the_problem(void) {
    unsigned char data[64] = {0};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; ++i) {
        size_t size;
        unsigned char *bytes = make_file(BAD[i].header, data, BAD[i].data, &size);
        CHECK(bytes, "out of memory");
        safetensors_file file;
        char error[256] = "";
        int ok = safetensors_parse(bytes, size, &file, error, sizeof error);
        if (ok) safetensors_close(&file);
        free(bytes);
        CHECK(!ok, "case %zu (%s) was taken", i, BAD[i].says);
        CHECK(strstr(error, BAD[i].says), "case %zu: '%s' does not say '%s'", i, error,
              BAD[i].says);
    }
    /* The header's length itself. */
    unsigned char short_file[5] = {1, 0, 0, 0, 0};
    safetensors_file file;
    char error[256] = "";
    CHECK(!safetensors_parse(short_file, sizeof short_file, &file, error, sizeof error) &&
              strstr(error, "shorter"),
          "a 5-byte file: %s", error);
    size_t size;
    unsigned char *bytes = make_file(VALID, data, VALID_DATA, &size);
    CHECK(bytes, "out of memory");
    bytes[0] = 0xFF, bytes[1] = 0xFF; /* a header longer than the file */
    int ok = safetensors_parse(bytes, size, &file, error, sizeof error);
    free(bytes);
    CHECK(!ok && strstr(error, "a header of"), "a header past the file: %s", error);
}

/* Random damage to a valid file: taken or refused with a message, never read past the bytes. */
static void test_damaged_files_are_refused_cleanly(void) {
    unsigned char data[VALID_DATA] = {0};
    size_t size;
    unsigned char *valid = make_file(VALID, data, sizeof data, &size);
    CHECK(valid, "out of memory");
    int refused = 0, silent = 0;
    for (int round = 0; round < 3000; ++round) {
        size_t cut = size - rng_u32() % 16; /* sometimes truncated */
        unsigned char *bytes = malloc(cut);
        if (!bytes) break;
        memcpy(bytes, valid, cut);
        for (int flips = 1 + (int)(rng_u32() % 4); flips > 0; --flips)
            bytes[rng_u32() % cut] = (unsigned char)rng_u32();
        safetensors_file file;
        char error[256] = "";
        if (safetensors_parse(bytes, cut, &file, error, sizeof error))
            safetensors_close(&file);
        else if (error[0])
            ++refused;
        else
            ++silent;
        free(bytes);
    }
    free(valid);
    CHECK(silent == 0, "%d damaged files refused without a message", silent);
    CHECK(refused > 0, "no damaged file was refused");
}

static const test_case TESTS[] = {
    TEST(a_valid_file_is_read_by_name),
    TEST(a_file_on_disk_is_mapped),
    TEST(bad_files_name_the_tensor_and_the_problem),
    TEST(damaged_files_are_refused_cleanly),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
