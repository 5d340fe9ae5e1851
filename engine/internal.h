/* Internal declarations of the moevk engine: the context and router objects and the helpers
 * each engine file provides. Nothing here is public. */
#ifndef MOEVK_INTERNAL_H
#define MOEVK_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include <volk.h>

#include "moevk.h"
#include "moevk_testing.h"
#include "moevk_shared.h"
#include "platform.h"

/* Instance-level Vulkan entry points, loaded per context (volk's tables cover devices only). */
typedef struct instance_functions {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    PFN_vkCreateInstance vkCreateInstance;
    PFN_vkEnumerateInstanceLayerProperties vkEnumerateInstanceLayerProperties;
    PFN_vkEnumerateInstanceVersion vkEnumerateInstanceVersion;
    PFN_vkEnumerateInstanceExtensionProperties vkEnumerateInstanceExtensionProperties;
    PFN_vkEnumerateDeviceExtensionProperties vkEnumerateDeviceExtensionProperties;
    PFN_vkDestroyInstance vkDestroyInstance;
    PFN_vkEnumeratePhysicalDevices vkEnumeratePhysicalDevices;
    PFN_vkGetPhysicalDeviceProperties vkGetPhysicalDeviceProperties;
    PFN_vkGetPhysicalDeviceProperties2 vkGetPhysicalDeviceProperties2;
    PFN_vkGetPhysicalDeviceFeatures2 vkGetPhysicalDeviceFeatures2;
    PFN_vkGetPhysicalDeviceQueueFamilyProperties vkGetPhysicalDeviceQueueFamilyProperties;
    PFN_vkGetPhysicalDeviceMemoryProperties vkGetPhysicalDeviceMemoryProperties;
    PFN_vkCreateDevice vkCreateDevice;
    PFN_vkGetDeviceProcAddr vkGetDeviceProcAddr;
    PFN_vkCreateDebugUtilsMessengerEXT vkCreateDebugUtilsMessengerEXT;
    PFN_vkDestroyDebugUtilsMessengerEXT vkDestroyDebugUtilsMessengerEXT;
} instance_functions;

/* VK_KHR_portability_subset (its name is in vulkan_beta.h, which moevk does not include). */
#define PORTABILITY_SUBSET_EXTENSION "VK_KHR_portability_subset"
#define SUBGROUP_SIZE_CONTROL_EXTENSION "VK_EXT_subgroup_size_control"
/* instance.c: whether the loader (device VK_NULL_HANDLE) or a device offers an extension. */
int instance_has_extension(const instance_functions *vki, VkPhysicalDevice device,
                           const char *name);

/* ---- loader.c: the system Vulkan loader and function tables, no global state ---- */
/* Opens libvulkan and returns its vkGetInstanceProcAddr; *library receives the handle. */
PFN_vkGetInstanceProcAddr loader_open(void **library);
void loader_close(void *library);
void loader_load_global(instance_functions *fns, PFN_vkGetInstanceProcAddr gipa);
void loader_load_instance(instance_functions *fns, VkInstance instance);
void loader_load_device(struct VolkDeviceTable *table, VkDevice device,
                        PFN_vkGetDeviceProcAddr gdpa);

/* ---- host_memory.c: host allocations through the optional callbacks ---- */
void *host_alloc(const VkAllocationCallbacks *allocator, size_t size);
/* The same, counted in the context's host_allocations. */
void *context_alloc(moevk_context *context, size_t size);
void *context_calloc(moevk_context *context, size_t count, size_t size);
void *host_calloc(const VkAllocationCallbacks *allocator, size_t count, size_t size);
void host_free(const VkAllocationCallbacks *allocator, void *pointer);

struct moevk_context {
    const VkAllocationCallbacks *allocator;
    void *loader_library;
    instance_functions vki;
    struct VolkDeviceTable vk;
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    uint32_t queue_index;
    int owns_instance;
    int portability_enumeration; /* moevk's instance asked for VK_KHR_portability_enumeration */
    int owns_device;
    VkDebugUtilsMessengerEXT messenger;
    moevk_message_fn message_fn;
    void *message_user;
    atomic_uint validation_messages;
    atomic_ullong host_allocations; /* moevk's own, for moevk_context_host_allocations */
    atomic_ullong buffers_made;     /* numbers each moevk_buffer (moevk_buffer.serial) */
    moevk_test_hooks hooks;
    atomic_uint device_allocations; /* counted for hooks.fail_device_allocation */
    atomic_uint submissions;        /* counted for hooks.lose_device_at_submit */
    atomic_int lost;                /* the device was lost: every call says so */
    platform_lock lock;             /* guards the queue and last_error */
    moevk_device_info info;
    VkPhysicalDeviceMemoryProperties memory;
    VkPhysicalDeviceLimits limits;
    uint32_t timestamp_valid_bits; /* of the queue family; 0: no timestamps */
    VkPipelineCache pipeline_cache;
    int pipeline_cache_state;  /* see moevk_context_pipeline_cache_state */
    char *pipeline_cache_path; /* copied from the info; written back at destroy */
    char last_error[512];
    /* For buffer reads and writes: one command buffer, used under `lock`. */
    VkCommandPool command_pool;
    VkCommandBuffer command_buffer;
    VkFence fence;
};

