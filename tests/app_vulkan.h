/* The application side of the integration tests: an instance and device made through volk's
 * global function pointers, as an application that uses volk makes them, with the validation
 * layer and synchronization validation on, and buffers and a copy pipeline of its own. */
#ifndef MOEVK_TEST_APP_VULKAN_H
#define MOEVK_TEST_APP_VULKAN_H

#include <volk.h>

typedef struct app_vulkan {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice physical;
    VkDevice device;
    VkQueue queue;
    uint32_t family;
    VkCommandPool pool;
    VkFence fence;
    unsigned messages; /* validation messages seen */
    /* A compute pipeline copying 16-byte units from binding 0 to binding 1. */
    VkDescriptorSetLayout copy_set_layout;
    VkPipelineLayout copy_layout;
    VkPipeline copy_pipeline;
    VkDescriptorPool descriptor_pool;
} app_vulkan;

typedef struct app_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    void *mapped;
    VkDeviceSize size;
} app_buffer;

/* device_name: the physical device whose name matches (the harness's device); validation: the
 * layer with synchronization validation. 0 on failure. */
int app_create(app_vulkan *app, const char *device_name, int validation);
/* The same with VK_EXT_subgroup_size_control and its subgroupSizeControl and
 * computeFullSubgroups features enabled where the device has them (*enabled says whether). */
int app_create_with_size_control(app_vulkan *app, const char *device_name, int validation,
                                 int *enabled);
void app_destroy(app_vulkan *app);
int app_buffer_create(app_vulkan *app, VkDeviceSize size, app_buffer *out); /* host-visible */
void app_buffer_destroy(app_vulkan *app, app_buffer *buffer);
VkCommandBuffer app_begin(app_vulkan *app);
int app_submit_and_wait(app_vulkan *app, VkCommandBuffer cmd);
/* Records the application's own dispatch: copies `bytes` (a multiple of 16) from one buffer to
 * another with its compute pipeline. */
void app_record_copy(app_vulkan *app, VkCommandBuffer cmd, VkBuffer from, VkBuffer to,
                     VkDeviceSize bytes);
void app_barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags src_access,
                 VkPipelineStageFlags dst, VkAccessFlags dst_access);

#endif
