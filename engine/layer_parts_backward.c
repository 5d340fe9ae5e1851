/* The backward of a layer's two halves (moevk_parts.h), for libmoevk_mpi: the home half's
 * combine backward and router's dL/dlogits, the experts half's routed experts backward over the
 * rows its forward ran, then the home half's dispatch, shared experts and router projection
 * backward — moevk_layer_backward's steps (layer_train.c) in the same order, each half over its
 * own buffers, with the rows' gradients passed between them through the host. */
#include <string.h>

#include "moevk_parts.h"

#include "layer.h"
#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

/* A half's backward: the layer trainable, its buffers within reach, its forward run. */
static moevk_result check_trainable_half(moevk_layer *layer, int role) {
    moevk_result r = layer_parts_check(layer, role);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (!router->layer.trainable) REJECT("the layer was created without `trainable`");
    if (router->use_addresses)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "the backward needs the layer's buffers within maxStorageBufferRange");
    if (router->route != ROUTE_RUN) REJECT("a backward needs the half's forward first");
    return MOEVK_SUCCESS;
}

/* The losses the home half takes: their gradient is each token's own, given the whole batch's
 * counts, valid rows, sequences and importance and load sums (the sequence loss over whole
 * sequences). */
static moevk_result check_batch_losses(moevk_context *context, const moevk_parts_batch *batch) {
    const moevk_loss_info *losses = batch ? batch->losses : NULL;
    if (!losses) return MOEVK_SUCCESS;
    if ((losses->importance_coef != 0.0f || losses->load_coef != 0.0f) && !batch->balance_totals)
        REJECT("the importance and load losses need the batch's balance_totals");
    if (losses->sequence_coef != 0.0f && batch->sequences == 0)
        REJECT("the sequence loss needs the batch's sequences");
    return MOEVK_SUCCESS;
}

moevk_result moevk_parts_home_backward_combine(moevk_layer *layer, const float *grad_output,
                                               const moevk_parts_batch *batch, float *grad_weights,
                                               float *grad_expert_rows) {
    moevk_result r = check_trainable_half(layer, PARTS_HOME);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (router->parts_rows == UINT32_MAX) REJECT("a backward needs moevk_parts_combine first");
    route_plan plan = router->last;
    uint64_t T = plan.num_tokens, d = plan.hidden_size, k = plan.choices;
    uint64_t rows = router->parts_rows;
    if (T == 0) return MOEVK_SUCCESS;
    if (!grad_output || (rows > 0 && !grad_expert_rows))
        REJECT("grad_output and grad_expert_rows must be given");
    const moevk_loss_info *losses = batch ? batch->losses : NULL;
    if (losses && !batch->counts_before) REJECT("the losses need the batch's counts_before");
    r = check_batch_losses(context, batch);
    if (r != MOEVK_SUCCESS) return r;
    /* dL/dlogits from dL/dweights and the losses, as moevk_layer_backward runs it, over the
     * whole batch's counts (EXPERT_INFO's first E words) and valid rows. */
    moevk_loss_info no_losses, loss_info;
    moevk_loss_info_init(&no_losses);
    route_plan loss_plan;
    loss_phases phases;
    r = losses_plan_for_layer(router, losses ? losses : &no_losses, &loss_plan, &phases,
                              &loss_info);
    uint32_t E = router->info.num_experts;
    uint64_t assignments = 0;
    for (uint32_t e = 0; losses && e < E; ++e) assignments += batch->counts_before[e];
    if (losses) {
        loss_plan.valid_rows = batch->valid_rows;
        loss_plan.assignments = (uint32_t)assignments;
        if (losses->sequence_coef != 0.0f) loss_plan.batch_sequences = batch->sequences;
        /* The whole batch's importance and load sums stand for the half's own. */
        phases.totals_given = 1;
    }
    /* This half's sequences' totals, after the totals of the other losses' columns. */
    uint64_t sequences = losses && losses->sequence_coef != 0.0f && batch->sequence_totals
                             ? T / loss_plan.sequence_length
                             : 0;
    transfer_plan *transfers = &router->pending_plan;
    if (r == MOEVK_SUCCESS) r = transfer_begin(transfers, router);
    if (r != MOEVK_SUCCESS) return r;
    transfer_upload(transfers, BINDING_GRAD_OUTPUT, grad_output, T * d * 4);
    if (losses) transfer_upload(transfers, BINDING_EXPERT_INFO, batch->counts_before, E * 4);
    _Static_assert(LOSS_TOTAL_IMPORTANCE == 0 && LOSS_TOTAL_LOAD == 1,
                   "the balance totals are the loss totals' first 2E");
    if (losses && (losses->importance_coef != 0.0f || losses->load_coef != 0.0f))
        transfer_upload(transfers, BINDING_LOSS_TOTALS, batch->balance_totals, 2 * E * 4);
    transfer_uploads_done(transfers);
    record_combine_backward(router, &plan);
    record_losses(router, &loss_plan, &phases);
    record_compute_barrier(router);
    if (rows > 0)
        transfer_download(transfers, BINDING_GRAD_EXPERT_OUT, grad_expert_rows, rows * d * 4);
    if (grad_weights) transfer_download(transfers, BINDING_GRAD_WEIGHTS, grad_weights, T * k * 4);
    if (sequences)
        transfer_download(transfers, BINDING_LOSS_TOTALS, NULL,
                          (LOSS_TOTAL_SEQUENCES * E + sequences) * 4);
    r = layer_parts_run(router, transfers);
    if (r == MOEVK_SUCCESS && sequences)
        memcpy(batch->sequence_totals,
               (const float *)transfer_downloaded(transfers, BINDING_LOSS_TOTALS) +
                   LOSS_TOTAL_SEQUENCES * E,
               sequences * 4);
    return r;
}