/* ---- errors.c ---- */
/* Records a formatted message as the context's last error and returns `result`. */
moevk_result context_fail(moevk_context *context, moevk_result result, const char *format, ...)
    PRINTF_LIKE(3, 4);
/* MOEVK_ERROR_DEVICE_LOST (with a message) once the context's device was lost, else success. */
moevk_result context_check_alive(moevk_context *context);
/* A queue submission, counted for the lose_device_at_submit hook; call under the context lock. */
VkResult context_submit(moevk_context *context, const VkSubmitInfo *submit, VkFence fence);
/* Maps a failed VkResult to a moevk result and records which call failed. */
moevk_result context_fail_vk(moevk_context *context, VkResult vk_result, const char *call);

/* ---- instance.c: creating an instance and choosing a physical device ---- */
moevk_result instance_create(moevk_context *context, const moevk_context_info *info);
moevk_result instance_choose_device(moevk_context *context, const char *selector);
void instance_fill_device_info(const instance_functions *vki, VkPhysicalDevice device,
                               moevk_device_info *info);

/* ---- subgroup_lanes.c ---- */
/* The subgroup size at which the device can run the subgroup kernels (shaders/lanes.glsl) once
 * VK_EXT_subgroup_size_control and its features are enabled; 0 where it cannot. */
uint32_t subgroup_lanes_offered(const instance_functions *vki, VkPhysicalDevice device);

/* ---- device.c: creating or adopting the logical device ---- */
moevk_result device_create(moevk_context *context, moevk_memory_mode memory_mode,
                           int adopted_addresses, int adopted_size_control);

/* ---- loop_budget.c: lavapipe's loop limit (see LOOP_BUDGET) ---- */
int device_has_loop_limit(const moevk_device_info *info);
/* MOEVK_ERROR_TOO_LARGE (with the bound) when a stage of the router would pass the limit. */
moevk_result router_check_loop_budget(moevk_context *context, const moevk_router_info *info);

/* ---- gpu_buffer.c: buffers with their own memory ---- */
typedef struct gpu_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    void *mapped;            /* non-NULL when host-visible */
    VkDeviceAddress address; /* non-zero when created addressable */
} gpu_buffer;

typedef enum buffer_kind {
    BUFFER_DEVICE,        /* device-local; mapped too where the context maps device memory */
    BUFFER_UPLOAD,        /* host-visible, coherent: staging for uploads */
    BUFFER_READBACK,      /* host-visible, coherent, cached where possible: staging for reads */
    BUFFER_HOST_RESIDENT, /* host-visible system memory the device reads in place (offload) */
} buffer_kind;

/* addressable: usable through its device address (needs the context's buffer_device_address). */
moevk_result gpu_buffer_create(moevk_context *context, VkDeviceSize size, buffer_kind kind,
                               int addressable, gpu_buffer *out);
void gpu_buffer_destroy(moevk_context *context, gpu_buffer *buffer);

struct moevk_buffer {
    moevk_context *context;
    gpu_buffer gpu;
    uint64_t size;
    /* Never reused within the context (unlike an address or a handle after a destroy): what a
     * route's recording key names the buffer by (route_key.c). */
    uint64_t serial;
};

/* ---- buffer.c: the context's command buffer for buffer copies ---- */
moevk_result context_commands_create(moevk_context *context);
/* Copies between host memory and a device buffer, waiting (mapped memory: a memcpy). */
moevk_result gpu_buffer_host_copy(moevk_context *context, const gpu_buffer *device, uint64_t offset,
                                  void *host, uint64_t size, int to_buffer);
void context_commands_destroy(moevk_context *context);
/* A copy between two device buffers on the device, waiting. */
moevk_result gpu_buffer_device_copy(moevk_context *context, const gpu_buffer *source,
                                    uint64_t source_offset, const gpu_buffer *destination,
                                    uint64_t destination_offset, uint64_t size);
/* Fills buffers with zeros on the device, waiting (at most BINDING_COUNT). */
moevk_result gpu_buffers_zero(moevk_context *context, const gpu_buffer *const *buffers, int count);

/* ---- stage_table.h: the stages, in route order ---- */
#include "stage_table.h"

/* The most buffers one kernel binds (its descriptor set's storage buffers): what devices were
 * asked for before the layer's bindings came, so that no device moevk ran on is refused now. */
