/* The Vulkan objects of a router's stages, made from each kernel's declaration: a descriptor set
 * layout of exactly the buffers it lists, a pipeline layout with its push constants, its
 * pipeline with the router's specialization constants, and two sets (the router's buffers, and
 * one that moevk_record_route and moevk_record_combine point at the application's). */
#include "stage.h"

int stage_is_needed(const moevk_router *router, stage_id stage) {
    const stage_module *module = STAGE_MODULES[stage];
    return !module->needed || module->needed(router);
}

/* The specialization constants every kernel starts from; a stage adjusts its own. */
static stage_constants default_constants(const moevk_router *router) {
    const moevk_router_info *info = &router->info;
    int grouped = info->num_groups > 1;
    return (stage_constants){.workgroup_size = WORKGROUP_SIZE,
                             .choices = router_choices(info),
                             /* Experts that choose need no top-k in the scores stage. */
                             .selection_k =
                                 info->mode == MOEVK_MODE_EXPERT_CHOICE ? 1 : info->top_k,
                             .num_experts = info->num_experts,
                             .dtype = info->logits_type,
                             .hidden_dtype = info->hidden_type,
                             .groups = grouped ? info->num_groups : 1,
                             .topk_groups = grouped ? info->topk_groups : 1};
}

static moevk_result create_layouts(moevk_router *router, const stage_kernel *kernel,
                                   kernel_state *state) {
    moevk_context *context = router->context;
    const struct VolkDeviceTable *vk = &context->vk;
    VkDescriptorSetLayoutBinding bindings[BINDING_COUNT];
    if (kernel->buffer_count > MAX_KERNEL_BUFFERS)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "kernel %s binds %u buffers, past moevk's %d", kernel->name,
                            kernel->buffer_count, MAX_KERNEL_BUFFERS);
    for (uint32_t i = 0; i < kernel->buffer_count; ++i)
        bindings[i] =
            (VkDescriptorSetLayoutBinding){.binding = kernel->buffers[i],
                                           .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                           .descriptorCount = 1,
                                           .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = kernel->buffer_count,
        .pBindings = bindings};
    VkResult vr = vk->vkCreateDescriptorSetLayout(context->device, &set_info, context->allocator,
                                                  &state->set_layout);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateDescriptorSetLayout");
    VkPushConstantRange push = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                                .size = kernel->params_size};
    VkPipelineLayoutCreateInfo layout_info = {.sType =
                                                  VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                              .setLayoutCount = 1,
                                              .pSetLayouts = &state->set_layout,
                                              .pushConstantRangeCount = kernel->params_size > 0,
                                              .pPushConstantRanges = &push};
    vr = vk->vkCreatePipelineLayout(context->device, &layout_info, context->allocator,
                                    &state->layout);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreatePipelineLayout");
    return MOEVK_SUCCESS;
}

static moevk_result create_pool(moevk_router *router) {
    moevk_context *context = router->context;
    uint32_t sets = 0, descriptors = 0;
    for (int s = 0; s < STAGE_COUNT; ++s) {
        if (!stage_is_needed(router, (stage_id)s)) continue;
        for (uint32_t k = 0; k < STAGE_MODULES[s]->kernel_count; ++k) {
            sets += 2;
            descriptors += 2 * STAGE_MODULES[s]->kernels[k]->buffer_count;
        }
    }
    VkDescriptorPoolSize pool_size = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptors};
    VkDescriptorPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .maxSets = sets,
                                            .poolSizeCount = 1,
                                            .pPoolSizes = &pool_size};
    VkResult vr = context->vk.vkCreateDescriptorPool(context->device, &pool_info,
                                                     context->allocator, &router->descriptor_pool);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateDescriptorPool");
    return MOEVK_SUCCESS;
}

