/* Whether a physical device can run the subgroup kernels (shaders/lanes.glsl), and at which
 * subgroup size: they shuffle values between a subgroup's lanes, and need every lane there, at a
 * size the pipeline fixes (VK_EXT_subgroup_size_control: a required size, full subgroups). */
#include "internal.h"

uint32_t subgroup_lanes_offered(const instance_functions *vki, VkPhysicalDevice device) {
    if (!instance_has_extension(vki, device, SUBGROUP_SIZE_CONTROL_EXTENSION)) return 0;
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT control = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT};
    VkPhysicalDeviceFeatures2 features = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                          .pNext = &control};
    vki->vkGetPhysicalDeviceFeatures2(device, &features);
    VkPhysicalDeviceSubgroupSizeControlPropertiesEXT sizes = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES_EXT};
    VkPhysicalDeviceSubgroupProperties subgroup = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &sizes};
    VkPhysicalDeviceProperties2 properties = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &subgroup};
    vki->vkGetPhysicalDeviceProperties2(device, &properties);
    const VkSubgroupFeatureFlags needed =
        VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
    if (!control.subgroupSizeControl || !control.computeFullSubgroups ||
        !(subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ||
        (subgroup.supportedOperations & needed) != needed ||
        !(sizes.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT))
        return 0;
    /* 32 where the device runs it (NVIDIA's size, one of AMD's and Intel's): more lanes than a
     * token's experts would leave idle at small E; else the size nearest it. */
    uint32_t lanes = 32;
    if (sizes.maxSubgroupSize < lanes) lanes = sizes.maxSubgroupSize;
    if (sizes.minSubgroupSize > lanes) lanes = sizes.minSubgroupSize;
    /* A workgroup of whole subgroups, as many as the device allows in one. */
    if (lanes == 0 || WORKGROUP_SIZE % lanes != 0 ||
        WORKGROUP_SIZE / lanes > sizes.maxComputeWorkgroupSubgroups)
        return 0;
    return lanes;
}