#define MAX_KERNEL_BUFFERS 32
/* What the router holds for each kernel (one shader) of a stage (engine/stage.c). */
#define NO_KERNEL_BOUND (-1)
typedef struct kernel_state {
    VkDescriptorSetLayout set_layout; /* the kernel's own buffers only */
    VkPipelineLayout layout;          /* that set and the kernel's push constants */
    VkPipeline pipeline;
    VkDescriptorSet own_set;      /* the router's buffers */
    VkDescriptorSet external_set; /* the application's where record_external.c binds them */
} kernel_state;

/* ---- loop_budget.c ---- */
/* Invocations per workgroup of a router's stage: WORKGROUP_SIZE, except that on lavapipe the
 * stage whose one workgroup walks all of an expert's tokens (the score policy's select) gets
 * the widest power of two up to WIDE_WORKGROUP_SIZE that the device allows when max_tokens
 * would take 64 invocations past the loop limit. */
uint32_t stage_workgroup_size(const moevk_context *context, const moevk_router_info *info,
                              stage_id which);

/* ---- pipelines.c: the pipeline cache and the kernels' pipelines ---- */
/* Creates the pipeline cache (from the info's data or file, when valid). */
moevk_result pipelines_create_cache(moevk_context *context, const moevk_context_info *info);
/* Writes the pipeline cache to the info's path, if one was given (errors are ignored). */
void pipeline_cache_save(moevk_context *context);
void pipelines_destroy_cache(moevk_context *context);
/* A stage's specialization constants (shaders/moevk_shared.h, SPEC_*). */
typedef struct stage_constants {
    uint32_t workgroup_size; /* stage_workgroup_size */
    uint32_t choices, selection_k, num_experts, dtype, hidden_dtype, groups, topk_groups;
    uint32_t activation; /* the layer's (ACTIVATION_*) */
    /* Non-zero: the kernel's subgroup variant, required to run at this subgroup size. */
    uint32_t subgroup_lanes;
} stage_constants;
/* The SPIR-V of a kernel in one variant (embedded by its stage's file; code NULL: not built). */
typedef struct shader_code {
    const char *name;
    const uint32_t *code;
    size_t size; /* bytes */
} shader_code;
typedef enum shader_variant {
    VARIANT_PLAIN,
    VARIANT_ADDRESSES,     /* reaches the large buffers through device addresses */
    VARIANT_RTE,           /* asks for round-to-nearest-even f32 arithmetic */
    VARIANT_RTE_ADDRESSES, /* both */
    /* The same four with a subgroup's lanes sharing each item (shaders/lanes.glsl). */
    VARIANT_SUBGROUPS,
    VARIANT_SUBGROUPS_ADDRESSES,
    VARIANT_SUBGROUPS_RTE,
    VARIANT_SUBGROUPS_RTE_ADDRESSES,
    VARIANT_COUNT
} shader_variant;
/* Creates a kernel's compute pipeline from the variant the device and router call for. */
moevk_result pipeline_create(moevk_context *context, const shader_code shaders[VARIANT_COUNT],
                             int addresses, const stage_constants *constants,
                             VkPipelineLayout layout, VkPipeline *out);

/* One call's plan: its sizes and options, worked out once on the host (router_plan). Each stage
 * fills its own push constants from the fields its header lists (engine/stage.h), so this
 * struct is the host's alone and may grow; `phase` and `token_chunk` are set per dispatch. */
typedef struct route_plan {
    uint32_t num_tokens;
    uint32_t num_experts;
    uint32_t choices; /* columns of the per-token arrays: k, or E in EXPERT_CHOICE */
    uint32_t hidden_size;
    uint32_t capacity;
    uint32_t flags;
    uint32_t num_blocks;
    uint32_t block_size;
    uint32_t choice_block_tokens; /* EXPERT_CHOICE: the tokens of a (block, expert) workgroup */
    uint32_t pad_multiple;
    uint32_t stat_blocks;
    uint32_t rows_per_stat_block;
    uint32_t dispatched_rows;
    float temperature;
    float scale;
    uint32_t phase;
    uint32_t mode_param; /* SEQUENCE, BATCH: tokens per sequence; SINKHORN: iteration cap */
    /* The large buffers' device addresses, when the router reaches them so. */
    VkDeviceAddress logits_address;
    VkDeviceAddress hidden_address;
    VkDeviceAddress dispatched_address;
    VkDeviceAddress expert_out_address;
    VkDeviceAddress combined_address;
    /* The losses' coefficients and counts (moevk_router_losses). */
    float aux_coef, z_coef, importance_coef, load_coef, entropy_coef, sequence_coef;
    uint32_t sequence_length, valid_rows, assignments, token_chunk;
    uint32_t batch_sequences; /* the sequence loss's mean is over these: T / S, or a batch's */
    uint32_t noise_kind;
    float noise_amount;
    uint32_t noise_seed_low;
    uint32_t noise_seed_high;
    uint32_t noise_step;
    uint32_t noise_layer;
    uint32_t noise_row_offset; /* added to the counter's row (moevk_route_input's) */
    /* A layer's FFN sizes (moevk_layer). */
    uint32_t intermediate_size;
    uint32_t shared_intermediate_size;
    uint32_t profile_bins; /* the routing profile's bins per measure (FLAG_PROFILE) */
    /* The layer's backward (moevk_layer_backward): where the gate's half of BINDING_GRAD_PRE
     * starts (floats), and which weight gradient grad_expert_weights.comp makes. */
    uint32_t grad_pre_stride, grad_matrix;
    uint32_t shared_pre_stride; /* the same for BINDING_GRAD_SHARED_PRE */
} route_plan;

