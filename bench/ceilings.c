/* The device's own ceilings, measured in the same run as the routing: a large device-local
 * buffer copy (bytes read + written per second), independent FMA chains (FLOP/s) and one empty
 * dispatch (the launch floor). */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "copy.spv.h"
#include "empty.spv.h"
#include "fma.spv.h"

#define REPEATS 15

int bench_compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *values, int n) {
    qsort(values, (size_t)n, sizeof *values, bench_compare_double);
    return values[n / 2];
}

static int find_memory(const bench_device *device, uint32_t allowed, VkMemoryPropertyFlags want) {
    VkPhysicalDeviceMemoryProperties memory;
    vkGetPhysicalDeviceMemoryProperties(device->physical, &memory);
    for (uint32_t i = 0; i < memory.memoryTypeCount; ++i)
        if ((allowed & (1u << i)) && (memory.memoryTypes[i].propertyFlags & want) == want)
            return (int)i;
    return -1;
}

int bench_buffer_make(const bench_device *device, VkDeviceSize size, int host_visible,
                      VkBuffer *buffer, VkDeviceMemory *memory) {
    VkBufferCreateInfo info = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = size,
                               .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                                        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT};
    if (vkCreateBuffer(device->device, &info, NULL, buffer) != VK_SUCCESS) return 0;
    VkMemoryRequirements needs;
    vkGetBufferMemoryRequirements(device->device, *buffer, &needs);
    VkMemoryPropertyFlags want =
        host_visible ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                     : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    int type = find_memory(device, needs.memoryTypeBits, want);
    VkMemoryAllocateInfo allocate = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                     .allocationSize = needs.size,
                                     .memoryTypeIndex = (uint32_t)type};
    if (type < 0 || vkAllocateMemory(device->device, &allocate, NULL, memory) != VK_SUCCESS)
        return 0;
    return vkBindBufferMemory(device->device, *buffer, *memory, 0) == VK_SUCCESS;
}

int bench_timer_open(const bench_device *device, bench_timer *timer) {
    memset(timer, 0, sizeof *timer);
    VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                         .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                         .queueFamilyIndex = device->family};
    VkCommandBufferAllocateInfo cmd_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                            .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                            .commandBufferCount = 1};
    VkQueryPoolCreateInfo query_info = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                        .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                        .queryCount = 2};
    VkFenceCreateInfo fence_info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (vkCreateCommandPool(device->device, &pool_info, NULL, &timer->pool) != VK_SUCCESS) return 0;
    cmd_info.commandPool = timer->pool;
    return vkAllocateCommandBuffers(device->device, &cmd_info, &timer->cmd) == VK_SUCCESS &&
           vkCreateQueryPool(device->device, &query_info, NULL, &timer->queries) == VK_SUCCESS &&
           vkCreateFence(device->device, &fence_info, NULL, &timer->fence) == VK_SUCCESS;
}

void bench_timer_close(const bench_device *device, bench_timer *timer) {
    if (timer->fence) vkDestroyFence(device->device, timer->fence, NULL);
    if (timer->queries) vkDestroyQueryPool(device->device, timer->queries, NULL);
    if (timer->pool) vkDestroyCommandPool(device->device, timer->pool, NULL);
    memset(timer, 0, sizeof *timer);
}

/* Records `body` between two timestamps, submits, waits, returns milliseconds. */
double bench_timed_ms(const bench_device *device, bench_timer *s,
                      void (*body)(VkCommandBuffer, void *), void *user) {
    vkResetCommandBuffer(s->cmd, 0);
    VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    vkBeginCommandBuffer(s->cmd, &begin);
    vkCmdResetQueryPool(s->cmd, s->queries, 0, 2);
    vkCmdWriteTimestamp(s->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, s->queries, 0);
    body(s->cmd, user);
    vkCmdWriteTimestamp(s->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, s->queries, 1);
    vkEndCommandBuffer(s->cmd);
    VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                           .commandBufferCount = 1,
                           .pCommandBuffers = &s->cmd};
    vkQueueSubmit(device->queue, 1, &submit, s->fence);
    vkWaitForFences(device->device, 1, &s->fence, VK_TRUE, UINT64_MAX);
    vkResetFences(device->device, 1, &s->fence);
    uint64_t ticks[2] = {0, 0};
    vkGetQueryPoolResults(device->device, s->queries, 0, 2, sizeof ticks, ticks, sizeof ticks[0],
                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    uint64_t mask =
        device->timestamp_bits >= 64 ? UINT64_MAX : ((uint64_t)1 << device->timestamp_bits) - 1;
    return (double)((ticks[1] - ticks[0]) & mask) * device->timestamp_period * 1e-6;
}

typedef struct copy_job {
    VkBuffer from, to;
    VkDeviceSize size;
} copy_job;

static void record_copy(VkCommandBuffer cmd, void *user) {
    copy_job *job = user;
    VkBufferCopy region = {0, 0, job->size};
    vkCmdCopyBuffer(cmd, job->from, job->to, 1, &region);
}

