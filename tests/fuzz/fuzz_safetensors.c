/* libFuzzer target: the safetensors reader on arbitrary bytes. It must return a clear error or
 * tensors whose bytes all lie inside the input, never crash or read past it. */
#include <stddef.h>
#include <stdint.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    safetensors_file file;
    char error[256];
    error[0] = 0;
    if (safetensors_parse(data, size, &file, error, sizeof error)) {
        for (size_t i = 0; i < file.count; ++i) {
            const model_tensor *t = &file.tensors[i];
            const uint8_t *begin = t->data;
            if (begin < data || begin + t->bytes > data + size) __builtin_trap();
            if (t->bytes) (void)((volatile const uint8_t *)begin)[t->bytes - 1];
        }
        safetensors_close(&file);
    } else if (!error[0]) {
        __builtin_trap(); /* a failure always says why */
    }
    return 0;
}
