/* The context's pipeline cache (from an earlier run's data or file), and each kernel's compute
 * pipeline with its specialization constants (workgroup size, k, E, dtype). */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* The shaders take these enums' values as they are (moevk_shared.h). */
_Static_assert(NOISE_NONE == MOEVK_NOISE_NONE && NOISE_JITTER == MOEVK_NOISE_JITTER &&
                   NOISE_GAUSSIAN == MOEVK_NOISE_GAUSSIAN && NOISE_GUMBEL == MOEVK_NOISE_GUMBEL,
               "noise kinds");
_Static_assert(DTYPE_F32 == MOEVK_DTYPE_F32 && DTYPE_F16 == MOEVK_DTYPE_F16 &&
                   DTYPE_BF16 == MOEVK_DTYPE_BF16 && DTYPE_Q8_0 == MOEVK_DTYPE_Q8_0 &&
                   DTYPE_Q4_0 == MOEVK_DTYPE_Q4_0 && DTYPE_Q4_K == MOEVK_DTYPE_Q4_K &&
                   DTYPE_Q6_K == MOEVK_DTYPE_Q6_K && DTYPE_Q5_0 == MOEVK_DTYPE_Q5_0 &&
                   DTYPE_Q5_K == MOEVK_DTYPE_Q5_K,
               "element types");

/* A cache is trusted only when its header names this very device and driver. */
static int cache_matches_device(const moevk_context *context, const void *data, size_t size) {
    if (!data || size < sizeof(VkPipelineCacheHeaderVersionOne)) return 0;
    VkPipelineCacheHeaderVersionOne header;
    memcpy(&header, data, sizeof header);
    VkPhysicalDeviceProperties properties;
    context->vki.vkGetPhysicalDeviceProperties(context->physical_device, &properties);
    return header.headerSize >= sizeof header && header.headerSize <= size &&
           header.headerVersion == VK_PIPELINE_CACHE_HEADER_VERSION_ONE &&
           header.vendorID == properties.vendorID && header.deviceID == properties.deviceID &&
           memcmp(header.pipelineCacheUUID, properties.pipelineCacheUUID, VK_UUID_SIZE) == 0;
}

/* Reads a whole file into host memory; NULL if it does not exist or cannot be read. */
static void *read_file(const moevk_context *context, const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    void *data = NULL;
    long length = -1;
    if (fseek(file, 0, SEEK_END) == 0) length = ftell(file);
    if (length > 0 && length < (1l << 30) && fseek(file, 0, SEEK_SET) == 0)
        data = context_alloc((moevk_context *)context, (size_t)length);
    if (data && fread(data, 1, (size_t)length, file) != (size_t)length) {
        host_free(context->allocator, data);
        data = NULL;
    }
    fclose(file);
    *size = data ? (size_t)length : 0;
    return data;
}

static moevk_result create_pipeline_cache(moevk_context *context, const moevk_context_info *info) {
    const void *data = info ? info->pipeline_cache_data : NULL;
    size_t size = info ? info->pipeline_cache_size : 0;
    void *from_file = NULL;
    if (info && info->pipeline_cache_path) {
        size_t length = strlen(info->pipeline_cache_path);
        context->pipeline_cache_path = context_alloc((moevk_context *)context, length + 1);
        if (!context->pipeline_cache_path)
            return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "pipeline cache path");
        memcpy(context->pipeline_cache_path, info->pipeline_cache_path, length + 1);
        if (!data) {
            from_file = read_file(context, info->pipeline_cache_path, &size);
            data = from_file;
        }
    }
    int given = data != NULL || (info && info->pipeline_cache_size > 0);
    int valid = cache_matches_device(context, data, size);
    context->pipeline_cache_state = valid ? 1 : given ? -1 : 0;
    VkPipelineCacheCreateInfo cache_info = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                            .initialDataSize = valid ? size : 0,
                                            .pInitialData = valid ? data : NULL};
    VkResult vr = context->vk.vkCreatePipelineCache(context->device, &cache_info,
                                                    context->allocator, &context->pipeline_cache);
    host_free(context->allocator, from_file);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreatePipelineCache");
    return MOEVK_SUCCESS;
}

void pipeline_cache_save(moevk_context *context) {
    if (!context->pipeline_cache_path || !context->pipeline_cache) return;
    size_t size = 0;
    if (context->vk.vkGetPipelineCacheData(context->device, context->pipeline_cache, &size, NULL) !=
            VK_SUCCESS ||
        size == 0)
        return;
    void *data = context_alloc((moevk_context *)context, size);
    if (!data) return;
    size_t path_length = strlen(context->pipeline_cache_path);
    char *temporary = context_alloc((moevk_context *)context, path_length + 8);
    if (temporary && context->vk.vkGetPipelineCacheData(context->device, context->pipeline_cache,
                                                        &size, data) == VK_SUCCESS) {
        /* Write beside, then rename: a reader never sees half a file. */
        snprintf(temporary, path_length + 8, "%s.tmp", context->pipeline_cache_path);
        FILE *file = fopen(temporary, "wb");
        int ok = file && fwrite(data, 1, size, file) == size;
        if (file) ok = fclose(file) == 0 && ok;
        if (ok) ok = rename(temporary, context->pipeline_cache_path) == 0;
        if (!ok) remove(temporary);
    }
    host_free(context->allocator, temporary);
    host_free(context->allocator, data);
}

