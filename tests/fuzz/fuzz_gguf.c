/* libFuzzer target: the GGUF reader on arbitrary bytes, then its metadata read as a model
 * config. It must return a clear error or tensors whose bytes all lie inside the input, never
 * crash or read past it. */
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "gguf_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file file;
    char error[256];
    error[0] = 0;
    if (!gguf_parse(data, size, &file, error, sizeof error)) {
        if (!error[0]) __builtin_trap(); /* a failure always says why */
        return 0;
    }
    for (size_t i = 0; i < file.tensor_count; ++i) {
        const model_tensor *t = &file.tensors[i];
        const uint8_t *begin = t->data;
        if (begin < data || begin + t->bytes > data + size) __builtin_trap();
        if (t->bytes) (void)((volatile const uint8_t *)begin)[t->bytes - 1];
        if (gguf_find_tensor(&file, t->name) == NULL) __builtin_trap();
    }
    model_config config;
    error[0] = 0;
    if (!gguf_model_config(&file, &config, error, sizeof error) && !error[0]) __builtin_trap();
    gguf_close(&file);
    return 0;
}
