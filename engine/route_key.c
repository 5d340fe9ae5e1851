/* Routes recorded once: a route call's key is everything its recording depends on (the plan,
 * which tensors it reads and writes and, for a moevk_buffer, which one and where); a call whose
 * key is the last recorded route's submits that command buffer again instead of recording. The
 * data still moves every call: host tensors are copied in and out as the key's sizes say. */
#include <string.h>

#include "internal.h"

static void add_tensor(route_key *key, const moevk_tensor *tensor) {
    struct route_key_tensor *entry = &key->tensors[key->tensor_count++];
    entry->kind = (uint64_t)tensor->kind;
    /* Host memory is copied to and from the staging buffers outside the recording. */
    if (tensor->kind == MOEVK_TENSOR_BUFFER) {
        entry->serial = tensor->buffer->serial;
        entry->offset = tensor->offset;
    }
}

void route_key_of(route_key *key, const route_plan *plan, int with_dispatch,
                  const moevk_route_input *input, const moevk_route_output *output,
                  const layer_call *layer) {
    memset(key, 0, sizeof *key); /* padding too: keys are compared with memcmp */
    key->plan = *plan;
    /* The noise's counter, key and amount live in the noise state buffer, uploaded each call. */
    key->plan.noise_row_offset = key->plan.noise_step = key->plan.noise_layer = 0;
    key->plan.noise_seed_low = key->plan.noise_seed_high = 0;
    key->plan.noise_amount = 0.0f;
    key->with_dispatch = (uint32_t)with_dispatch;
    const moevk_tensor *tensors[] = {
        &input->logits,        &input->bias,           &input->hidden,         &input->noise_std,
        &input->noise_weights, &input->router_weights, &output->expert_ids,    &output->weights,
        &output->slots,        &output->counts,        &output->counts_before, &output->offsets,
        &output->dispatched,   &output->token_scores,
    };
    _Static_assert(sizeof tensors / sizeof tensors[0] + 2 == ROUTE_KEY_TENSORS,
                   "route_key holds every tensor of a route call");
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; ++i) add_tensor(key, tensors[i]);
    if (layer) {
        key->layer = 1;
        key->route_only = (uint32_t)layer->route_only;
        add_tensor(key, layer->output);
        add_tensor(key, layer->router_logits);
    }
}

int route_key_recorded(const moevk_router *router, const route_key *key) {
    return router->route_key_valid && memcmp(key, &router->route_key, sizeof *key) == 0;
}