moevk_result moevk_context_pipeline_cache(moevk_context *context, size_t *size, void *data) {
    if (!context || !size) return MOEVK_ERROR_INVALID_ARGUMENT;
    VkResult vr =
        context->vk.vkGetPipelineCacheData(context->device, context->pipeline_cache, size, data);
    if (vr != VK_SUCCESS && vr != VK_INCOMPLETE)
        return context_fail_vk(context, vr, "vkGetPipelineCacheData");
    return MOEVK_SUCCESS;
}

int moevk_context_pipeline_cache_state(const moevk_context *context) {
    return context ? context->pipeline_cache_state : 0;
}

moevk_result pipelines_create_cache(moevk_context *context, const moevk_context_info *info) {
    return create_pipeline_cache(context, info);
}

void pipelines_destroy_cache(moevk_context *context) {
    if (context->pipeline_cache)
        context->vk.vkDestroyPipelineCache(context->device, context->pipeline_cache,
                                           context->allocator);
}

/* The variant to build: asking for round-to-nearest-even where the device can and the kernel
 * has one, through addresses where the router needs them and the kernel touches a large
 * buffer, with a subgroup's lanes sharing each item where the router asks (subgroups: only a
 * stage whose kernel has those variants sets subgroup_lanes), else the plain one. */
static const shader_code *choose_variant(const moevk_context *context,
                                         const shader_code shaders[VARIANT_COUNT], int addresses,
                                         int subgroups) {
    const shader_variant order[2][2][2] = {
        {{VARIANT_RTE, VARIANT_PLAIN}, {VARIANT_RTE_ADDRESSES, VARIANT_ADDRESSES}},
        {{VARIANT_SUBGROUPS_RTE, VARIANT_SUBGROUPS},
         {VARIANT_SUBGROUPS_RTE_ADDRESSES, VARIANT_SUBGROUPS_ADDRESSES}}};
    int first = context->info.rounding_mode_rte ? 0 : 1;
    for (int a = addresses ? 1 : 0; a >= 0; --a)
        for (int i = first; i < 2; ++i)
            if (shaders[order[subgroups][a][i]].code) return &shaders[order[subgroups][a][i]];
    return &shaders[subgroups ? VARIANT_SUBGROUPS : VARIANT_PLAIN];
}

moevk_result pipeline_create(moevk_context *context, const shader_code shaders[VARIANT_COUNT],
                             int addresses, const stage_constants *constants,
                             VkPipelineLayout layout, VkPipeline *out) {
    const struct VolkDeviceTable *vk = &context->vk;
    int subgroups = constants->subgroup_lanes > 0;
    const shader_code *shader = choose_variant(context, shaders, addresses, subgroups);
    VkShaderModuleCreateInfo module_info = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                            .codeSize = shader->size,
                                            .pCode = shader->code};
    VkShaderModule module;
    VkResult vr =
        vk->vkCreateShaderModule(context->device, &module_info, context->allocator, &module);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateShaderModule");

    const uint32_t values[10] = {constants->workgroup_size, constants->choices,
                                 constants->num_experts,    constants->dtype,
                                 constants->hidden_dtype,   constants->groups,
                                 constants->topk_groups,    constants->selection_k,
                                 constants->activation,     constants->subgroup_lanes};
    const VkSpecializationMapEntry entries[10] = {
        {SPEC_WORKGROUP_SIZE, 0, 4}, {SPEC_CHOICES, 4, 4},       {SPEC_NUM_EXPERTS, 8, 4},
        {SPEC_DTYPE, 12, 4},         {SPEC_HIDDEN_DTYPE, 16, 4}, {SPEC_GROUPS, 20, 4},
        {SPEC_TOPK_GROUPS, 24, 4},   {SPEC_SELECTION_K, 28, 4},  {SPEC_ACTIVATION, 32, 4},
        {SPEC_SUBGROUP_LANES, 36, 4}};
    /* The plain variants have no SPEC_SUBGROUP_LANES (an entry a shader lacks is ignored). */
    VkSpecializationInfo specialization = {10, entries, sizeof values, values};
    /* A subgroup variant runs at the size its lanes were set for, in full subgroups (the
     * device offers that size: subgroup_lanes_offered). */
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfoEXT required_size = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO_EXT,
        .requiredSubgroupSize = constants->subgroup_lanes};
    VkComputePipelineCreateInfo pipeline_info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .pNext = subgroups ? &required_size : NULL,
                  .flags = subgroups
                               ? VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT_EXT
                               : 0,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main",
                  .pSpecializationInfo = &specialization},
        .layout = layout};
    vr = vk->vkCreateComputePipelines(context->device, context->pipeline_cache, 1, &pipeline_info,
                                      context->allocator, out);
    vk->vkDestroyShaderModule(context->device, module, context->allocator);
    if (vr != VK_SUCCESS) {
        *out = VK_NULL_HANDLE;
        return context_fail_vk(context, vr, "vkCreateComputePipelines");
    }
    return MOEVK_SUCCESS;
}
