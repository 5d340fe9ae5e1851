/* The one descriptor set layout and pipeline layout every stage shares, and each stage's
 * compute pipeline with its specialization constants (workgroup size, k, E, dtype). */
#include "internal.h"

moevk_result pipelines_create_layouts(moevk_context *context) {
    const struct VolkDeviceTable *vk = &context->vk;
    VkDescriptorSetLayoutBinding bindings[BINDING_COUNT];
    for (uint32_t i = 0; i < BINDING_COUNT; ++i)
        bindings[i] =
            (VkDescriptorSetLayoutBinding){.binding = i,
                                           .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                           .descriptorCount = 1,
                                           .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = BINDING_COUNT,
        .pBindings = bindings};
    VkResult vr = vk->vkCreateDescriptorSetLayout(context->device, &set_info, context->allocator,
                                                  &context->set_layout);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateDescriptorSetLayout");
    VkPushConstantRange push = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                                .size = sizeof(route_params)};
    VkPipelineLayoutCreateInfo layout_info = {.sType =
                                                  VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                              .setLayoutCount = 1,
                                              .pSetLayouts = &context->set_layout,
                                              .pushConstantRangeCount = 1,
                                              .pPushConstantRanges = &push};
    vr = vk->vkCreatePipelineLayout(context->device, &layout_info, context->allocator,
                                    &context->pipeline_layout);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreatePipelineLayout");
    VkPipelineCacheCreateInfo cache_info = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    vr = vk->vkCreatePipelineCache(context->device, &cache_info, context->allocator,
                                   &context->pipeline_cache);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreatePipelineCache");
    return MOEVK_SUCCESS;
}

void pipelines_destroy_layouts(moevk_context *context) {
    const struct VolkDeviceTable *vk = &context->vk;
    if (context->pipeline_cache)
        vk->vkDestroyPipelineCache(context->device, context->pipeline_cache, context->allocator);
    if (context->pipeline_layout)
        vk->vkDestroyPipelineLayout(context->device, context->pipeline_layout, context->allocator);
    if (context->set_layout)
        vk->vkDestroyDescriptorSetLayout(context->device, context->set_layout, context->allocator);
}

moevk_result pipeline_create(moevk_context *context, stage which, int addresses, uint32_t top_k,
                             uint32_t num_experts, uint32_t dtype, VkPipeline *out) {
    const struct VolkDeviceTable *vk = &context->vk;
    const shader_code *shader = shader_for_stage(which, addresses);
    if (!shader) shader = shader_for_stage(which, 0); /* the stage touches no large buffer */
    VkShaderModuleCreateInfo module_info = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                            .codeSize = shader->size,
                                            .pCode = shader->code};
    VkShaderModule module;
    VkResult vr =
        vk->vkCreateShaderModule(context->device, &module_info, context->allocator, &module);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateShaderModule");

    const uint32_t values[4] = {WORKGROUP_SIZE, top_k, num_experts, dtype};
    const VkSpecializationMapEntry entries[4] = {{SPEC_WORKGROUP_SIZE, 0, 4},
                                                 {SPEC_TOP_K, 4, 4},
                                                 {SPEC_NUM_EXPERTS, 8, 4},
                                                 {SPEC_DTYPE, 12, 4}};
    VkSpecializationInfo specialization = {4, entries, sizeof values, values};
    VkComputePipelineCreateInfo pipeline_info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main",
                  .pSpecializationInfo = &specialization},
        .layout = context->pipeline_layout};
    vr = vk->vkCreateComputePipelines(context->device, context->pipeline_cache, 1, &pipeline_info,
                                      context->allocator, out);
    vk->vkDestroyShaderModule(context->device, module, context->allocator);
    if (vr != VK_SUCCESS) {
        *out = VK_NULL_HANDLE;
        return context_fail_vk(context, vr, "vkCreateComputePipelines");
    }
    return MOEVK_SUCCESS;
}
