/* An application that owns its Vulkan device, buffers and command buffers (linking libvulkan
 * the usual way) hands them to moevk: moevk records the route into the application's command
 * buffer, between the application's own commands, and the application submits. */
#include <stdio.h>
#include <string.h>

#include <vulkan/vulkan.h>

#include "moevk.h"

enum { T = 64, E = 4, K = 1, D = 8 };

typedef struct buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    void *mapped;
} buffer;

static int make_buffer(VkPhysicalDevice physical, VkDevice device, VkDeviceSize size, buffer *out) {
    VkBufferCreateInfo info = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = size,
                               .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_DST_BIT};
    if (vkCreateBuffer(device, &info, NULL, &out->buffer) != VK_SUCCESS) return 0;
    VkMemoryRequirements needs;
    vkGetBufferMemoryRequirements(device, out->buffer, &needs);
    VkPhysicalDeviceMemoryProperties memory;
    vkGetPhysicalDeviceMemoryProperties(physical, &memory);
    /* Host-visible memory keeps the example short; a real application may stage instead. */
    VkMemoryPropertyFlags want =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    for (uint32_t i = 0; i < memory.memoryTypeCount; ++i) {
        if (!(needs.memoryTypeBits & (1u << i)) ||
            (memory.memoryTypes[i].propertyFlags & want) != want)
            continue;
        VkMemoryAllocateInfo allocate = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                         .allocationSize = needs.size,
                                         .memoryTypeIndex = i};
        return vkAllocateMemory(device, &allocate, NULL, &out->memory) == VK_SUCCESS &&
               vkBindBufferMemory(device, out->buffer, out->memory, 0) == VK_SUCCESS &&
               vkMapMemory(device, out->memory, 0, VK_WHOLE_SIZE, 0, &out->mapped) == VK_SUCCESS;
    }
    return 0;
}

static void barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags src_access,
                    VkPipelineStageFlags dst, VkAccessFlags dst_access) {
    VkMemoryBarrier b = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                         .srcAccessMask = src_access,
                         .dstAccessMask = dst_access};
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &b, 0, NULL, 0, NULL);
}

int main(void) {
    /* The application's Vulkan. */
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .apiVersion = VK_API_VERSION_1_2};
    VkInstanceCreateInfo instance_info = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                          .pApplicationInfo = &app};
    VkInstance instance;
    if (vkCreateInstance(&instance_info, NULL, &instance) != VK_SUCCESS) return 1;
    VkPhysicalDevice physical;
    uint32_t count = 1;
    vkEnumeratePhysicalDevices(instance, &count, &physical);
    VkQueueFamilyProperties families[8];
    uint32_t family_count = 8, family = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(physical, &family_count, families);
    while (family < family_count && !(families[family].queueFlags & VK_QUEUE_COMPUTE_BIT)) ++family;
    float priority = 1;
    VkDeviceQueueCreateInfo queue_info = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                          .queueFamilyIndex = family,
                                          .queueCount = 1,
                                          .pQueuePriorities = &priority};
    VkDeviceCreateInfo device_info = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                      .queueCreateInfoCount = 1,
                                      .pQueueCreateInfos = &queue_info};
    VkDevice device;
    if (vkCreateDevice(physical, &device_info, NULL, &device) != VK_SUCCESS) return 1;
    VkQueue queue;
    vkGetDeviceQueue(device, family, 0, &queue);

    /* moevk adopts it; the application keeps ownership. */
    moevk_context_info context_info = {.instance = instance,
                                       .physical_device = physical,
                                       .device_handle = device,
                                       .queue_family_index = family,
                                       .get_instance_proc_addr = vkGetInstanceProcAddr};
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = K;
    info.max_tokens = T;
    info.hidden_size = D;
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r == MOEVK_SUCCESS) r = moevk_router_create(context, &info, &router);

    buffer logits = {0}, hidden = {0}, dispatched = {0};
    uint64_t rows = router ? moevk_router_max_dispatched_rows(router) : 0;
    int ok = r == MOEVK_SUCCESS && make_buffer(physical, device, T * E * 4, &logits) &&
             make_buffer(physical, device, T * D * 4, &hidden) &&
             make_buffer(physical, device, rows * D * 4, &dispatched);
    if (ok) {
        float *l = logits.mapped, *h = hidden.mapped;
        for (int t = 0; t < T; ++t) {
            for (int e = 0; e < E; ++e) l[t * E + e] = (float)((t * 7 + e * 3) % 5);
            for (int i = 0; i < D; ++i) h[t * D + i] = (float)t; /* each row names its token */
        }
        VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                             .queueFamilyIndex = family};
        VkCommandPool pool;
        vkCreateCommandPool(device, &pool_info, NULL, &pool);
        VkCommandBufferAllocateInfo alloc = {.sType =
                                                 VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                             .commandPool = pool,
                                             .commandBufferCount = 1};
        VkCommandBuffer cmd;
        vkAllocateCommandBuffers(device, &alloc, &cmd);
        VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
        vkBeginCommandBuffer(cmd, &begin);
        /* Entry: the host wrote the inputs; make them visible to moevk's compute reads. */
        barrier(cmd, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_WRITE_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
        moevk_route_input record = {.num_tokens = T,
                                    .logits = moevk_vulkan_tensor(logits.buffer, 0, 0),
                                    .hidden = moevk_vulkan_tensor(hidden.buffer, 0, 0)};
        moevk_route_output record_output = {.dispatched =
                                                moevk_vulkan_tensor(dispatched.buffer, 0, 0)};
        r = moevk_route_record(router, cmd, &record, &record_output);
        /* Exit: moevk's compute writes, read here by the host. */
        barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        vkEndCommandBuffer(cmd);
        VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                               .commandBufferCount = 1,
                               .pCommandBuffers = &cmd};
        if (r == MOEVK_SUCCESS) {
            vkQueueSubmit(queue, 1, &submit, VK_NULL_HANDLE);
            vkQueueWaitIdle(queue);
            uint32_t counts[E];
            moevk_route_stats stats = {0};
            moevk_route_output output = {.counts = moevk_host_tensor(counts), .stats = &stats};
            r = moevk_route_read(router, &output);
            const float *rows_out = dispatched.mapped;
            for (int e = 0; r == MOEVK_SUCCESS && e < E; ++e) {
                printf("expert %d: %u tokens:", e, counts[e]);
                for (uint32_t c = 0; c < counts[e] && c < 8; ++c)
                    printf(" %g", rows_out[((size_t)e * stats.capacity + c) * D]);
                printf("%s\n", counts[e] > 8 ? " ..." : "");
            }
        }
        vkDestroyCommandPool(device, pool, NULL);
    }
    if (r != MOEVK_SUCCESS) fprintf(stderr, "moevk: %s\n", moevk_context_last_error(context));
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    buffer *all[] = {&logits, &hidden, &dispatched};
    for (int i = 0; i < 3; ++i) {
        if (all[i]->buffer) vkDestroyBuffer(device, all[i]->buffer, NULL);
        if (all[i]->memory) vkFreeMemory(device, all[i]->memory, NULL);
    }
    vkDestroyDevice(device, NULL);
    vkDestroyInstance(instance, NULL);
    return ok && r == MOEVK_SUCCESS ? 0 : 1;
}
