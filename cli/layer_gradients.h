/* `moevk layer --grad-output DY.npy`: after the layer's forward, its backward of sum(output * DY)
 * (and of the --loss losses when given), written as DIR/grad_hidden.npy [T, d],
 * DIR/grad_router.npy [E, d] and DIR/grad_weights.safetensors: the gradient of every parameter
 * of the block under the name of the checkpoint's tensor it belongs to, in that tensor's shape
 * (one tensor per expert, or GGUF's stacked [E, rows, cols]), f32. */
#ifndef MOEVK_CLI_LAYER_GRADIENTS_H
#define MOEVK_CLI_LAYER_GRADIENTS_H

#include "layer_weights.h"
#include "moevk.h"
#include "npy.h"

/* Checks DY (float32 [T, d]); 1, or 0 with the one-line error in error. */
int layer_gradients_check(const npy_array *grad_output, uint64_t T, uint64_t d, char *error,
                          size_t error_size);
/* Where the backward runs and its gradients come from: one process's layer
 * (layer_gradient_source), or an expert-parallel one (layer_expert_parallel.c). */
typedef struct gradient_source {
    void *self;
    moevk_context *context;
    int writer; /* this process prints the errors and writes the files */
    /* moevk_layer_backward over all T tokens: info's grad_hidden [T, d] whole on the writer. */
    moevk_result (*backward)(void *self, const moevk_layer_backward_info *info);
    /* The gradient of `which` of all `experts` (each part_elements f32) into gradient, whole on
     * the writer. */
    moevk_result (*read)(void *self, moevk_layer_weight which, uint32_t experts,
                         uint64_t part_elements, float *gradient);
} gradient_source;

gradient_source layer_gradient_source(moevk_context *context, moevk_layer *layer);

/* Runs the backward and writes the three files (the writer); 0 on success, else an exit status
 * (1 the device, 2 bad input) after printing "moevk layer: ..." on stderr (the writer). losses:
 * NULL for none. */
int layer_gradients_write(const gradient_source *source, const layer_weights *weights,
                          uint32_t num_experts, uint32_t hidden_size, const npy_array *grad_output,
                          const moevk_loss_info *losses, const char *out_dir);

#endif