moevk_result moevk_parts_experts_backward(moevk_layer *layer, const float *grad_expert_out,
                                          int accumulate, float *grad_rows) {
    moevk_result r = check_trainable_half(layer, PARTS_EXPERTS);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    route_plan plan = router->last;
    uint64_t N = plan.num_tokens, d = plan.hidden_size;
    if (N > 0 && (!grad_expert_out || !grad_rows))
        REJECT("grad_expert_out and grad_rows must be given");
    transfer_plan *transfers = &router->pending_plan;
    r = transfer_begin(transfers, router);
    if (r != MOEVK_SUCCESS) return r;
    if (N > 0) transfer_upload(transfers, BINDING_GRAD_EXPERT_OUT, grad_expert_out, N * d * 4);
    transfer_uploads_done(transfers);
    /* An expert that ran no rows still has its gradient zeroed, as one process's layer has. */
    if (!accumulate) record_zero_gradients(router);
    record_experts_backward(router, &plan);
    if (N > 0) transfer_download(transfers, BINDING_GRAD_ROWS, grad_rows, N * d * 4);
    return layer_parts_run(router, transfers);
}

moevk_result moevk_parts_home_backward_finish(moevk_layer *layer, const float *grad_rows,
                                              int accumulate, float *grad_hidden) {
    moevk_result r = check_trainable_half(layer, PARTS_HOME);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router *router = layer->router;
    moevk_context *context = router->context;
    if (router->parts_rows == UINT32_MAX) REJECT("a backward needs moevk_parts_combine first");
    route_plan plan = router->last;
    uint64_t T = plan.num_tokens, d = plan.hidden_size, rows = router->parts_rows;
    if (T > 0 && rows > 0 && !grad_rows) REJECT("grad_rows must be given");
    transfer_plan *transfers = &router->pending_plan;
    r = transfer_begin(transfers, router);
    if (r != MOEVK_SUCCESS) return r;
    if (T > 0 && rows > 0) transfer_upload(transfers, BINDING_GRAD_ROWS, grad_rows, rows * d * 4);
    transfer_uploads_done(transfers);
    if (!accumulate) record_zero_gradients(router);
    record_dispatch_backward(router, &plan);
    record_shared_backward(router, &plan);
    record_router_backward(router, &plan);
    if (T > 0 && grad_hidden)
        transfer_download(transfers, BINDING_GRAD_HIDDEN, grad_hidden, T * d * 4);
    return layer_parts_run(router, transfers);
}

moevk_result moevk_parts_gradient_bytes(moevk_layer *layer, moevk_layer_weight which,
                                        uint32_t first, uint32_t count, uint64_t *bytes) {
    if (!layer || !bytes) return MOEVK_ERROR_INVALID_ARGUMENT;
    weight_place place;
    uint64_t offset = 0;
    return layer_weight_range(layer->router, which, first, count, 4, &place, &offset, bytes);
}
