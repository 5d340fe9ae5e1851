/* layer_gradients.h: the backward through the library, each gradient read back (f32) and named
 * after the checkpoint's tensor of its parameter. */
#include "layer_gradients.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "safetensors_write.h"

int layer_gradients_check(const npy_array *grad_output, uint64_t T, uint64_t d, char *error,
                          size_t error_size) {
    if (grad_output->type != NPY_F32 || grad_output->ndim != 2 || grad_output->shape[0] != T ||
        grad_output->shape[1] != d)
        return fail(error, error_size,
                    "--grad-output must be float32 [%llu, %llu], the hidden states' shape",
                    (unsigned long long)T, (unsigned long long)d);
    return 1;
}

/* The entries of one parameter: a tensor per expert (each its slice of the gradient), or one
 * stacked tensor where the checkpoint stacks its experts (GGUF: every expert the same name). */
static size_t add_entries(safetensors_entry *entries, size_t count,
                          const model_tensor *const *tensors, uint32_t experts,
                          const float *gradient) {
    if (!tensors || !tensors[0]) return count;
    int stacked = experts > 1;
    for (uint32_t e = 1; e < experts; ++e)
        stacked &= strcmp(tensors[e]->name, tensors[0]->name) == 0;
    if (stacked) {
        entries[count] = (safetensors_entry){
            tensors[0]->name, 3, {experts, tensors[0]->shape[0], tensors[0]->shape[1]}, gradient};
        return count + 1;
    }
    uint64_t part = tensors[0]->count;
    for (uint32_t e = 0; e < experts; ++e) {
        const model_tensor *t = tensors[e];
        entries[count] = (safetensors_entry){t->name, t->ndim, {0}, gradient + part * e};
        for (uint32_t i = 0; i < t->ndim && i < 4; ++i) entries[count].shape[i] = t->shape[i];
        ++count;
    }
    return count;
}

static moevk_result one_backward(void *self, const moevk_layer_backward_info *info) {
    return moevk_layer_backward(self, info);
}

static moevk_result one_read(void *self, moevk_layer_weight which, uint32_t experts,
                             uint64_t part_elements, float *gradient) {
    (void)part_elements;
    return moevk_layer_read_gradient(self, which, 0, experts, moevk_host_tensor(gradient));
}

gradient_source layer_gradient_source(moevk_context *context, moevk_layer *layer) {
    return (gradient_source){layer, context, 1, one_backward, one_read};
}

int layer_gradients_write(const gradient_source *source, const layer_weights *weights,
                          uint32_t num_experts, uint32_t hidden_size, const npy_array *grad_output,
                          const moevk_loss_info *losses, const char *out_dir) {
    uint64_t T = grad_output->shape[0], d = hidden_size, E = num_experts;
    float *grad_hidden = malloc(T * d * 4 + 4);
    /* The gradients the block's tensors have, in moevk_layer_weight order. */
    const struct {
        moevk_layer_weight which;
        const model_tensor *const *tensors;
        uint32_t experts;
    } parts[] = {
        {MOEVK_WEIGHT_ROUTER, &weights->router, 1},
        {MOEVK_WEIGHT_GATE, weights->gate, (uint32_t)E},
        {MOEVK_WEIGHT_UP, weights->up, (uint32_t)E},
        {MOEVK_WEIGHT_DOWN, weights->down, (uint32_t)E},
        {MOEVK_WEIGHT_SHARED_GATE, &weights->shared_gate, 1},
        {MOEVK_WEIGHT_SHARED_UP, &weights->shared_up, 1},
        {MOEVK_WEIGHT_SHARED_DOWN, &weights->shared_down, 1},
        {MOEVK_WEIGHT_SHARED_EXPERT_GATE, &weights->shared_expert_gate, 1},
    };
    enum { PARTS = sizeof parts / sizeof parts[0] };
    float *gradients[PARTS] = {0};
    safetensors_entry *entries = calloc(3 * E + 8, sizeof *entries);
    int status = 1;
    moevk_result r = grad_hidden && entries ? MOEVK_SUCCESS : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    moevk_layer_backward_info backward;
    moevk_layer_backward_info_init(&backward);
    backward.grad_output = moevk_host_tensor(grad_output->data);
    backward.grad_hidden = moevk_host_tensor(grad_hidden);
    backward.losses = losses;
    if (r == MOEVK_SUCCESS) r = source->backward(source->self, &backward);
    size_t count = 0;
    for (int i = 0; i < PARTS && r == MOEVK_SUCCESS; ++i) {
        const model_tensor *first = parts[i].tensors ? parts[i].tensors[0] : NULL;
        if (!first) continue;
        uint64_t elements = first->count * parts[i].experts;
        if (!(gradients[i] = malloc(elements * 4))) {
            r = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
            break;
        }
        r = source->read(source->self, parts[i].which, parts[i].experts, first->count,
                         gradients[i]);
        count = add_entries(entries, count, parts[i].tensors, parts[i].experts, gradients[i]);
    }
    char path[4200], error[512];
    if (r != MOEVK_SUCCESS) {
        if (source->writer)
            fprintf(stderr, "moevk layer: the backward: %s\n",
                    r == MOEVK_ERROR_OUT_OF_HOST_MEMORY
                        ? "out of host memory"
                        : moevk_context_last_error(source->context));
        status = r == MOEVK_ERROR_INVALID_ARGUMENT || r == MOEVK_ERROR_UNSUPPORTED ? 2 : 1;
        goto done;
    }
    if (!source->writer) {
        status = 0;
        goto done;
    }
    uint64_t td[2] = {T, d}, ed[2] = {E, d};
    snprintf(path, sizeof path, "%s/grad_hidden.npy", out_dir);
    if (!npy_write(path, "<f4", 2, td, grad_hidden, 4)) goto cannot_write;
    snprintf(path, sizeof path, "%s/grad_router.npy", out_dir);
    if (!npy_write(path, "<f4", 2, ed, gradients[0], 4)) goto cannot_write;
    snprintf(path, sizeof path, "%s/grad_weights.safetensors", out_dir);
    if (!safetensors_write(path, entries, count, error, sizeof error)) {
        fprintf(stderr, "moevk layer: %s\n", error);
        goto done;
    }
    status = 0;
    goto done;
cannot_write:
    fprintf(stderr, "moevk layer: %s: cannot write\n", path);
done:
    for (int i = 0; i < PARTS; ++i) free(gradients[i]);
    free(entries);
    free(grad_hidden);
    return status;
}