typedef struct transfer_plan {
    moevk_router *router;
    VkCommandBuffer commands;
    /* The commands were recorded by an earlier call of the same key (route_key.c): the plan
     * only moves the data, records nothing, and submits them again. */
    int replay;
    VkDeviceSize upload_used;
    VkDeviceSize readback_used;
    int readback_count;
    int readbacks_overflowed; /* more downloads than readbacks: transfer_submit refuses */
    int staging_overflowed;   /* more bytes than the staging buffers hold: the same */
    struct readback {
        int binding;
        VkDeviceSize bytes;
        VkDeviceSize staging_offset;
        void *destination;
    } readbacks[BINDING_COUNT]; /* a call downloads each binding once at most */
} transfer_plan;

/* ---- router.c ---- */
/* What the router's buffers hold of the last route, and its transitions:
 *   ROUTE_NONE      at creation, and from the moment a route call starts until it has waited;
 *   ROUTE_RUN       moevk_route, or moevk_route_submit once moevk_router_wait succeeded: the
 *                   route ran on the router's own buffers, which moevk_router_losses reads;
 *   ROUTE_RECORDED  moevk_record_route: the inputs were the application's buffers (the
 *                   losses are refused). Combine, the per-expert loss and moevk_router_read
 *                   need a route that is not ROUTE_NONE. */
typedef enum route_state { ROUTE_NONE, ROUTE_RUN, ROUTE_RECORDED } route_state;
/* And of the last combine since that route:
 *   COMBINE_NONE      after every route, and from the moment a combine call starts;
 *   COMBINE_RUN       moevk_combine*, once waited for: the expert outputs are in the router's
 *                     buffer, which the losses' dL/dcombined reads;
 *   COMBINE_RECORDED  moevk_record_combine (the expert outputs were the application's). */
typedef enum combine_state { COMBINE_NONE, COMBINE_RUN, COMBINE_RECORDED } combine_state;
/* The asynchronous call in flight, if any. */
typedef enum pending_call {
    PENDING_NONE,
    PENDING_ROUTE,
    PENDING_COMBINE,
    PENDING_LOSSES,
    PENDING_BACKWARD /* moevk_layer_backward */
} pending_call;

/* What part of an expert-parallel layer a layer is (layer_shape.parts; moevk_parts.h gives
 * libmoevk_mpi the same values as moevk_parts_role). */
enum { PARTS_NONE = 0, PARTS_HOME = 1, PARTS_EXPERTS = 2 };

/* What a layer adds to its router (moevk_layer_info past the routing; active 0: a plain
 * router). */
typedef struct layer_shape {
    int active;
    uint32_t intermediate_size, shared_intermediate_size;
    moevk_activation activation;
    moevk_dtype weight_type; /* gate's and up's */
    moevk_dtype down_type;   /* down's (weight_type unless the layer gave its own) */
    int biases, shared_gate;
    int host_weights; /* the FFN weights in host memory (BUFFER_HOST_RESIDENT) */
    int trainable;    /* the backward's buffers and pipelines (moevk_layer_backward) */
    /* 0, or the part of an expert-parallel layer this one is (moevk_parts_role, layer_parts.h):
     * HOME routes and combines with no routed experts of its own, EXPERTS runs rows given. */
    int parts;
} layer_shape;

/* engine/route_key.c: what a route call records, as a value (routes recorded once). */
enum { ROUTE_KEY_TENSORS = 16 };
typedef struct route_key {
    route_plan plan;
    uint32_t with_dispatch, layer, route_only, tensor_count;
    struct route_key_tensor {
        uint64_t kind, serial, offset;
    } tensors[ROUTE_KEY_TENSORS];
} route_key;