/* A compute pipeline from embedded SPIR-V (the shader module is not kept). */
static VkPipeline make_pipeline(const bench_device *device, const uint32_t *code, size_t size,
                                VkPipelineLayout layout) {
    VkShaderModuleCreateInfo module_info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = size, .pCode = code};
    VkShaderModule module;
    VkPipeline pipeline = VK_NULL_HANDLE;
    if (vkCreateShaderModule(device->device, &module_info, NULL, &module) != VK_SUCCESS)
        return pipeline;
    VkComputePipelineCreateInfo pipeline_info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main"},
        .layout = layout};
    vkCreateComputePipelines(device->device, VK_NULL_HANDLE, 1, &pipeline_info, NULL, &pipeline);
    vkDestroyShaderModule(device->device, module, NULL);
    return pipeline;
}

/* A compute pipeline over a few storage buffers and push constants, ready to dispatch. */
typedef struct compute_job {
    VkPipeline pipeline;
    VkPipelineLayout layout;
    VkDescriptorSetLayout set_layout;
    VkDescriptorPool pool;
    VkDescriptorSet set;
    uint32_t push[4], push_bytes, groups;
} compute_job;

static void job_create(const bench_device *device, const uint32_t *code, size_t code_size,
                       uint32_t count, const VkDescriptorBufferInfo *buffers, uint32_t push_bytes,
                       compute_job *job) {
    memset(job, 0, sizeof *job);
    VkDescriptorSetLayoutBinding bindings[2];
    for (uint32_t i = 0; i < count; ++i)
        bindings[i] = (VkDescriptorSetLayoutBinding){i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1,
                                                     VK_SHADER_STAGE_COMPUTE_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = count,
        .pBindings = bindings};
    vkCreateDescriptorSetLayout(device->device, &set_info, NULL, &job->set_layout);
    VkPushConstantRange push = {VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
    VkPipelineLayoutCreateInfo layout_info = {.sType =
                                                  VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                              .setLayoutCount = 1,
                                              .pSetLayouts = &job->set_layout,
                                              .pushConstantRangeCount = 1,
                                              .pPushConstantRanges = &push};
    vkCreatePipelineLayout(device->device, &layout_info, NULL, &job->layout);
    VkDescriptorPoolSize pool_size = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, count};
    VkDescriptorPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .maxSets = 1,
                                            .poolSizeCount = 1,
                                            .pPoolSizes = &pool_size};
    vkCreateDescriptorPool(device->device, &pool_info, NULL, &job->pool);
    VkDescriptorSetAllocateInfo alloc = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = job->pool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &job->set_layout};
    vkAllocateDescriptorSets(device->device, &alloc, &job->set);
    VkWriteDescriptorSet writes[2];
    for (uint32_t i = 0; i < count; ++i)
        writes[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                           .dstSet = job->set,
                                           .dstBinding = i,
                                           .descriptorCount = 1,
                                           .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                           .pBufferInfo = &buffers[i]};
    vkUpdateDescriptorSets(device->device, count, writes, 0, NULL);
    job->pipeline = make_pipeline(device, code, code_size, job->layout);
    job->push_bytes = push_bytes;
}

static void job_destroy(const bench_device *device, compute_job *job) {
    vkDestroyPipeline(device->device, job->pipeline, NULL);
    vkDestroyDescriptorPool(device->device, job->pool, NULL);
    vkDestroyPipelineLayout(device->device, job->layout, NULL);
    vkDestroyDescriptorSetLayout(device->device, job->set_layout, NULL);
}

static void record_job(VkCommandBuffer cmd, void *user) {
    compute_job *job = user;
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, job->pipeline);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, job->layout, 0, 1, &job->set, 0,
                            NULL);
    vkCmdPushConstants(cmd, job->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, job->push_bytes,
                       job->push);
    vkCmdDispatch(cmd, job->groups, 1, 1);
}

/* The median milliseconds of a job after one warm-up run. */
static double job_median_ms(const bench_device *device, bench_timer *s, compute_job *job) {
    double times[REPEATS];
    bench_timed_ms(device, s, record_job, job);
    for (int i = 0; i < REPEATS; ++i) times[i] = bench_timed_ms(device, s, record_job, job);
    return bench_median(times, REPEATS);
}

/* The same copy by a compute shader: on some devices faster than vkCmdCopyBuffer. */
static double measure_shader_copy(bench_device *device, bench_timer *s, VkBuffer from, VkBuffer to,
                                  VkDeviceSize size) {
    VkDeviceSize range = device->properties.limits.maxStorageBufferRange;
    if (size > range) size = range & ~(VkDeviceSize)15;
    VkDescriptorBufferInfo infos[2] = {{from, 0, size}, {to, 0, size}};
    compute_job job;
    job_create(device, copy_spv, sizeof copy_spv, 2, infos, 4, &job);
    job.push[0] = (uint32_t)(size / 16); /* 16-byte units */
    job.groups = (job.push[0] + 255) / 256;
    if (job.groups > 65535) job.groups = 65535;
    double gbps = 2.0 * (double)size / (job_median_ms(device, s, &job) * 1e-3) * 1e-9;
    job_destroy(device, &job);
    return gbps;
}

