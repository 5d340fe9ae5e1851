/* libFuzzer target: the public API's configuration checks. Arbitrary bytes become a
 * moevk_router_info and a route call on one lavapipe context; every call must return a result
 * (a router for a valid configuration, a named error otherwise), never crash or leak. Sizes are
 * kept small so that valid configurations build quickly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moevk.h"

static moevk_context *context;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setenv("MOEVK_DEVICE", "llvmpipe", 0);
    return moevk_context_create(NULL, &context) == MOEVK_SUCCESS ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* The info inside a larger block, so that a fuzzed struct_size up to the block's size
     * (fields of a newer layout, zero or not) reads only what is there. */
    struct {
        moevk_router_info info;
        unsigned char newer_fields[32];
    } block;
    memset(&block, 0, sizeof block);
    moevk_router_info_init(&block.info);
    memcpy(&block, data, size < sizeof block ? size : sizeof block);
    block.info.struct_size %= (uint32_t)sizeof block + 1;
    moevk_router_info info = block.info;
    info.max_tokens %= 257; /* small routers only: this exercises checks, not memory */
    info.hidden_size %= 33;
    info.pad_multiple %= 65;
    if (info.capacity_mode == MOEVK_CAPACITY_FIXED) info.capacity %= 4096;
    info.min_capacity %= 4096;
    info.sinkhorn_iterations %= 200; /* a long Sinkhorn run is not what this target looks for */
    if (info.max_binding_bytes > (1u << 20)) info.max_binding_bytes %= (1u << 20);
    block.info = info; /* clamped, its fuzzed struct_size kept */
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(context, &block.info, &router);
    if (r != MOEVK_SUCCESS && (router != NULL || !moevk_context_last_error(context)[0]))
        __builtin_trap();
    if (r == MOEVK_SUCCESS) {
        /* A route with a fuzzed token count and the rest of the bytes as logits. */
        uint32_t tokens = size > sizeof block ? data[sizeof block] : 0;
        size_t need =
            (size_t)tokens * info.num_experts * (info.logits_type == MOEVK_DTYPE_F16 ? 2 : 4);
        void *logits = calloc(need + 4, 1);
        size_t rest = size > sizeof block + 1 ? size - sizeof block - 1 : 0;
        if (logits) memcpy(logits, data + sizeof block + (rest ? 1 : 0), rest < need ? rest : need);
        moevk_route_input input = {.num_tokens = tokens, .logits = moevk_host_tensor(logits)};
        moevk_route_stats stats = {0};
        moevk_route_output output = {.stats = &stats};
        r = moevk_route(router, &input, &output);
        if (r != MOEVK_SUCCESS && r != MOEVK_ERROR_INVALID_ARGUMENT) __builtin_trap();
        free(logits);
        moevk_router_destroy(router);
    }
    return 0;
}