struct moevk_router {
    moevk_context *context;
    moevk_router_info info;
    layer_shape layer;
    gpu_buffer buffers[BINDING_COUNT];
    gpu_buffer upload;   /* staging, only when device memory is not mapped */
    gpu_buffer readback; /* staging, only when device memory is not mapped */
    VkDescriptorPool descriptor_pool;
    kernel_state kernels[STAGE_COUNT][MAX_STAGE_KERNELS];
    VkCommandPool command_pool;
    VkCommandBuffer command_buffer;
    /* The routes' own command buffer, kept while calls of one key follow each other
     * (route_key.c); route_key_valid: it holds route_key's recording, ready to submit again. */
    VkCommandBuffer route_commands;
    route_key route_key;
    int route_key_valid;
    int last_route_replayed; /* the route pending or last run resubmitted route_commands */
    /* Counted as commands are recorded (recording.c), and what the last route's recording held
     * (record.c; route_counted 0 before any). */
    uint32_t recorded_dispatches, recorded_barriers;
    moevk_recording_counts route_counts;
    int route_counted;
    VkFence fence;
    /* What the stages record into: the router's own command buffer with its own buffers, or an
     * application's command buffer with the kernels' external sets (record_external.c). */
    VkCommandBuffer recording;
    int recording_external;
    /* The kernel whose pipeline and set the recording has bound (stage * MAX_STAGE_KERNELS +
     * kernel), so that a run of its dispatches binds them once; NO_KERNEL_BOUND when a
     * recording starts. */
    int bound_kernel;
    VkQueryPool timestamps; /* when profiling: TIMESTAMP_COUNT queries */
    uint64_t max_dispatched_rows;
    int use_addresses; /* the large buffers are reached through device addresses */
    /* Scores and top-k's subgroup size (a subgroup per token), 0: an invocation per token. */
    uint32_t selection_lanes;
    /* The router's state: what its buffers hold of the last route and combine (router_state). */
    route_state route;
    combine_state combine;
    int layer_timed; /* the last route was a layer's forward: TIMESTAMP_LAYER_END is written */
    /* The last route: its plan (for combine, the losses, the per-expert loss) and the counts
     * the losses need. */
    route_plan last;
    uint64_t last_assignments;
    uint32_t last_valid_rows;
    int last_noise_std_positive; /* every std of the last route's Gaussian noise is > 0 */
    /* An expert-parallel home half's rows in its last moevk_parts_combine (UINT32_MAX: none
     * since its route), what its backward gives gradients of (layer_parts_backward.c). */
    uint32_t parts_rows;
    /* Work submitted by moevk_route_submit or moevk_combine_submit, completed by
     * moevk_router_wait. */
    pending_call pending;
    transfer_plan pending_plan;
    route_plan pending_params;
    moevk_route_output pending_output; /* as this library's struct */
    moevk_route_stats *pending_stats;  /* the caller's, filled to its struct_size */
    moevk_losses *pending_losses;      /* the same, for moevk_router_losses_submit */
    /* The last losses call's info (as this library's struct), for its wait or read, and whether
     * losses were recorded since the last route (moevk_router_losses_read). */
    moevk_loss_info losses_info;
    int losses_recorded;
};

/* Creates a router, a layer's when layer is not NULL (moevk_router_create: NULL). */
moevk_result router_create(moevk_context *context, const moevk_router_info *info,
                           const layer_shape *layer, moevk_router **out);
/* route.c: what a layer's forward adds to a route call (moevk_layer_forward). */
typedef struct layer_call {
    const moevk_tensor *output;        /* [T, d] hidden_type */
    const moevk_tensor *router_logits; /* [T, E] f32, or NONE */
    /* An expert-parallel layer's home half (layer_parts.c): the route and shared experts only,
     * the routed experts and the combine left for moevk_parts_combine. */
    int route_only;
    uint32_t ffn_tokens; /* the T whose size picks the FFN's decode form (0: this call's) */
} layer_call;
/* route.c: a route call (moevk_route_submit), a layer's when layer is not NULL: then the
 * logits are projected with the router weights in place and the layer's stages follow. */
moevk_result route_submit(moevk_router *router, const moevk_route_input *input,
                          const moevk_route_output *output, const layer_call *layer);
/* route_key.c: the key of a route call (with_dispatch: whether its route dispatches rows), and
 * whether the router's route command buffer holds its recording. */
void route_key_of(route_key *key, const route_plan *plan, int with_dispatch,
                  const moevk_route_input *input, const moevk_route_output *output,
                  const layer_call *layer);
int route_key_recorded(const moevk_router *router, const route_key *key);

/* record_external.c: a recorded route (moevk_route_record), a layer's when layer is not NULL
 * (moevk_layer_record): its tensors are the application's VULKAN buffers. */
moevk_result route_record_call(moevk_router *router, VkCommandBuffer command_buffer,
                               const moevk_route_input *input, const moevk_route_output *output,
                               const layer_call *layer);
/* route.c: waits for the router's submitted work and checks the device is alive: what every
 * call that touches the router's buffers does first. */