/* Independent FMA chains (fma.comp): the FLOP/s a matrix product can hope for without tensor
 * cores. Enough workgroups to fill a GPU; fewer on a CPU device, for time. */
static double measure_fma(bench_device *device, bench_timer *s) {
    int cpu = device->properties.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t groups = cpu ? 64 : 8192, iterations = cpu ? 2048 : 4096;
    VkBuffer sink = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    double gflops = 0;
    if (bench_buffer_make(device, (VkDeviceSize)groups * 256 * 4, 0, &sink, &memory)) {
        VkDescriptorBufferInfo info = {sink, 0, VK_WHOLE_SIZE};
        compute_job job;
        job_create(device, fma_spv, sizeof fma_spv, 1, &info, 8, &job);
        float seed = 0.5f;
        job.push[0] = iterations;
        memcpy(&job.push[1], &seed, 4);
        job.groups = groups;
        double flop = 2.0 * 8 * iterations * 256.0 * groups;
        gflops = flop / (job_median_ms(device, s, &job) * 1e-3) * 1e-9;
        job_destroy(device, &job);
    }
    vkDestroyBuffer(device->device, sink, NULL);
    vkFreeMemory(device->device, memory, NULL);
    return gflops;
}

typedef struct empty_job {
    VkPipeline pipeline;
} empty_job;

static void record_empty(VkCommandBuffer cmd, void *user) {
    empty_job *job = user;
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, job->pipeline);
    vkCmdDispatch(cmd, 1, 1, 1);
}

int measure_ceilings(bench_device *device, ceilings *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    if (device->timestamp_bits == 0) {
        snprintf(error, error_size,
                 "the compute queue has no timestamps: no GPU times on this device");
        return 0;
    }
    bench_timer s = {0};
    bench_timer_open(device, &s);

    /* Copy: 256 MiB on a GPU, 64 MiB on a CPU device, halved until it allocates. */
    copy_job copy = {0};
    copy.size =
        device->properties.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? 64u << 20 : 256u << 20;
    VkDeviceMemory memory_a = VK_NULL_HANDLE, memory_b = VK_NULL_HANDLE;
    while (copy.size >= (1u << 20) &&
           (!bench_buffer_make(device, copy.size, 0, &copy.from, &memory_a) ||
            !bench_buffer_make(device, copy.size, 0, &copy.to, &memory_b))) {
        vkDestroyBuffer(device->device, copy.from, NULL);
        vkDestroyBuffer(device->device, copy.to, NULL);
        vkFreeMemory(device->device, memory_a, NULL);
        vkFreeMemory(device->device, memory_b, NULL);
        copy.from = copy.to = VK_NULL_HANDLE;
        memory_a = memory_b = VK_NULL_HANDLE;
        copy.size /= 2;
    }
    double times[REPEATS];
    if (copy.from) {
        bench_timed_ms(device, &s, record_copy, &copy); /* warm-up */
        for (int i = 0; i < REPEATS; ++i) times[i] = bench_timed_ms(device, &s, record_copy, &copy);
        out->copy_bytes = 2.0 * (double)copy.size;
        out->transfer_copy_gbps = out->copy_bytes / (bench_median(times, REPEATS) * 1e-3) * 1e-9;
        out->shader_copy_gbps = measure_shader_copy(device, &s, copy.from, copy.to, copy.size);
        out->copy_gbps = out->transfer_copy_gbps > out->shader_copy_gbps ? out->transfer_copy_gbps
                                                                         : out->shader_copy_gbps;
    }
    vkDestroyBuffer(device->device, copy.from, NULL);
    vkDestroyBuffer(device->device, copy.to, NULL);
    vkFreeMemory(device->device, memory_a, NULL);
    vkFreeMemory(device->device, memory_b, NULL);

    out->fma_gflops = measure_fma(device, &s);

    /* Launch floor: one empty dispatch. */
    VkPipelineLayoutCreateInfo layout_info = {.sType =
                                                  VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    VkPipelineLayout layout;
    vkCreatePipelineLayout(device->device, &layout_info, NULL, &layout);
    empty_job empty = {.pipeline = make_pipeline(device, empty_spv, sizeof empty_spv, layout)};
    bench_timed_ms(device, &s, record_empty, &empty);
    for (int i = 0; i < REPEATS; ++i) times[i] = bench_timed_ms(device, &s, record_empty, &empty);
    out->launch_ms = bench_median(times, REPEATS);
    vkDestroyPipeline(device->device, empty.pipeline, NULL);
    vkDestroyPipelineLayout(device->device, layout, NULL);

    bench_timer_close(device, &s);
    return 1;
}
