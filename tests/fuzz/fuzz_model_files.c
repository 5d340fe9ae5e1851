/* libFuzzer target: the model-file readers of `moevk layer` on arbitrary text — config.json
 * (the first byte even) and model.safetensors.index.json (odd). Each must accept with values in
 * range or fail saying why, never crash, read past the input or leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model_config.h"
#include "model_files.h"

static void check_config(const model_config *c) {
    if (c->num_experts < 1 || c->top_k < 1 || c->top_k > c->num_experts || c->hidden_size < 1 ||
        c->intermediate_size < 1 || c->dense_layer_count > MODEL_MAX_DENSE_LAYERS)
        __builtin_trap();
    char why[256];
    why[0] = 0;
    for (uint32_t layer = 0; layer < 4; ++layer)
        if (!model_config_moe_layer(c, layer, why, sizeof why) && !why[0]) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *text = (const char *)data + 1;
    char error[256];
    error[0] = 0;
    if (data[0] % 2 == 0) {
        model_config config;
        if (model_config_parse(text, size - 1, &config, error, sizeof error))
            check_config(&config);
        else if (!error[0])
            __builtin_trap();
        return 0;
    }
    model_index index;
    if (model_index_parse(text, size - 1, &index, error, sizeof error)) {
        for (size_t i = 0; i < index.count; ++i)
            if (index.entries[i].shard >= index.shard_count || !index.entries[i].name ||
                (i > 0 && strcmp(index.entries[i - 1].name, index.entries[i].name) >= 0))
                __builtin_trap(); /* sorted, each name once */
        model_index_free(&index);
    } else if (!error[0]) {
        __builtin_trap();
    }
    return 0;
}