moevk_result router_settle(moevk_router *router);
/* route.c: the route's statistics from the device's expert counts and stat totals, and the
 * decisions' header (DECISION_HEADER floats; NULL unless the route ran Sinkhorn). */
void route_fill_stats(const moevk_router *router, const route_plan *params,
                      const uint32_t *expert_info, const float *totals,
                      const float *decision_header, moevk_route_stats *stats);
/* The statistics a route's counts and sums give: from expert_info (EXPERT_INFO's layout: counts
 * before drops [E], kept [E], offsets [E + 1]) the assignments, drops, capacity (UINT32_MAX:
 * dropless) and rows; from sums over the valid rows ([E] of each expert's probability, then of
 * the logsumexp, its square and the entropy) the means. */
void route_stats_from_sums(moevk_route_stats *stats, uint32_t E, const uint32_t *expert_info,
                           uint32_t capacity, uint32_t valid, const double *sums);

/* route.c: the host outputs among counts, counts_before and offsets, from the expert info. */
void route_copy_counts(const moevk_route_output *output, const uint32_t *expert_info, uint64_t E);
/* engine/route_profile.c: a route's part in the routing profile (moevk_route_output.profile and
 * drift_profile): the checks, the device's header and flags, its download, and afterwards the
 * batch added to the profile or judged against it (into stats). */
moevk_result route_profile_check(const moevk_router *router, const moevk_route_output *output);
void route_profile_plan(moevk_router *router, const moevk_route_output *output, route_plan *plan,
                        transfer_plan *transfer);
void route_profile_download(moevk_router *router, const moevk_route_output *output,
                            const route_plan *plan, transfer_plan *transfer);
void route_profile_complete(moevk_router *router, const moevk_route_output *output,
                            const route_plan *plan, const uint32_t *expert_info,
                            moevk_route_stats *stats);
/* route.c: a route call's input and output as this library's structs (defaults past the
 * caller's struct_size); output may be NULL (left empty). */
moevk_result route_read_call(moevk_context *context, const moevk_route_input *input,
                             const moevk_route_output *output, moevk_route_input *full_input,
                             moevk_route_output *full_output);

/* Adds the router's noise for one call (nothing in inference mode or without noise). */
void router_plan_noise(const moevk_router *router, const moevk_route_input *input,
                       route_plan *params);
/* The noise state buffer's words for a plan (BINDING_NOISE_STATE: read by the shaders instead
 * of push constants, so that a recorded route serves every step). */
void noise_state_words(const route_plan *params, uint32_t words[NOISE_STATE_WORDS]);
/* EXPERT_CHOICE's tokens per (block, expert) workgroup (moevk_router_info.choice_block_tokens,
 * 0: the device kind's). */
uint32_t router_choice_block_tokens(const moevk_router *router);
/* Sizes of one route call: capacity, block partition, rows. */
void router_plan(const moevk_router *router, const moevk_route_input *input, route_plan *params);
/* The FFN's form for a call of ffn_tokens tokens: the decode (matrix-vector) kernels up to
 * MATVEC_ROWS, the tiled ones past them. */
void router_plan_ffn_form(route_plan *params, uint32_t ffn_tokens);
/* The capacity C a route call of input->num_tokens tokens gets (its factor, the eval factor
 * or the schedule's, as router_plan takes it); UINT32_MAX where dropless. */
uint32_t router_call_capacity(const moevk_router_info *info, const moevk_route_input *input);
/* INVALID_ARGUMENT when a call's own options do not fit the router (its capacity factor). */
moevk_result router_check_call(const moevk_router *router, const moevk_route_input *input);
/* Bucketing partitions its work into at most this many blocks, so that its per-block table has
 * a fixed size. */
#define MAX_BUCKET_BLOCKS 1024u
/* The rows of each statistics block of a call over num_tokens tokens (the last may have fewer);
 * the stats, the losses and the per-expert loss share the blocks' partition. */
uint32_t router_stat_block_rows(const moevk_router_info *info, uint32_t num_tokens);
/* Statistics blocks for max_tokens. */
uint64_t router_max_stat_blocks(const moevk_router_info *info);
/* Checks options; writes the reason to the context on failure. */
moevk_result router_check_info(moevk_context *context, const moevk_router_info *info);
/* The caller's router info as this library's struct (defaults past its struct_size). */
moevk_result router_read_info(moevk_context *context, const moevk_router_info *given,
                              moevk_router_info *full);