/* Both sets of a kernel, pointing at the router's buffers. */
static moevk_result create_sets(moevk_router *router, const stage_kernel *kernel,
                                kernel_state *state) {
    moevk_context *context = router->context;
    const struct VolkDeviceTable *vk = &context->vk;
    VkDescriptorSetLayout layouts[2] = {state->set_layout, state->set_layout};
    VkDescriptorSetAllocateInfo set_info = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                            .descriptorPool = router->descriptor_pool,
                                            .descriptorSetCount = 2,
                                            .pSetLayouts = layouts};
    VkDescriptorSet sets[2];
    VkResult vr = vk->vkAllocateDescriptorSets(context->device, &set_info, sets);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkAllocateDescriptorSets");
    state->own_set = sets[0];
    state->external_set = sets[1];
    VkDescriptorBufferInfo infos[BINDING_COUNT];
    VkWriteDescriptorSet writes[2 * BINDING_COUNT];
    for (uint32_t i = 0; i < kernel->buffer_count; ++i) {
        /* A buffer reached by address is still bound (every binding must be), within range. */
        const gpu_buffer *buffer = &router->buffers[kernel->buffers[i]];
        VkDeviceSize range = context->limits.maxStorageBufferRange;
        infos[i] = (VkDescriptorBufferInfo){buffer->buffer, 0,
                                            buffer->size > range ? range : VK_WHOLE_SIZE};
        for (int s = 0; s < 2; ++s)
            writes[2 * i + s] =
                (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                       .dstSet = sets[s],
                                       .dstBinding = kernel->buffers[i],
                                       .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &infos[i]};
    }
    vk->vkUpdateDescriptorSets(context->device, 2 * kernel->buffer_count, writes, 0, NULL);
    return MOEVK_SUCCESS;
}

moevk_result stages_create(moevk_router *router) {
    moevk_result r = create_pool(router);
    for (int s = 0; s < STAGE_COUNT && r == MOEVK_SUCCESS; ++s) {
        const stage_module *module = STAGE_MODULES[s];
        if (!stage_is_needed(router, (stage_id)s)) continue;
        stage_constants constants = default_constants(router);
        if (module->constants) module->constants(router, &constants);
        for (uint32_t k = 0; k < module->kernel_count && r == MOEVK_SUCCESS; ++k) {
            kernel_state *state = &router->kernels[s][k];
            stage_constants kernel_constants = constants;
            if (module->kernels[k]->reads_down_weights)
                kernel_constants.dtype = router->layer.down_type;
            r = create_layouts(router, module->kernels[k], state);
            if (r == MOEVK_SUCCESS) r = create_sets(router, module->kernels[k], state);
            if (r == MOEVK_SUCCESS)
                r = pipeline_create(router->context, module->kernels[k]->shaders,
                                    router->use_addresses, &kernel_constants, state->layout,
                                    &state->pipeline);
        }
    }
    return r;
}

void stages_destroy(moevk_router *router) {
    moevk_context *context = router->context;
    const struct VolkDeviceTable *vk = &context->vk;
    for (int s = 0; s < STAGE_COUNT; ++s)
        for (int k = 0; k < MAX_STAGE_KERNELS; ++k) {
            kernel_state *state = &router->kernels[s][k];
            if (state->pipeline)
                vk->vkDestroyPipeline(context->device, state->pipeline, context->allocator);
            if (state->layout)
                vk->vkDestroyPipelineLayout(context->device, state->layout, context->allocator);
            if (state->set_layout)
                vk->vkDestroyDescriptorSetLayout(context->device, state->set_layout,
                                                 context->allocator);
        }
    /* The sets go with their pool. */
    if (router->descriptor_pool)
        vk->vkDestroyDescriptorPool(context->device, router->descriptor_pool, context->allocator);
}

void stages_bind_external(moevk_router *router, uint32_t binding,
                          const VkDescriptorBufferInfo *info) {
    moevk_context *context = router->context;
    for (int s = 0; s < STAGE_COUNT; ++s) {
        if (!stage_is_needed(router, (stage_id)s)) continue;
        for (uint32_t k = 0; k < STAGE_MODULES[s]->kernel_count; ++k) {
            const stage_kernel *kernel = STAGE_MODULES[s]->kernels[k];
            for (uint32_t i = 0; i < kernel->buffer_count; ++i) {
                if (kernel->buffers[i] != binding) continue;
                VkWriteDescriptorSet write = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                              .dstSet = router->kernels[s][k].external_set,
                                              .dstBinding = binding,
                                              .descriptorCount = 1,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .pBufferInfo = info};
                context->vk.vkUpdateDescriptorSets(context->device, 1, &write, 0, NULL);
            }
        }
    }
}
