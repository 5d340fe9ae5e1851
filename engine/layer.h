/* The layer object (moevk_layer), shared by its forward (layer.c) and its training (layer_train.c),
 * and where each of its weights lives. */
#ifndef MOEVK_LAYER_H
#define MOEVK_LAYER_H

#include "internal.h"

struct moevk_layer {
    moevk_context *context; /* its own: the router may not exist when creation failed */
    moevk_router *router;
    int master_valid; /* the optimizer's master weights hold the stored weights' values */
};

/* Where a weight lives: its binding and byte offset, the elements of one expert's part, how
 * many experts have one, its type, and whether the layer has it (-1: not a weight). */
typedef struct weight_place {
    int binding;
    uint64_t offset, elements, experts;
    moevk_dtype type;
    int present;
    const char *name;
} weight_place;

/* moevk_layer_create, for a layer of the given part (PARTS_*) of an expert-parallel layer. */
moevk_result layer_create(moevk_context *context, const moevk_layer_info *info, int parts,
                          moevk_layer **out);

weight_place layer_weight_place(const moevk_router *router, moevk_layer_weight which);
/* Checks a weight's range of experts (INVALID_ARGUMENT naming what is wrong) and gives its
 * place, byte offset and bytes in the layer's buffer: in the weight's type (element_bytes 0),
 * or at element_bytes per element (a gradient's f32, laid out as the weights' buffer). */
moevk_result layer_weight_range(moevk_router *router, moevk_layer_weight which, uint32_t first,
                                uint32_t count, uint32_t element_bytes, weight_place *place,
                                uint64_t *offset, uint64_t *bytes);
/* Copies bytes at offset of a layer buffer into destination (HOST or BUFFER), waiting. */
moevk_result layer_copy_out(moevk_router *router, int binding, uint64_t offset, uint64_t bytes,
                            const moevk_tensor *destination);
/* Copies source (HOST or BUFFER) into bytes at offset of a layer buffer, waiting. */
moevk_result layer_copy_in(moevk_router *router, int binding, uint64_t offset, uint64_t bytes,
                           const moevk_tensor *source);
/* A trainable layer's gradient of a weight's experts [first, first + count): its buffer, byte
 * offset and bytes (f32, laid out as the weights'). UNSUPPORTED where there is none yet. */
moevk_result layer_gradient_range(moevk_router *router, moevk_layer_weight which, uint32_t first,
                                  uint32_t count, int *binding, uint64_t *offset, uint64_t *bytes);
/* Copies a weight's gradient out to tensor, or with into_layer from it in (settles first). */
moevk_result layer_gradient_copy(moevk_layer *layer, moevk_layer_weight which, uint32_t first,
                                 uint32_t count, const moevk_tensor *tensor, int into_layer);
/* The optimizer in two steps (layer_optimizer.c), for a layer split over ranks: the gradients'
 * sum of squares (the master weights widened first where the stored ones changed), and the
 * update with the gradients scaled by grad_scale. info is read and checked by each. */
moevk_result layer_optimizer_squares(moevk_layer *layer, const moevk_optimizer_info *info,
                                     double *sum);
moevk_result layer_optimizer_update(moevk_layer *layer, const moevk_optimizer_info *info,
                                    float grad_scale);
/* torch.nn.utils.clip_grad_norm_'s scale: min(1, max_grad_norm / (norm + 1e-6)); 1 where 0. */
float layer_clip_scale(float max_grad_norm, double norm);

/* INVALID_ARGUMENT unless layer is an expert-parallel layer's half of the given role
 * (PARTS_HOME, PARTS_EXPERTS); then waits for what it has in flight (router_settle). */
moevk_result layer_parts_check(moevk_layer *layer, int role);
/* Submits a plan of transfers and kernels and waits: its host outputs are copied out
 * (layer_parts.c, for the halves of an expert-parallel layer). */
moevk_result layer_parts_run(moevk_router *router, transfer_plan *plan);

#endif