/* Timestamp queries of a profiling router, written between stages. */
enum timestamp_point {
    TIMESTAMP_ROUTE_START,
    TIMESTAMP_AFTER_TOPK,
    TIMESTAMP_AFTER_BUCKETING,
    TIMESTAMP_AFTER_DISPATCH,
    TIMESTAMP_ROUTE_END,
    TIMESTAMP_COMBINE_START,
    TIMESTAMP_COMBINE_END,
    TIMESTAMP_LAYER_END,     /* a layer's experts, shared experts and combine, after ROUTE_END */
    TIMESTAMP_AFTER_EXPERTS, /* a layer's routed experts (tile map, up, down) done */
    TIMESTAMP_AFTER_SHARED_EXPERTS, /* its shared experts done: the combine follows */
    TIMESTAMP_COUNT
};

/* ---- record.c (the route's stage table), combine.c, losses.c, expert_loss.c, recording.c ---- */
void record_route(moevk_router *router, const route_plan *params, int with_dispatch);
void record_combine(moevk_router *router, const route_plan *params);
/* A layer's stages after its route: the routed experts (experts.c), the shared experts
 * (shared_experts.c), the layer's combine into BINDING_COMBINED (layer_combine.c). */
/* The layer's stages after its route (engine/layer.c): experts, shared experts, combine; only
 * the shared experts where route_only (an expert-parallel layer's home half). */
void record_layer(moevk_router *router, const route_plan *params, int route_only);
/* experts.c: the most tiles a route of the layer's router cuts its rows into. */
uint64_t layer_max_tiles(const moevk_router *router);
/* The losses stage's phases (shaders/losses.comp) that the call needs. */
typedef struct loss_phases {
    int counts; /* a recorded route: its valid rows and assignments from the device */
    int thresholds, cv2_slopes, sequences, weights_backward, logits_backward;
    int noise_slope, noise_reduce; /* the gradient of the Gaussian noise's std */
    /* The importance and load totals uploaded (a batch several halves routed): no partial or
     * column sums. */
    int totals_given;
    int load_terms; /* each (token, expert)'s load term into BINDING_GRAD_LOGITS */
} loss_phases;
void record_losses(moevk_router *router, const route_plan *params, const loss_phases *phases);
/* Per-expert sums of the per-token loss in BINDING_EXPERT_LOSS over the route's kept choices. */
void record_expert_loss(moevk_router *router, const route_plan *params);
/* A global memory barrier: everything written before is visible to what follows. */
void record_barrier(moevk_router *router, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                    VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);

/* losses.c: the losses' values of a submitted losses call, once waited for. */
void losses_complete(moevk_router *router);
/* losses.c, for a layer's backward: the plan and phases of the losses (coefficients from
 * caller_info, NULL-free; its tensors NONE) whose dL/dweights the layer writes on the device,
 * with dL/dlogits; their downloads, and their values once the submission has completed. */
moevk_result losses_plan_for_layer(moevk_router *router, const moevk_loss_info *caller_info,
                                   route_plan *params, loss_phases *phases, moevk_loss_info *info);
/* cv2(v) = var(v) / (mean(v)^2 + 1e-10), population variance, in double: the importance and
 * load losses' value. */
double losses_cv2(const float *values, uint32_t n);
void losses_download(transfer_plan *plan, const moevk_router *router);
void losses_values(const moevk_router *router, const moevk_loss_info *info,
                   const transfer_plan *plan, moevk_losses *losses);

/* ---- record_external.c: the application's buffers in the kernels' external sets ---- */
typedef struct external_binding {
    int binding;
    const moevk_tensor *tensor; /* NONE: the router's own buffer */
    VkDeviceSize needed;        /* bytes the stage touches */
    const char *name;
} external_binding;
/* Starts recording into the application's command buffer: points the external sets of the
 * kernels that bind each binding at its tensor (checked first: NONE or VULKAN only; NONE goes
 * back to the router's own buffer), then orders the recording after earlier work on the router's
 * own buffers (not the application's). */
moevk_result external_begin(moevk_router *router, VkCommandBuffer command_buffer,
                            const external_binding *bindings, int count);

/* ---- transfer.c: one call's uploads, downloads and submission ---- */

/* Starts recording the router's command buffer, for one submission. */
moevk_result transfer_begin(transfer_plan *plan, moevk_router *router);
/* How a plan treats its command buffer: records it for one submission, records it to be
 * submitted again (a route's, route_key.c), or submits it again as recorded, moving only the
 * data (the uploads' copies into staging, the downloads' list). */
typedef enum transfer_mode { TRANSFER_ONCE, TRANSFER_KEPT, TRANSFER_REPLAY } transfer_mode;
moevk_result transfer_begin_on(transfer_plan *plan, moevk_router *router, VkCommandBuffer commands,
                               transfer_mode mode);
/* Writes host data to a binding: directly where mapped, else through staging (recorded). */
void transfer_upload(transfer_plan *plan, int binding, const void *source, VkDeviceSize bytes);
/* Records a device copy between a moevk_buffer and a binding (to_binding: buffer -> binding). */
void transfer_device_copy(transfer_plan *plan, int binding, VkDeviceSize binding_offset,
                          moevk_buffer *buffer, VkDeviceSize buffer_offset, VkDeviceSize bytes,
                          int to_binding);
