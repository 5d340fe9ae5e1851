/* libFuzzer target: the .npy reader of `moevk route` on arbitrary bytes. It must return a clear
 * error or a well-formed array, never crash, overrun or allocate past the file's real size. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    npy_array array;
    char error[256];
    if (npy_parse(data, size, &array, error, sizeof error)) {
        /* A parsed array's data is all there: touch its last byte. */
        if (array.count) ((volatile uint8_t *)array.data)[array.count * array.item_size - 1];
        npy_free(&array);
    } else if (!error[0]) {
        __builtin_trap(); /* a failure always says why */
    }
    return 0;
}
