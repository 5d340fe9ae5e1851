/* Tensors (moevk.h): checking that one is of a kind the call takes and holds its bytes, and
 * moving it in and out of a router binding within a call's transfers. */
#include "internal.h"

static const char *const KIND_NAMES[] = {"NONE", "HOST", "BUFFER", "VULKAN"};

moevk_result tensor_check(moevk_context *context, const char *name, const moevk_tensor *tensor,
                          unsigned kinds, uint64_t bytes) {
    if ((unsigned)tensor->kind > MOEVK_TENSOR_VULKAN)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "%s: kind %d is not a tensor kind", name, (int)tensor->kind);
    if (!(kinds & TENSOR_KIND_BIT(tensor->kind)))
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "%s: this call does not take a %s tensor", name,
                            KIND_NAMES[tensor->kind]);
    switch (tensor->kind) {
    case MOEVK_TENSOR_NONE: break;
    case MOEVK_TENSOR_HOST:
        if (!tensor->host && bytes > 0)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "%s: host is NULL", name);
        break;
    case MOEVK_TENSOR_BUFFER:
        if (!tensor->buffer)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "%s: buffer is NULL", name);
        if (tensor->buffer->context != context)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "%s: the buffer belongs to another context", name);
        if (tensor->offset > tensor->buffer->size || bytes > tensor->buffer->size - tensor->offset)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "%s: the buffer holds %llu bytes; %llu from offset %llu are needed",
                                name, (unsigned long long)tensor->buffer->size,
                                (unsigned long long)bytes, (unsigned long long)tensor->offset);
        break;
    case MOEVK_TENSOR_VULKAN: {
        VkDeviceSize alignment = context->limits.minStorageBufferOffsetAlignment;
        if (!tensor->vk_buffer)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "%s: vk_buffer is NULL",
                                name);
        if (tensor->offset % alignment)
            return context_fail(
                context, MOEVK_ERROR_INVALID_ARGUMENT,
                "%s: offset %llu is not a multiple of minStorageBufferOffsetAlignment (%llu)", name,
                (unsigned long long)tensor->offset, (unsigned long long)alignment);
        if (tensor->range && tensor->range < bytes)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "%s: a range of %llu bytes; the call needs %llu", name,
                                (unsigned long long)tensor->range, (unsigned long long)bytes);
        if (tensor->range > context->limits.maxStorageBufferRange)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "%s: a range past maxStorageBufferRange", name);
        break;
    }
    }
    return MOEVK_SUCCESS;
}

void tensor_upload(transfer_plan *plan, int binding, const moevk_tensor *tensor,
                   VkDeviceSize bytes) {
    if (tensor->kind == MOEVK_TENSOR_HOST)
        transfer_upload(plan, binding, tensor->host, bytes);
    else if (tensor->kind == MOEVK_TENSOR_BUFFER)
        transfer_device_copy(plan, binding, 0, tensor->buffer, tensor->offset, bytes, 1);
}

void tensor_download(transfer_plan *plan, int binding, VkDeviceSize binding_offset,
                     const moevk_tensor *tensor, VkDeviceSize bytes) {
    if (tensor->kind == MOEVK_TENSOR_BUFFER)
        transfer_copy_out(plan, binding, binding_offset, tensor->buffer, tensor->offset, bytes);
    else if (tensor->kind == MOEVK_TENSOR_HOST && binding_offset == 0)
        transfer_download(plan, binding, tensor->host, bytes);
}