/* After the stages: copies a binding the shaders wrote into a moevk_buffer, on the device. */
void transfer_copy_out(transfer_plan *plan, int binding, VkDeviceSize binding_offset,
                       moevk_buffer *buffer, VkDeviceSize buffer_offset, VkDeviceSize bytes);
/* Makes the uploads visible to the compute stages; call after the last upload. */
void transfer_uploads_done(transfer_plan *plan);
/* Asks for a binding's first `bytes` to be copied to `destination` after the work;
 * destination NULL: left for transfer_downloaded. */
void transfer_download(transfer_plan *plan, int binding, void *destination, VkDeviceSize bytes);
/* Ends recording and submits; then waits (MOEVK_NOT_READY past the timeout) and copies the
 * downloads out. */
moevk_result transfer_submit(transfer_plan *plan);
moevk_result transfer_complete(transfer_plan *plan, uint64_t timeout_ns);
/* After transfer_complete: where a download of `binding` can be read (NULL if none was asked). */
const void *transfer_downloaded(const transfer_plan *plan, int binding);

#include "sized.h"

/* ---- tensor.c ---- */
#define TENSOR_KIND_BIT(kind) (1u << (unsigned)(kind))
#define TENSOR_NONE TENSOR_KIND_BIT(MOEVK_TENSOR_NONE)
#define TENSOR_HOST TENSOR_KIND_BIT(MOEVK_TENSOR_HOST)
#define TENSOR_BUFFER TENSOR_KIND_BIT(MOEVK_TENSOR_BUFFER)
#define TENSOR_VULKAN TENSOR_KIND_BIT(MOEVK_TENSOR_VULKAN)
/* Whether a call was given the tensor (it is not NONE). */
static inline int tensor_given(const moevk_tensor *tensor) {
    return tensor->kind != MOEVK_TENSOR_NONE;
}
/* INVALID_ARGUMENT (naming the tensor) unless it is one of `kinds` and holds `bytes`. */
moevk_result tensor_check(moevk_context *context, const char *name, const moevk_tensor *tensor,
                          unsigned kinds, uint64_t bytes);
/* Moves a HOST or BUFFER tensor into a binding (NONE: nothing). */
void tensor_upload(transfer_plan *plan, int binding, const moevk_tensor *tensor,
                   VkDeviceSize bytes);
/* After the stages: a binding's bytes from binding_offset into a BUFFER tensor, or (offset 0)
 * into a HOST one (NONE: nothing). */
void tensor_download(transfer_plan *plan, int binding, VkDeviceSize binding_offset,
                     const moevk_tensor *tensor, VkDeviceSize bytes);

/* Columns of the per-token arrays: top_k, or E when experts choose (EXPERT_CHOICE). */
static inline uint32_t router_choices(const moevk_router_info *info) {
    return info->mode == MOEVK_MODE_EXPERT_CHOICE ? info->num_experts : info->top_k;
}

static inline uint32_t div_ceil_u32(uint32_t a, uint32_t b) { return a / b + (a % b != 0); }
static inline uint64_t dtype_bytes(moevk_dtype type) { return type == MOEVK_DTYPE_F32 ? 4 : 2; }
/* A weight type's block: its weights and bytes (1 weight for F32, F16, BF16). */
static inline uint32_t dtype_block_weights(moevk_dtype type) {
    switch (type) {
    case MOEVK_DTYPE_Q8_0:
    case MOEVK_DTYPE_Q4_0:
    case MOEVK_DTYPE_Q5_0: return 32;
    case MOEVK_DTYPE_Q4_K:
    case MOEVK_DTYPE_Q5_K:
    case MOEVK_DTYPE_Q6_K: return 256;
    default: return 1;
    }
}
static inline uint64_t dtype_block_bytes(moevk_dtype type) {
    switch (type) {
    case MOEVK_DTYPE_Q8_0: return 34;
    case MOEVK_DTYPE_Q4_0: return 18;
    case MOEVK_DTYPE_Q4_K: return 144;
    case MOEVK_DTYPE_Q6_K: return 210;
    case MOEVK_DTYPE_Q5_0: return 22;
    case MOEVK_DTYPE_Q5_K: return 176;
    default: return dtype_bytes(type);
    }
}
/* The bytes of `count` weights of a type (whole blocks). */
static inline uint64_t weight_bytes(moevk_dtype type, uint64_t count) {
    return count / dtype_block_weights(type) * dtype_block_bytes(type);
}
/* A buffer of them: whole 32-bit words, which the shaders read. */
static inline uint64_t weight_buffer_bytes(moevk_dtype type, uint64_t count) {
    return (weight_bytes(type, count) + 3) & ~(uint64_t)3;
}

#endif
