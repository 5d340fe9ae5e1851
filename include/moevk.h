/*
 * moevk: Mixture-of-Experts routing on Vulkan compute.
 *
 * The header is the manual. The flow is one way:
 *   context (a Vulkan device, own or adopted)
 *     -> layer (moevk_layer_create: the router, the experts' and shared experts' weights)
 *       -> moevk_layer_forward (hidden states in, the MoE block's output out, one submission;
 *          moevk_layer_record records it into your command buffer instead)
 * or, with experts of your own:
 *     -> router (created once for fixed sizes and options)
 *       -> moevk_route (scores -> top-k -> bucketing -> dispatch -> stats, one submission)
 *       -> your experts
 *       -> moevk_combine (weighted sum of expert outputs back per token)
 *
 * Threads: a context may be shared by threads; each router (and each moevk_buffer) must be used
 * by one thread at a time. Calls on different routers of one context may run concurrently: the
 * context serialises its queue submissions internally. An adopted queue must not be used by the
 * application while a moevk call submits to it. Every object is freed by its own destroy
 * call; destroying NULL is a no-op. The library never aborts, exits or prints.
 */
#ifndef MOEVK_H
#define MOEVK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan_core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Windows: exported from moevk.dll while building it, imported by programs that use the DLL
 * (define MOEVK_STATIC to link the static library instead). */
#if defined(_WIN32) && defined(MOEVK_BUILDING_SHARED)
#define MOEVK_API __declspec(dllexport)
#elif defined(_WIN32) && !defined(MOEVK_STATIC) && !defined(MOEVK_BUILDING_STATIC)
#define MOEVK_API __declspec(dllimport)
#elif defined(_WIN32)
#define MOEVK_API
#elif defined(__GNUC__)
#define MOEVK_API __attribute__((visibility("default")))
#else
#define MOEVK_API
#endif

/* ---- Version ---------------------------------------------------------------------------- */
#define MOEVK_VERSION_MAJOR 0
#define MOEVK_VERSION_MINOR 7
#define MOEVK_VERSION_PATCH 0
#define MOEVK_VERSION_NUMBER                                                                       \
    (MOEVK_VERSION_MAJOR * 10000 + MOEVK_VERSION_MINOR * 100 + MOEVK_VERSION_PATCH)

/* The version the library was built as (compare with MOEVK_VERSION_NUMBER). */
MOEVK_API unsigned moevk_version_number(void);
/* "MAJOR.MINOR.PATCH"; static storage. */
MOEVK_API const char *moevk_version_string(void);

/* ---- Results ---------------------------------------------------------------------------- */
/* Same sign convention as VkResult: 0 success, negative errors. */
#define MOEVK_RESULT_LIST(X)                                                                       \
    X(MOEVK_NOT_READY, 1, "the submitted work has not finished yet")                               \
    X(MOEVK_SUCCESS, 0, "success")                                                                 \
    X(MOEVK_ERROR_INVALID_ARGUMENT, -1, "invalid argument")                                        \
    X(MOEVK_ERROR_OUT_OF_HOST_MEMORY, -2, "out of host memory")                                    \
    X(MOEVK_ERROR_OUT_OF_DEVICE_MEMORY, -3, "out of device memory")                                \
    X(MOEVK_ERROR_NO_VULKAN, -4, "no Vulkan loader could be loaded")                               \
    X(MOEVK_ERROR_NO_DEVICE, -5, "no suitable Vulkan device")                                      \
    X(MOEVK_ERROR_UNSUPPORTED, -6, "the device lacks a required feature or limit")                 \
    X(MOEVK_ERROR_TOO_LARGE, -7, "a size passes a device or library limit")                        \
    X(MOEVK_ERROR_VULKAN, -8, "a Vulkan call failed")                                              \
    X(MOEVK_ERROR_DEVICE_LOST, -9, "the Vulkan device was lost")                                   \
    /* moevk 0.7, libmoevk_mpi (moevk_mpi.h): another rank failed, disagreed or did not answer */ \
    X(MOEVK_ERROR_PEER, -10, "another process of an MPI job failed or did not answer in time")

typedef enum moevk_result {
#define MOEVK_RESULT_ENUM_(name, value, text) name = value,
    MOEVK_RESULT_LIST(MOEVK_RESULT_ENUM_)
#undef MOEVK_RESULT_ENUM_
} moevk_result;

/* A short English description of a result; never NULL, static storage. */
MOEVK_API const char *moevk_result_string(moevk_result result);

/* ---- Types ------------------------------------------------------------------------------ */
typedef struct moevk_context moevk_context;
typedef struct moevk_router moevk_router;
typedef struct moevk_profile moevk_profile; /* a routing profile (see its section) */
typedef struct moevk_buffer moevk_buffer;

/* ---- Structs that grow ------------------------------------------------------------------- */
/* Every struct passed to moevk or filled by it begins with `struct_size`: the sizeof the program
 * was compiled with. A struct gains fields only at its end, and moevk reads (or fills) only the
 * first struct_size bytes, so a program built against an older header keeps working with a newer
 * library: the fields it does not have take their defaults. Each struct's _init function sets
 * struct_size and the defaults; the _init functions are inline, so that the size is the
 * caller's. struct_size 0 means the first layout that had struct_size (moevk 0.2), so that
 * `= {0}` still works for the fields that layout has (those added since keep their defaults:
 * set struct_size to use them). Fields a version adds are marked "Since moevk X.Y". Every layout
 * ends without tail padding (a reserved field, which must be zero, fills it), so that struct_size
 * tells the layouts apart. A struct_size past what the library knows is accepted when every byte it
 * does not know is zero (fields left at their defaults), and refused with
 * MOEVK_ERROR_UNSUPPORTED otherwise, as Linux's clone3 and openat2 do. Structs held inside
 * others (moevk_tensor, moevk_schedule) are fixed: they never grow. */
#define MOEVK_INIT_STRUCT_(pointer)                                                                \
    do {                                                                                           \
        memset((pointer), 0, sizeof *(pointer));                                                   \
        (pointer)->struct_size = (uint32_t)sizeof *(pointer);                                      \
    } while (0)

/* ---- Tensors: where a call reads an input or writes an output ---------------------------- */
typedef enum moevk_tensor_kind {
    MOEVK_TENSOR_NONE = 0,   /* not given */
    MOEVK_TENSOR_HOST = 1,   /* host memory */
    MOEVK_TENSOR_BUFFER = 2, /* a moevk_buffer, from `offset`: copied on the device, never
                                through the host */
    /* A range of the application's VkBuffer (created with STORAGE_BUFFER usage; offset a
     * multiple of minStorageBufferOffsetAlignment; range 0: to the end), bound in place: only
     * the recording calls (moevk_route_record, moevk_combine_record) take it. */
    MOEVK_TENSOR_VULKAN = 3,
} moevk_tensor_kind;

/* One input or output of a call, wherever it lives. Which kinds a call takes, it says; the
 * tensor's size is the one its field names, and buffers must hold it. Fixed: never grows. */
typedef struct moevk_tensor {
    moevk_tensor_kind kind;
    void *host;           /* HOST (an input is only read) */
    moevk_buffer *buffer; /* BUFFER */
    VkBuffer vk_buffer;   /* VULKAN */
    VkDeviceSize offset;  /* BUFFER, VULKAN: bytes from the start */
    VkDeviceSize range;   /* VULKAN: bytes; 0: to the end */
} moevk_tensor;

/* Host memory (NULL: not given). */
static inline moevk_tensor moevk_host_tensor(const void *data) {
    moevk_tensor tensor = {
        data ? MOEVK_TENSOR_HOST : MOEVK_TENSOR_NONE, (void *)data, NULL, VK_NULL_HANDLE, 0, 0};
    return tensor;
}
/* A moevk_buffer from a byte offset (NULL: not given). */
static inline moevk_tensor moevk_buffer_tensor(moevk_buffer *buffer, VkDeviceSize offset) {
    moevk_tensor tensor = {
        buffer ? MOEVK_TENSOR_BUFFER : MOEVK_TENSOR_NONE, NULL, buffer, VK_NULL_HANDLE, offset, 0};
    return tensor;
}
/* A range of an application's VkBuffer (VK_NULL_HANDLE: not given). */
static inline moevk_tensor moevk_vulkan_tensor(VkBuffer buffer, VkDeviceSize offset,
                                               VkDeviceSize range) {
    moevk_tensor tensor = {buffer != VK_NULL_HANDLE ? MOEVK_TENSOR_VULKAN : MOEVK_TENSOR_NONE,
                           NULL,
                           NULL,
                           buffer,
                           offset,
                           range};
    return tensor;
}

typedef enum moevk_dtype {
    MOEVK_DTYPE_F32 = 0,
    MOEVK_DTYPE_F16 = 1,  /* IEEE half, stored as 16-bit words */
    MOEVK_DTYPE_BF16 = 2, /* bfloat16, stored as 16-bit words (the high half of an f32) */
    /* ---- Since moevk 0.5: ggml's block formats (GGUF's bytes as they lie), for a layer's FFN
     * weights (weight_type) only. Each row of a matrix is whole blocks: 32 weights (Q8_0,
     * Q4_0, Q5_0) or 256 (Q4_K, Q5_K, Q6_K); d, f and fs must be multiples of the block.
     * Scales are f16. */
    MOEVK_DTYPE_Q8_0 = 3, /* 34 bytes: scale d, 32 int8 q; w = d q */
    MOEVK_DTYPE_Q4_0 = 4, /* 18 bytes: d, 16 bytes (weight j < 16 in byte j's low nibble, weight
                           * j + 16 in its high one); w = d (q - 8) */
    /* 144 bytes: d, dmin, 12 bytes of 6-bit scales and mins of 8 sub-blocks of 32, 128 bytes of
     * 4-bit q (each 64 weights: 32 bytes, low nibbles then high); w = d sc q - dmin m */
    MOEVK_DTYPE_Q4_K = 5,
    /* 210 bytes: 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales of sub-blocks of
     * 16, d; w = d sc (q - 32) */
    MOEVK_DTYPE_Q6_K = 6,
    /* 22 bytes: d, 32 fifth bits (bit j: weight j's), 16 bytes of 4-bit q as Q4_0's;
     * w = d (q - 16) */
    MOEVK_DTYPE_Q5_0 = 7,
    /* 176 bytes: d, dmin, Q4_K's 12 bytes of scales and mins, 32 bytes of fifth bits (bit 2c
     * and 2c + 1 of byte l: chunk c's low and high weights l), 128 bytes of 4-bit q as Q4_K's;
     * w = d sc q - dmin m */
    MOEVK_DTYPE_Q5_K = 8,
} moevk_dtype;

typedef enum moevk_score_func {
    MOEVK_SCORE_SOFTMAX = 0, /* p = softmax(logits / temperature) over the experts */
    MOEVK_SCORE_SIGMOID = 1, /* p = sigmoid(logits / temperature), per expert */
} moevk_score_func;

/* Noise on the logits before selection (training). Random numbers come from Philox4x32-10 with
 * key = (seed low 32 bits, seed high 32 bits) and counter = (token + the input's
 * noise_row_offset, expert, step, layer); word 0
 * gives u = (x >> 8) * 2^-24 + 2^-25. */
typedef enum moevk_noise_kind {
    MOEVK_NOISE_NONE = 0,
    MOEVK_NOISE_JITTER = 1,   /* logit * ((1 - eps) + (2 * eps) * u): bit-identical everywhere */
    MOEVK_NOISE_GAUSSIAN = 2, /* logit + std * sqrt(-2 ln u0) * cos(2 pi u1) */
    MOEVK_NOISE_GUMBEL = 3,   /* logit - scale * ln(-ln u): sampling top-k without replacement */
} moevk_noise_kind;

/* A value that follows the training step: from start to end over `steps` steps, then end.
 * steps 0: no schedule (the plain option's value is used). */
typedef enum moevk_schedule_kind {
    MOEVK_SCHEDULE_CONSTANT = 0, /* start */
    MOEVK_SCHEDULE_LINEAR = 1,   /* start + (end - start) * min(step, steps) / steps */
    MOEVK_SCHEDULE_COSINE =
        2, /* end + (start - end) * (1 + cos(pi * min(step, steps) / steps)) / 2 */
} moevk_schedule_kind;

typedef struct moevk_schedule {
    moevk_schedule_kind kind;
    float start, end;
    uint32_t steps;
} moevk_schedule;

/* The schedule's value at a step (computed in double, returned as float). */
MOEVK_API float moevk_schedule_value(const moevk_schedule *schedule, uint32_t step);

/* How routing decides (moevk_router_info.mode). */
typedef enum moevk_routing_mode {
    MOEVK_MODE_TOKEN = 0, /* each token picks its top-k experts (default) */
    /* One decision per sequence of sequence_length consecutive tokens (the last one may be
     * shorter), shared by its tokens: top-k of the mean of its valid tokens' logits (the sum in
     * token order, f32, times the correctly rounded f32 reciprocal of their count: bit-exact
     * everywhere). A token whose own row is masked or non-finite is routed nowhere and left out
     * of the mean; an expert any valid token masks (-inf) is masked for its sequence. Noise is
     * drawn per sequence (the counter's token index is the sequence index). */
    MOEVK_MODE_SEQUENCE = 1,
    MOEVK_MODE_BATCH = 2, /* one decision for the whole batch: SEQUENCE with one sequence */
    /* Sinkhorn balanced routing (training): with K_te = exp(l_te - shift) over the valid rows,
     * d1 = 1, then repeat d0_t = 1 / (T' * sum_e d1_e K_te + 1e-8),
     * d1_e = 1 / (E' * sum_t d0_t K_te + 1e-8) until mean_e |change of d1_e| < 1e-4 or
     * sinkhorn_iterations; select the top-k of (d1_e * K_te) * d0_t; weights from the plain
     * scores. T' counts the valid rows, E' the experts some valid row does not mask (both T and
     * E when nothing is masked); shift = max(0, largest logit - 60) keeps exp finite. l is the
     * noisy logit when noise is on. */
    MOEVK_MODE_SINKHORN = 3,
    /* Expert choice (Zhou et al. 2022): each expert takes its top-C tokens by routing score
     * (softmax over the experts, or sigmoid, of the noisy logits with the temperature), ties to
     * the lower token, C = max(min_capacity, ceil(capacity_factor * T / E)) (or FIXED
     * capacity); a token may be taken by 0 .. E experts. The per-token arrays have E columns
     * (moevk_router_choices): column e is expert e's choice of the token (id e, slot, weight =
     * its score, clean or noisy as noisy_scores says, times scale) or -1, -1, 0. An expert's
     * slots follow token order. counts = counts_before = tokens taken; the statistics' drops are
     * 0, and unrouted_tokens counts the valid tokens no expert took. top_k is unused (any valid
     * value); DROPLESS, the SCORE drop policy and renormalize are refused. */
    MOEVK_MODE_EXPERT_CHOICE = 4,
} moevk_routing_mode;

typedef enum moevk_capacity_mode {
    MOEVK_CAPACITY_FACTOR = 0,   /* C = max(min_capacity, ceil(capacity_factor * T * k / E)) */
    MOEVK_CAPACITY_FIXED = 1,    /* C = capacity */
    MOEVK_CAPACITY_DROPLESS = 2, /* no limit; experts' blocks packed, padded to pad_multiple */
} moevk_capacity_mode;

/* Which kernel scores a router's experts and selects each token's top k
 * (moevk_router_info.selection_kernel). Both give the same bits: every sum over the experts goes
 * in one fixed order, and the selections are exact. */
typedef enum moevk_selection_kernel {
    /* A subgroup per token on a GPU that offers it (moevk_device_info.selection_lanes) when
     * E >= 32, else one invocation per token (on a CPU device too: lavapipe runs the per-token
     * kernel faster). */
    MOEVK_SELECTION_AUTO = 0,
    MOEVK_SELECTION_PER_TOKEN = 1, /* one invocation per token, on every device */
    /* A subgroup per token, its lanes taking the experts in turn; MOEVK_ERROR_UNSUPPORTED
     * where the device does not offer it. */
    MOEVK_SELECTION_SUBGROUP = 2,
} moevk_selection_kernel;

typedef enum moevk_drop_policy {
    /* Slots go out k-major: every token's rank-0 choice in token order, then rank 1, ...;
     * an assignment that finds its expert full is dropped. */
    MOEVK_DROP_POSITION = 0,
    /* Each expert keeps its C assignments of highest weight (ties: lower token, then lower
     * rank); kept assignments take slots in (rank, token) order. */
    MOEVK_DROP_SCORE = 1,
} moevk_drop_policy;

/* ---- Context ---------------------------------------------------------------------------- */
/* Called for Vulkan validation messages when validation is on; may run on any thread. */
typedef void (*moevk_message_fn)(void *user, int is_error, const char *message);

typedef enum moevk_memory_mode {
    /* Map device memory directly where the device shares memory with the host (lavapipe,
     * integrated GPUs), else copy through host-visible staging buffers. */
    MOEVK_MEMORY_AUTO = 0,
    MOEVK_MEMORY_STAGING = 1, /* always copy through staging buffers */
    MOEVK_MEMORY_MAPPED = 2,  /* map device-local, host-visible memory where the device has it
                                 (resizable BAR), else as AUTO */
} moevk_memory_mode;

/* Fault injection for tests: moevk_testing.h defines it. */
typedef struct moevk_test_hooks moevk_test_hooks;

typedef struct moevk_context_info {
    uint32_t struct_size; /* see "Structs that grow" */
    /* Which device to create on, when moevk creates its own: a decimal index into the list
     * moevk_devices_enumerate gives, or a substring of the device name. NULL: the
     * MOEVK_DEVICE environment variable, else the first discrete GPU, then integrated, then
     * virtual, then CPU (lavapipe). */
    const char *device;
    /* Non-zero: enable VK_LAYER_KHRONOS_validation with synchronization validation, and
     * count its messages (moevk_context_validation_messages). Fails with
     * MOEVK_ERROR_UNSUPPORTED when the layer is not installed. Own instance only. */
    int validation;
    moevk_message_fn message_fn; /* NULL: messages are only counted. */
    void *message_user;
    /* Passed to every Vulkan call that takes one, and used for moevk's own host memory.
     * NULL: malloc/free. Must outlive the context. */
    const VkAllocationCallbacks *allocator;
    moevk_memory_mode memory_mode; /* default AUTO */
    /* A pipeline cache from an earlier run (moevk_context_pipeline_cache), to skip shader
     * compilation. Used only if its header names this device's vendor, device and pipeline
     * cache UUID; otherwise ignored (moevk_context_pipeline_cache_state says which). */
    const void *pipeline_cache_data;
    size_t pipeline_cache_size;
    /* A file for the same: read at creation if it exists (and checked the same way), written
     * back at destroy. NULL: none. */
    const char *pipeline_cache_path;
    /* Testing only: injected faults (moevk_testing.h; NULL: none). After a device loss, real or
     * injected, every call on the context and its routers and buffers returns
     * MOEVK_ERROR_DEVICE_LOST; destroying still works. */
    const moevk_test_hooks *test_hooks;

    /* Adoption: set instance, physical_device, device to use the application's Vulkan objects.
     * moevk never destroys them; the application keeps them alive until the context is
     * destroyed, and does not use the given queue while a moevk call is submitting to it.
     * The device needs no feature beyond Vulkan 1.0 core with one compute queue. */
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device_handle;
    uint32_t queue_family_index;
    uint32_t queue_index;
    /* The application's loader entry point; NULL: moevk opens the system loader itself. */
    PFN_vkGetInstanceProcAddr get_instance_proc_addr;
    /* Non-zero: the adopted device was created with the bufferDeviceAddress feature, which lets
     * moevk reach buffers past maxStorageBufferRange. (A device moevk creates enables it where
     * the device has it.) */
    int buffer_device_address;
    /* ---- Since moevk 0.7 (a 0.2 program's struct ends above; these take their defaults) ---- */
    /* Non-zero: the adopted device was created with VK_EXT_subgroup_size_control and its
     * subgroupSizeControl and computeFullSubgroups features enabled, which lets scores and
     * top-k run a subgroup per token (moevk_device_info.selection_lanes). (A device moevk
     * creates enables them where the device has them.) */
    int subgroup_size_control;
    uint64_t reserved_0_7; /* zero */
} moevk_context_info;

/* Zeroes info: every default (struct_size: see "Structs that grow"). */
static inline void moevk_context_info_init(moevk_context_info *info) { MOEVK_INIT_STRUCT_(info); }

typedef struct moevk_device_info {
    uint32_t struct_size; /* the caller's (moevk_device_info_init): what moevk fills */
    char name[256];
    char driver_name[256];
    char driver_info[256];
    uint32_t vendor_id;
    uint32_t device_id;
    uint32_t api_version;
    uint32_t driver_version;
    VkPhysicalDeviceType type;
    uint32_t subgroup_size; /* as reported; shaders do not depend on it */
    uint32_t max_workgroup_count_x;
    uint64_t max_storage_buffer_range;
    uint64_t device_local_bytes;    /* size of the largest device-local heap */
    int host_visible_device_memory; /* 1: moevk maps device memory directly (no staging) */
    float timestamp_period_ns;      /* 0: no timestamps on the compute queue */
    int buffer_device_address;      /* 1: buffers past maxStorageBufferRange are reachable */
    /* 1: the device lets a shader ask for round-to-nearest-even f32 arithmetic (Vulkan 1.2
     * float controls, shaderRoundingModeRTEFloat32), and moevk's scores and top-k stage asks
     * for it; 0: that stage relies on the default rounding. */
    int rounding_mode_rte;
    /* ---- Since moevk 0.6: Vulkan's portability rules (MoltenVK) ---- */
    /* 1: the instance moevk made asked the loader for VK_KHR_portability_enumeration (offered:
     * portability devices such as MoltenVK are listed too); 0 where the loader does not offer
     * it, or the application's instance was adopted. */
    int portability_enumeration;
    /* 1: the device is a portability-subset one (VK_KHR_portability_subset): moevk enables the
     * extension; none of the features the subset may lack (events, triangle fans, image views'
     * reinterpretation, ...) is one moevk uses. */
    int portability_subset;
    /* ---- Since moevk 0.7 ---- */
    /* The lanes a subgroup gives each token where scores and top-k run a subgroup per token
     * (MOEVK_SELECTION_AUTO, _SUBGROUP): the subgroup size moevk requires, where the device
     * has subgroup shuffles in compute shaders and VK_EXT_subgroup_size_control with full
     * subgroups (on an adopted device, one whose application says it enabled them:
     * moevk_context_info.subgroup_size_control). 0: one invocation per token only. */
    uint32_t selection_lanes;
    uint32_t reserved_0_7; /* zero */
} moevk_device_info;

static inline void moevk_device_info_init(moevk_device_info *info) { MOEVK_INIT_STRUCT_(info); }

/* Lists the Vulkan devices (two-call idiom: infos NULL sets *count; else fills at most *count
 * and sets *count to the number written). infos[0].struct_size is every entry's (the array's
 * stride). Opens and closes the loader itself.
 * Errors: MOEVK_ERROR_NO_VULKAN, MOEVK_ERROR_INVALID_ARGUMENT, MOEVK_ERROR_VULKAN. */
MOEVK_API moevk_result moevk_devices_enumerate(uint32_t *count, moevk_device_info *infos);

/* Creates a context: its own instance/device/queue, or the application's (see info).
 * info may be NULL (all defaults). On failure *out is NULL and nothing is left allocated.
 * Errors: NO_VULKAN, NO_DEVICE, UNSUPPORTED, OUT_OF_HOST_MEMORY, VULKAN, INVALID_ARGUMENT. */
MOEVK_API moevk_result moevk_context_create(const moevk_context_info *info, moevk_context **out);
/* Waits for the context's work, frees it. Routers must be destroyed first. NULL: no-op. */
MOEVK_API void moevk_context_destroy(moevk_context *context);
/* The device the context runs on. */
MOEVK_API void moevk_context_device_info(const moevk_context *context, moevk_device_info *info);
/* The message of the last error on this context (or its routers and buffers), "" if none. The
 * text is shared by the context's threads: read it right after the failing call; another
 * thread's error may replace it. */
MOEVK_API const char *moevk_context_last_error(const moevk_context *context);
/* The context's pipeline cache (two-call idiom: data NULL sets *size; else writes at most *size
 * bytes and sets *size to what it wrote). Errors: INVALID_ARGUMENT, VULKAN. */
MOEVK_API moevk_result moevk_context_pipeline_cache(moevk_context *context, size_t *size,
                                                    void *data);
/* 1: the given pipeline cache was used; 0: none was given; -1: one was given but its header
 * did not match this device and driver (or it was unreadable), so it was ignored. */
MOEVK_API int moevk_context_pipeline_cache_state(const moevk_context *context);

/* How many host allocations moevk itself has made for this context and its routers and buffers
 * (not counting the Vulkan driver's own): a steady route or combine adds none. */
MOEVK_API uint64_t moevk_context_host_allocations(const moevk_context *context);
/* How many device memory allocations moevk has made for this context: routers and buffers
 * allocate at creation, routes never. */
MOEVK_API uint64_t moevk_context_device_allocations(const moevk_context *context);

/* How many validation messages (warnings and errors) the layer has sent this context. */
MOEVK_API uint32_t moevk_context_validation_messages(const moevk_context *context);

/* ---- Buffers ---------------------------------------------------------------------------- */
/* Device memory that routes read from and write to without a trip through the host: keep
 * logits, hidden states, dispatched rows and expert outputs on the device between calls.
 * Creation allocates (device-local, mapped where the context maps device memory); moevk owns it.
 * Buffers may be used from any thread, one call at a time per buffer.
 * Errors: INVALID_ARGUMENT (size 0), OUT_OF_DEVICE_MEMORY, OUT_OF_HOST_MEMORY, VULKAN. */
MOEVK_API moevk_result moevk_buffer_create(moevk_context *context, uint64_t size,
                                           moevk_buffer **out);
/* Frees the buffer; it must not be in use by a call in flight. NULL: no-op. */
MOEVK_API void moevk_buffer_destroy(moevk_buffer *buffer);
MOEVK_API uint64_t moevk_buffer_size(const moevk_buffer *buffer);
/* Copies between host memory and the buffer, waiting until done. offset + size must fit.
 * Errors: INVALID_ARGUMENT, DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_buffer_write(moevk_buffer *buffer, uint64_t offset, const void *data,
                                          uint64_t size);
MOEVK_API moevk_result moevk_buffer_read(moevk_buffer *buffer, uint64_t offset, void *data,
                                         uint64_t size);

/* ---- Router ----------------------------------------------------------------------------- */
typedef struct moevk_router_info {
    uint32_t struct_size;    /* see "Structs that grow" */
    uint32_t num_experts;    /* E: 1 .. MOEVK_MAX_EXPERTS */
    uint32_t top_k;          /* k: 1 .. min(E, MOEVK_MAX_TOP_K) */
    uint32_t max_tokens;     /* largest T a route call may pass (buffers are sized for it) */
    uint32_t hidden_size;    /* d: row length of hidden states; 0: no dispatch/combine */
    moevk_dtype logits_type; /* F32 (default) or F16 */
    moevk_dtype hidden_type; /* F32 (default), F16 or BF16: hidden, dispatched, expert
                                outputs and combined outputs all use it */
    moevk_score_func score;  /* default SOFTMAX */
    float temperature;       /* default 1; must be finite and > 0 */
    int renormalize;         /* default 0: divide the top-k weights by their sum */
    float scale;             /* default 1; multiplies the final weights; finite */
    moevk_capacity_mode capacity_mode; /* default FACTOR */
    float capacity_factor;             /* default 1.25; finite and >= 0 */
    int32_t min_capacity;              /* default 4; >= 0 */
    int32_t capacity;                  /* FIXED mode: C >= 0 */
    uint32_t pad_multiple;             /* DROPLESS mode: pad each expert's block to a multiple of
                                          this many rows; 0 or 1: no padding */
    moevk_drop_policy drop_policy;     /* default POSITION */
    int profile;                       /* default 0: non-zero writes GPU timestamps between stages
                                          (a small cost); read them with moevk_router_timings */
    /* Default 0: the device's maxStorageBufferRange. Buffers larger than this (logits, hidden
     * states, dispatched rows, expert outputs, combined rows) are reached through buffer device
     * addresses instead of descriptors; smaller values exercise that path (tests, tuning). */
    uint64_t max_binding_bytes;
    moevk_noise_kind noise; /* default NONE */
    float noise_amount;     /* jitter eps in [0, 1); Gaussian std, Gumbel scale >= 0 */
    uint64_t noise_seed;
    /* Learned Gaussian noise (noisy top-k gating, Shazeer et al. 2017), default 0: non-zero
     * draws std_te = softplus(x_t . W_noise[:, e]) + noise_epsilon from the route's hidden
     * states x [T, d] and its noise_weights W_noise [d, E] f32 (the dot product in f32, in
     * index order), replacing noise_amount; needs GAUSSIAN noise, hidden_size > 0, and the
     * TOKEN, SINKHORN or EXPERT_CHOICE mode. */
    int learned_noise;
    float noise_epsilon; /* default 1e-2 */
    int noisy_scores;    /* default 0: weights and statistics use the clean logits
                            (DeepSpeed's Gumbel path); 1: the noisy ones (Tutel) */
    /* Schedules over the call's step (steps 0: off): they replace noise_amount, temperature and
     * capacity_factor. Buffers are sized for the larger end of the capacity schedule. */
    moevk_schedule noise_schedule;
    moevk_schedule temperature_schedule;
    moevk_schedule capacity_factor_schedule;
    /* Default 0: non-zero makes the buffers moevk_router_losses needs (two [T, E] f32 arrays
     * and a few small ones). */
    int losses;
    /* Group-limited routing (DeepSeek-V3), default 0 (off): the experts fall into num_groups
     * equal groups (num_groups divides E, at most 32); each token keeps its topk_groups best
     * groups, a group's score being the sum of its two largest selection keys (noisy logit +
     * bias; its one key when groups hold one expert), ties to the lower group; the experts of
     * the other groups are never selected. Weights and statistics are unchanged. */
    uint32_t num_groups;
    uint32_t topk_groups;
    /* Default TOKEN. The other modes take no bias and no groups, and moevk_router_losses
     * refuses them. */
    moevk_routing_mode mode;
    uint32_t sequence_length;     /* SEQUENCE mode: tokens per sequence, >= 1 */
    uint32_t sinkhorn_iterations; /* SINKHORN mode: the iteration cap, at most 10000; 0: 100 */
    uint32_t padding_0_2;         /* ignored: where moevk 0.2's layout had tail padding */
    /* ---- Since moevk 0.3 (a 0.2 program's struct ends above; these take their defaults) ---- */
    /* The capacity factor of routes with `inference` set (DeepSpeed's eval_capacity_factor),
     * in place of capacity_factor and its schedule; 0 (default): the same as training. Finite
     * and >= 0; buffers are sized for it too. */
    float eval_capacity_factor;
    /* Default 0: non-zero lets routes give W_router [E, d] (moevk_route_input.router_weights)
     * instead of logits, which the router then computes on the device from the hidden states; needs
     * hidden_size > 0 and F32 logits (on lavapipe, hidden_size at most 32768). */
    int router_projection;
    /* ---- Since moevk 0.4 (a 0.3 program's struct ends above; these take their defaults) ---- */
    /* Default 0: the selection bias (moevk_route_input.bias) is added to the noisy logits to
     * select (moevk's own auxiliary-loss-free balancing). Non-zero: to the scores instead,
     * key = sigmoid(noisy logit / temperature) + bias, as DeepSeek-V3 adds its
     * e_score_correction_bias (group scores are then the sum of each group's two largest such
     * keys); a -inf logit stays -inf, never selected. The weights stay the unbiased scores,
     * renormalised (when asked) by their sum + 1e-20, as DeepSeek-V3 divides. Needs SIGMOID
     * scores and the TOKEN mode; the load loss refuses it. */
    int bias_on_scores;
    /* ---- Since moevk 0.7 (in the place of 0.4's reserved_0_4: zero there before) ---- */
    moevk_selection_kernel selection_kernel; /* default AUTO */
    /* ---- Later in moevk 0.7 (a struct ending above takes these defaults) ---- */
    /* Default 0: moevk's choice. Otherwise the tokens each of EXPERT_CHOICE's workgroups takes
     * per expert (1 to 262144), where a CPU device and a GPU want different work per workgroup
     * (0 takes 16384 on a CPU, 1024 on a GPU): the decisions are the same at every size. */
    uint32_t choice_block_tokens;
    uint32_t reserved_0_7; /* zero */
} moevk_router_info;

#define MOEVK_MAX_EXPERTS 1024u
#define MOEVK_MAX_TOP_K 16u

/* Fills the first `size` bytes of info with the defaults above (E, k, T and d zero: the caller
 * must set them); moevk_router_info_init is how a program calls it. */
MOEVK_API void moevk_router_info_defaults(moevk_router_info *info, size_t size);
static inline void moevk_router_info_init(moevk_router_info *info) {
    moevk_router_info_defaults(info, sizeof *info);
}

/* The largest sizes a router configuration takes on this context's device: each bound with the
 * info's other options as given (max_tokens with its E, k and d; E and k up to the library's
 * limits and the groups'; d with its max_tokens). A router whose options pass every bound may
 * still fail for want of memory. */
typedef struct moevk_router_bounds {
    uint32_t struct_size;     /* the caller's (moevk_router_bounds_init): what moevk fills */
    uint32_t max_experts;     /* E */
    uint32_t max_top_k;       /* k */
    uint32_t max_tokens;      /* max_tokens: the buffers' range, lavapipe's loop limit */
    uint32_t max_hidden_size; /* d: the hidden, dispatched and combined buffers' range */
} moevk_router_bounds;

static inline void moevk_router_bounds_init(moevk_router_bounds *bounds) {
    MOEVK_INIT_STRUCT_(bounds);
}

/* Fills bounds for info on the context's device, as zstd's ZSTD_cParam_getBounds tells a
 * parameter's range. Creates nothing. Errors: INVALID_ARGUMENT (info fails the option checks
 * for a reason no size explains: the context's last error says which). */
MOEVK_API moevk_result moevk_router_bounds_query(moevk_context *context,
                                                 const moevk_router_info *info,
                                                 moevk_router_bounds *bounds);

/* Creates a router: pipelines and every buffer for max_tokens, so that a route call
 * allocates nothing and cannot run out of memory midway. On failure *out is NULL.
 * Errors: INVALID_ARGUMENT (bad option; the context's last error says which), TOO_LARGE
 * (a buffer passes maxStorageBufferRange, or on lavapipe a stage would pass its loop limit:
 * the message gives the largest max_tokens that fits), OUT_OF_DEVICE_MEMORY,
 * OUT_OF_HOST_MEMORY, VULKAN, DEVICE_LOST. */
MOEVK_API moevk_result moevk_router_create(moevk_context *context, const moevk_router_info *info,
                                           moevk_router **out);
/* Waits for the router's work and frees it. NULL: no-op. */
MOEVK_API void moevk_router_destroy(moevk_router *router);

/* The capacity C a training route of num_tokens tokens gets at a step, with no capacity_factor
 * of its own (0 in DROPLESS mode). */
MOEVK_API uint32_t moevk_router_capacity(const moevk_router *router, uint32_t num_tokens,
                                         uint32_t step);

typedef struct moevk_route_input {
    uint32_t struct_size; /* see "Structs that grow" */
    uint32_t num_tokens;  /* T: 0 .. max_tokens */
    /* moevk_route, moevk_route_submit: HOST or BUFFER; moevk_route_record: VULKAN. */
    moevk_tensor logits; /* [T, E] in logits_type, row-major; required when T > 0 */
    moevk_tensor bias;   /* [E] f32 added to the logits for selection only; NONE: none */
    moevk_tensor hidden; /* [T, d] in hidden_type; NONE: no dispatch */
    uint32_t step;       /* the noise counter's step and layer: any (seed, step, layer) replays */
    uint32_t layer;
    int inference; /* non-zero: no noise, whatever the router's options say */
    /* GAUSSIAN noise only: [E] f32, the std of each expert's noise, replacing noise_amount and
     * its schedule (NONE: noise_amount); every value finite and >= 0. HOST or BUFFER. */
    moevk_tensor noise_std;
    /* learned_noise routers: W_noise [d, E] f32, required (moevk_loss_info.grad_noise_weights
     * gives the losses' gradient with respect to it). HOST or BUFFER. */
    moevk_tensor noise_weights;
    /* ---- Since moevk 0.3 (a 0.2 program's struct ends above; these take their defaults) ---- */
    /* This route's capacity factor (Tutel's per-call capacity_factor), in place of the router's
     * (or its schedule's, or eval_capacity_factor); 0 (default): the router's. Finite and >= 0,
     * and its C at most the C the router's buffers were made for (INVALID_ARGUMENT past it). */
    float capacity_factor;
    /* Added to the noise counter's first word, the row's index (the token's; in SEQUENCE mode
     * the sequence's): a batch split over calls (micro-batches, expert-parallel ranks) gives
     * each call the index of its first row in the whole batch, and the calls draw the noise
     * one call over the whole batch draws. 0 (default): the call's rows from 0. The rows' last
     * counter must fit 32 bits. (In the place of moevk 0.3's reserved_0_3, zero there.) */
    uint32_t noise_row_offset;
    /* The router projection (routers made with router_projection): W_router [E, d] f32, the
     * layout of a model's gate weight (logits = x W_router^T); when given, logits[t, e] = sum
     * over j ascending of hidden[t, j] * W_router[e, j] (f32, no fused multiply-add: the same
     * bits everywhere) is computed on the device and used as the logits
     * everywhere after (noise, selection, statistics, losses); `logits` must then be NONE and
     * `hidden` given. HOST or BUFFER; moevk_route_record: VULKAN. NONE (default): the logits
     * are given. */
    moevk_tensor router_weights;
} moevk_route_input;

static inline void moevk_route_input_init(moevk_route_input *input) { MOEVK_INIT_STRUCT_(input); }

typedef struct moevk_route_stats {
    uint32_t struct_size;         /* the caller's (moevk_route_stats_init): what moevk fills */
    uint32_t capacity;            /* C of this route (0 when dropless) */
    uint32_t dispatched_rows;     /* rows of the dispatched buffer: E*C, or offsets[E] */
    uint64_t assignments;         /* selected (token, expert) pairs before drops */
    uint64_t dropped;             /* of those, how many were dropped */
    double drop_fraction;         /* dropped / assignments (0 when none) */
    uint32_t nonfinite_rows;      /* rows holding NaN or +inf: routed nowhere */
    uint32_t masked_rows;         /* rows whose keys are all -inf: routed nowhere */
    double aux_loss;              /* E * sum_i f_i * P_i (Switch balancing loss) */
    double z_loss;                /* mean over rows of logsumexp(raw logits)^2 */
    double mean_logsumexp;        /* mean over rows of logsumexp(raw logits) */
    double entropy;               /* mean over rows of -sum_i p_i log p_i */
    uint32_t unrouted_tokens;     /* valid rows with no kept choice: every choice dropped, or (in
                                     EXPERT_CHOICE mode) taken by no expert */
    uint32_t sinkhorn_iterations; /* SINKHORN mode: iterations run (0 otherwise) */
    float sinkhorn_error;         /* SINKHORN mode: the last mean |change of d1| */
    /* ---- Since moevk 0.6: the batch against moevk_route_output.drift_profile (all zero
     * without one; see "Routing under distribution shift") ---- */
    uint32_t drift;   /* MOEVK_DRIFT_* bits of the statistics past their thresholds (0: none,
                         or not judged) */
    int drift_judged; /* a profile was given and the batch had its min_tokens valid rows */
    double usage_jsd; /* Jensen-Shannon divergence (nats) of the experts' usage, before drops */
    double usage_jsd_threshold; /* what it was judged by: the profile's, raised to this batch's
                                   sampling noise 0.75 (E - 1) / assignments where larger */
    double psi[5];              /* population stability index of each measure (MOEVK_MEASURE_*) */
    double energy_tail;         /* share of valid rows whose energy passes the profile's 99th
                                   percentile (about 0.01 where nothing changed) */
    double energy_p99;          /* that percentile */
    /* The experts whose share of the usage grew most and shrank most, largest change first
     * (their share in the batch minus in the profile); UINT32_MAX and 0 past E. */
    uint32_t gained_experts[3];
    uint32_t lost_experts[3];
    double gained_shares[3];
    double lost_shares[3];
    /* ---- Since moevk 0.7 ---- */
    /* 1: the call recorded nothing: it submitted again the commands the router's last route
     * recorded, a call of the same shape (T, options, the same tensors' kinds and buffers; see
     * "Routes recorded once"); 0: it recorded them. */
    int resubmitted;
} moevk_route_stats;

static inline void moevk_route_stats_init(moevk_route_stats *stats) { MOEVK_INIT_STRUCT_(stats); }

/* What a route writes, each where its tensor says (NONE: not written). moevk_route and
 * moevk_route_submit: HOST or BUFFER; moevk_route_record: dispatched only, VULKAN (the others
 * are read afterwards with moevk_route_read, HOST). */
typedef struct moevk_route_output {
    uint32_t struct_size;       /* see "Structs that grow" */
    moevk_tensor expert_ids;    /* [T, k] int32: selected experts, -1 where none (masked,
                                   non-finite) */
    moevk_tensor weights;       /* [T, k] f32: combine weights, 0 where no expert */
    moevk_tensor slots;         /* [T, k] int32: slot within the expert, -1 where dropped or
                                   none */
    moevk_tensor counts;        /* [E] uint32: assignments kept per expert */
    moevk_tensor counts_before; /* [E] uint32: assignments per expert before drops */
    moevk_tensor offsets;       /* [E + 1] uint32, DROPLESS only: first row of each expert's
                                   block */
    /* [E*C, d] or dropless [offsets[E], d] in hidden_type; needs hidden states. A buffer holds
     * moevk_router_max_dispatched_rows * d elements; host memory the route's rows
     * (moevk_router_max_dispatched_rows is always enough). Unfilled rows are zero. */
    moevk_tensor dispatched;
    moevk_route_stats *stats; /* host; NULL: not filled */
    /* ---- Since moevk 0.5 ---- */
    /* [T, 3] f32, each token's out-of-distribution scores (TOKEN, EXPERT_CHOICE, SINKHORN): the
     * energy -temperature * logsumexp(logits / temperature) of its own clean logits (higher:
     * less familiar), the entropy in nats of its routing distribution (the one aux_loss's P and
     * the statistics' entropy use, noisy with noisy_scores), and its top-1 probability in it.
     * NaN, NaN, NaN for a token whose logits are not finite; +inf, 0, 0 for one whose logits
     * are all -inf. HOST or BUFFER; after moevk_route_record, not taken. */
    moevk_tensor token_scores;
    /* ---- Since moevk 0.6 (TOKEN, EXPERT_CHOICE and SINKHORN modes; see "Routing under
     * distribution shift") ---- */
    moevk_profile *profile;             /* non-NULL: this batch is added to the profile */
    const moevk_profile *drift_profile; /* non-NULL: this batch is judged against it (stats) */
} moevk_route_output;

static inline void moevk_route_output_init(moevk_route_output *output) {
    MOEVK_INIT_STRUCT_(output);
}

/* Auxiliary-loss-free balancing (DeepSeek-V3): after a step, nudges each expert's selection bias
 * towards balance, bias[i] += rate * sign(mean load - load[i]), with the loads counted before
 * drops (moevk_route_output.counts_before). rate 0: the default 1e-3. Pass the bias back as
 * moevk_route_input.bias: it moves selection only, never the weights. */
MOEVK_API void moevk_balancing_bias_update(float *bias, const uint32_t *counts_before,
                                           uint32_t num_experts, float rate);

/* Columns of the per-token arrays (expert_ids, weights, slots, dL/dweights): top_k, or E in
 * EXPERT_CHOICE mode. Where this header says [T, k], read [T, choices]. */
MOEVK_API uint32_t moevk_router_choices(const moevk_router *router);

/* Largest dispatched_rows any route of this router can produce. */
MOEVK_API uint64_t moevk_router_max_dispatched_rows(const moevk_router *router);

/* The kernel that scores and selects (moevk_router_info.selection_kernel, as AUTO chose it):
 * the lanes a subgroup gives each token, or 0 for an invocation per token. Since moevk 0.7. */
MOEVK_API uint32_t moevk_router_selection_lanes(const moevk_router *router);

/* Routes one batch: uploads the inputs, runs every stage on the device in one submission,
 * waits, and writes what output asks for. Keeps the assignment for moevk_combine. Inputs and
 * outputs are HOST or BUFFER tensors. Same input, same output, bit for bit.
 * Errors: INVALID_ARGUMENT, UNSUPPORTED (a struct with fields this library does not know),
 * DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_route(moevk_router *router, const moevk_route_input *input,
                                   const moevk_route_output *output);

/* The same as moevk_route without waiting: records and submits, then returns. The input may be
 * freed at once; the output's host memory must stay valid until moevk_router_wait has
 * returned MOEVK_SUCCESS, which copies the results into it. One submitted route or combine
 * per router at a time; other calls on the router wait for it first. */
MOEVK_API moevk_result moevk_route_submit(moevk_router *router, const moevk_route_input *input,
                                          const moevk_route_output *output);
/* Waits up to timeout_ns (0: just polls; UINT64_MAX: until done) for the submitted route or
 * combine and fills its output. MOEVK_NOT_READY: still running (call again); MOEVK_SUCCESS with
 * nothing submitted: nothing to do. Errors: DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_router_wait(moevk_router *router, uint64_t timeout_ns);
/* The fence the router's submissions signal, for an application that waits with its own
 * Vulkan calls (vkWaitForFences, never reset it); moevk_router_wait still collects results. */
MOEVK_API VkFence moevk_router_fence(const moevk_router *router);

/* Combines expert outputs back per token for the last route:
 * combined[t] = sum over j ascending of weights[t,j] * expert_out[row of (t,j)], f32 sums.
 * expert_out is [dispatched_rows, d] in hidden_type (the same layout as dispatched);
 * combined is [T, d] in hidden_type; each HOST or BUFFER. Errors: INVALID_ARGUMENT (no route
 * yet, d = 0, a tensor missing or of a kind this call does not take, a short buffer),
 * DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_combine(moevk_router *router, moevk_tensor expert_out,
                                     moevk_tensor combined);
/* moevk_combine without waiting: submits and returns; host expert_out may be freed at once,
 * combined is written by moevk_router_wait. */
MOEVK_API moevk_result moevk_combine_submit(moevk_router *router, moevk_tensor expert_out,
                                            moevk_tensor combined);

/* ---- The MoE layer: router projection, route, experts, shared experts, combine ------------ */
/* A layer computes, from hidden states x [T, d], an MoE block's output on the device in one
 * submission: logits = x W_g^T (the router projection), the route (every router option), each
 * dispatched row through its expert's FFN (grouped matrix products over the route's rows,
 * capacity or dropless), the kept rows combined per token with their weights, plus the shared
 * experts' FFN of every token (optionally gated, Qwen2-MoE). Every product accumulates in f32
 * in a fixed order: the same input gives the same bits every run. The layer owns its router
 * (moevk_layer_router: its losses, timings and reads work as for any route). */
typedef struct moevk_layer moevk_layer;

typedef enum moevk_activation {
    MOEVK_ACTIVATION_SWIGLU = 0, /* down(silu(gate x) * up x): Mixtral, Qwen-MoE, DeepSeek */
    MOEVK_ACTIVATION_GELU = 1,   /* down(gelu(up x)), gelu(z) = z (1 + erf(z / sqrt 2)) / 2 */
    /* The tanh form: z (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3))) / 2 */
    MOEVK_ACTIVATION_GELU_TANH = 2,
    MOEVK_ACTIVATION_RELU = 3, /* down(relu(up x)): Switch, GShard (NaN stays NaN) */
} moevk_activation;

typedef struct moevk_layer_info {
    uint32_t struct_size;       /* see "Structs that grow" */
    uint32_t intermediate_size; /* f of each routed expert, >= 1 */
    /* The routing: E, k, max_tokens, hidden_size d (> 0), hidden_type and every option of a
     * router; router_projection is implied. Required. */
    const moevk_router_info *router;
    moevk_activation activation; /* the routed and the shared experts' */
    /* F32 (default), F16, BF16, or (moevk 0.5) Q8_0, Q4_0, Q4_K, Q6_K: the FFN weights as
     * stored, the routed and the shared experts' alike (the router's W_g is f32) */
    moevk_dtype weight_type;
    int biases; /* default 0: non-zero gives every FFN projection a bias (f32) */
    /* Default 0: no shared experts; else the intermediate size of the one dense FFN every token
     * goes through (DeepSeek's n_shared_experts * moe_intermediate_size, Qwen2-MoE's
     * shared_expert_intermediate_size), added to the routed output. */
    uint32_t shared_intermediate_size;
    int shared_gate;     /* Qwen2-MoE: the shared output times sigmoid(x . w_shared_gate) */
    uint32_t reserved_0; /* zero: the place of a later field */
    /* ---- Since moevk 0.5 (a 0.4 program's struct ends above: one type for every matrix) ---- */
    /* Non-zero: the down projections (routed and shared) are stored as down_weight_type, and
     * weight_type is the gate's and up's only (Q4_K_M files keep down in Q6_K or Q8_0). */
    int separate_down_type;
    moevk_dtype down_weight_type;
    /* Non-zero: the FFN weights (routed and shared) live in host-visible system memory that the
     * device reads over the bus, not in device memory (what users call expert offload: a model
     * larger than the GPU's memory runs, each decode step reading its chosen experts across). */
    int host_weights;
    /* ---- Since moevk 0.7 (in the place of 0.5's reserved_0_5: zero there before) ---- */
    /* Non-zero: the layer keeps what its backward needs (moevk_layer_backward): f32 gradient
     * buffers of its parameters and its scratch, and the router's `losses` (its backward).
     * F32, F16 or BF16 weights; the TOKEN mode, which the router's backward covers. */
    int trainable;
} moevk_layer_info;

static inline void moevk_layer_info_init(moevk_layer_info *info) { MOEVK_INIT_STRUCT_(info); }

/* The layer's weights, in the layouts of Hugging Face checkpoints (nn.Linear's [out, in]).
 * f is intermediate_size, fs shared_intermediate_size; "wt" is the layer's weight_type, "dt"
 * its down_weight_type where separate_down_type is set (else weight_type). In a
 * block format a matrix [rows, cols] is rows of cols / B blocks (B its block's weights), ggml's
 * layout: a GGUF tensor ne [cols, rows, E] is E such matrices one after another. */
typedef enum moevk_layer_weight {
    MOEVK_WEIGHT_ROUTER = 0,              /* W_g [E, d] f32: logits = x W_g^T */
    MOEVK_WEIGHT_GATE = 1,                /* [E, f, d] wt: gate_proj, Mixtral's w1 (SwiGLU only) */
    MOEVK_WEIGHT_UP = 2,                  /* [E, f, d] wt: up_proj, w3; an MLP's first */
    MOEVK_WEIGHT_DOWN = 3,                /* [E, d, f] dt: down_proj, w2 */
    MOEVK_WEIGHT_GATE_BIAS = 4,           /* [E, f] f32 (biases only, as the next two) */
    MOEVK_WEIGHT_UP_BIAS = 5,             /* [E, f] f32 */
    MOEVK_WEIGHT_DOWN_BIAS = 6,           /* [E, d] f32 */
    MOEVK_WEIGHT_SHARED_GATE = 7,         /* [fs, d] wt (SwiGLU only) */
    MOEVK_WEIGHT_SHARED_UP = 8,           /* [fs, d] wt */
    MOEVK_WEIGHT_SHARED_DOWN = 9,         /* [d, fs] dt */
    MOEVK_WEIGHT_SHARED_GATE_BIAS = 10,   /* [fs] f32 */
    MOEVK_WEIGHT_SHARED_UP_BIAS = 11,     /* [fs] f32 */
    MOEVK_WEIGHT_SHARED_DOWN_BIAS = 12,   /* [d] f32 */
    MOEVK_WEIGHT_SHARED_EXPERT_GATE = 13, /* [d] f32: Qwen2-MoE's shared_expert_gate */
} moevk_layer_weight;

/* Creates a layer: its router and every buffer for max_tokens, weights zero until set.
 * Errors: those of moevk_router_create; TOO_LARGE also when a weight matrix passes
 * maxStorageBufferRange or max_tokens' rows need more than 65535 tiles of 64 rows (the
 * message says which). */
MOEVK_API moevk_result moevk_layer_create(moevk_context *context, const moevk_layer_info *info,
                                          moevk_layer **out);
/* Waits for the layer's work and frees it. NULL: no-op. */
MOEVK_API void moevk_layer_destroy(moevk_layer *layer);
/* The layer's router (owned by the layer: never destroy it). */
MOEVK_API moevk_router *moevk_layer_router(moevk_layer *layer);
/* Sets weights: for the per-expert ones (GATE .. DOWN_BIAS), `count` experts' worth from
 * expert `first`, contiguous in source (count * one expert's matrix); for the others first 0
 * and count 1. source is HOST or BUFFER, in the weight's type; copied now (waits).
 * Errors: INVALID_ARGUMENT (a weight the layer does not have, experts out of range, a short
 * buffer), DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_layer_set_weights(moevk_layer *layer, moevk_layer_weight which,
                                               uint32_t first, uint32_t count, moevk_tensor source);

/* Reads weights back (first and count as moevk_layer_set_weights takes them) in their storage
 * type into destination (HOST or BUFFER): a trained layer's, to save. Waits. Errors: those of
 * moevk_layer_set_weights. */
MOEVK_API moevk_result moevk_layer_read_weights(moevk_layer *layer, moevk_layer_weight which,
                                                uint32_t first, uint32_t count,
                                                moevk_tensor destination);

typedef struct moevk_layer_output {
    uint32_t struct_size;       /* see "Structs that grow" */
    moevk_tensor output;        /* [T, d] in hidden_type: the layer's output. Required when T > 0 */
    moevk_tensor router_logits; /* [T, E] f32: x W_g^T; NONE: not written */
    /* The route's outputs, as moevk_route writes them (NULL: none). */
    const moevk_route_output *route;
} moevk_layer_output;

static inline void moevk_layer_output_init(moevk_layer_output *output) {
    MOEVK_INIT_STRUCT_(output);
}

/* Runs the layer on input->hidden [T, d] (required when T > 0; logits and router_weights
 * NONE: the layer's W_g computes them), with the input's bias, step, layer, inference, noise
 * and capacity factor as a route takes them. HOST or BUFFER tensors; waits. A dispatched row
 * dropped for capacity adds nothing: a token whose every choice was dropped gets the shared
 * experts' output alone, or zeros. Errors: as moevk_route. */
MOEVK_API moevk_result moevk_layer_forward(moevk_layer *layer, const moevk_route_input *input,
                                           const moevk_layer_output *output);
/* moevk_layer_forward without waiting: moevk_router_wait(moevk_layer_router(layer), ...)
 * completes it and fills the host outputs. */
MOEVK_API moevk_result moevk_layer_forward_submit(moevk_layer *layer,
                                                  const moevk_route_input *input,
                                                  const moevk_layer_output *output);

/* ---- Balancing losses and the router's backward (training) --------------------------------- */
/* Coefficients of the losses (0: left out) and the gradient arriving from the layer. Means run
 * over the valid rows (neither masked nor non-finite) of the last route; p_t is the routing
 * distribution (softmax, or the sigmoids normalised to sum 1), from the scores' logits (clean,
 * or noisy with noisy_scores). */
typedef struct moevk_loss_info {
    uint32_t struct_size;  /* see "Structs that grow" */
    float aux_coef;        /* Switch/GShard: E * sum_i f_i * P_i, f_i = assignments of expert i
                              before drops / all assignments (a constant), P_i = mean_t p_ti */
    float z_coef;          /* mean_t logsumexp(logits_t)^2, of the clean logits */
    float importance_coef; /* cv2(importance), importance_e = sum_t of e's combine weight */
    float load_coef;       /* cv2(load), load_e = sum_t Phi((clean key_te - thr_t) / std): needs
                              Gaussian noise; thr_t is the (k+1)-th largest noisy key when e is
                              in t's top k, the k-th otherwise (keys = logits + bias; with
                              groups, the thresholds come from the kept groups' keys, while
                              experts of the other groups still count their Phi) */
    float entropy_coef;    /* mean_t -sum_e p_te log p_te (negative: rewards entropy) */
    float sequence_coef;   /* mean_b sum_e (E / (k S)) * count_be * (1/S) * sum_t p_bte, over
                              sequences b of sequence_length S tokens (T a multiple of S) */
    uint32_t sequence_length;
    /* Inputs, HOST or BUFFER (NONE: none). dL/dweights [T, k] f32 from the layer's backward. */
    moevk_tensor grad_weights;
    /* dL/dcombined [T, d] in hidden_type: adds <dL/dcombined_t, expert_out of choice j> to
     * dL/dweights[t, j]; needs the last route's combine (moevk_combine, waited for) to have run. */
    moevk_tensor grad_combined;
    /* Outputs for a learnable Gaussian std, HOST or BUFFER (NONE: not computed): dL/dnoise_std
     * [E] f32 when the route was given noise_std, dL/dW_noise [d, E] f32 when the router has
     * learned_noise (through softplus'(x . W_noise) = sigmoid). The std moves the load loss's
     * z (dz/dstd = -z/std) and its thresholds (the noisy keys of their experts, by the noise
     * sample n) and, with noisy_scores, every loss and dL/dweights through the noisy scores
     * (by n); summed over the tokens in order on the device. */
    moevk_tensor grad_noise_std;
    moevk_tensor grad_noise_weights;
} moevk_loss_info;

static inline void moevk_loss_info_init(moevk_loss_info *info) { MOEVK_INIT_STRUCT_(info); }

/* cv2(v) = var(v) / (mean(v)^2 + 1e-10), variance over the E experts (divide by E). */
typedef struct moevk_losses {
    uint32_t struct_size; /* the caller's (moevk_losses_init): what moevk fills */
    double aux, z, importance, load, entropy, sequence;
    double total; /* sum of coefficient * value */
} moevk_losses;

static inline void moevk_losses_init(moevk_losses *losses) { MOEVK_INIT_STRUCT_(losses); }

/* The losses of the router's last route (moevk_route or moevk_route_submit, waited for; not a
 * recorded route) and dL/dlogits [T, E] f32 of their weighted sum plus the given dL/dweights:
 * through the renormalisation and scale of the weights, the softmax or sigmoid with its
 * temperature, and the jitter factor where noisy_scores uses jittered logits. Selection is a
 * constant (the top-k choice has no gradient); f_i and the sequence counts are constants; the
 * load loss's gradient flows into the logits of its threshold experts too. Rows that are
 * masked or non-finite, and -inf logits, get 0. Computed on the device: per-block partial sums
 * in a fixed order, reduced on the host in double. losses may be NULL, grad_logits (HOST or
 * BUFFER) NONE.
 * Errors: INVALID_ARGUMENT (router without `losses`, no route, bad coefficient, a load loss
 * without Gaussian noise, T not a multiple of sequence_length, grad_combined without a
 * combine, a std gradient the route's noise has no std for), UNSUPPORTED (a router reaching its
 * buffers by device address), DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_router_losses(moevk_router *router, const moevk_loss_info *info,
                                           moevk_losses *losses, moevk_tensor grad_logits);
/* moevk_router_losses without waiting: records and submits, then returns; losses and the host
 * outputs are written by moevk_router_wait (keep them valid until it has returned SUCCESS). */
MOEVK_API moevk_result moevk_router_losses_submit(moevk_router *router, const moevk_loss_info *info,
                                                  moevk_losses *losses, moevk_tensor grad_logits);
/* Records the losses of the last recorded route (moevk_route_record, and moevk_combine_record
 * for grad_combined) into the application's command buffer: grad_weights, grad_combined and
 * grad_logits are VULKAN tensors (the std's gradients are not taken: a recorded route has no
 * std of its own to upload). The route's valid rows and assignment count are read on the device.
 * The same synchronisation rules as moevk_route_record; read the values afterwards with
 * moevk_router_losses_read. */
MOEVK_API moevk_result moevk_router_losses_record(moevk_router *router,
                                                  VkCommandBuffer command_buffer,
                                                  const moevk_loss_info *info,
                                                  moevk_tensor grad_logits);
/* After the command buffer holding moevk_router_losses_record has completed: the loss values.
 * Errors: INVALID_ARGUMENT (nothing recorded since the last route), OUT_OF_HOST_MEMORY,
 * DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_router_losses_read(moevk_router *router, moevk_losses *losses);

/* The per-expert loss of the router's last route (run, or recorded and executed): for each
 * expert, the mean of a caller's per-token loss [T] f32 (HOST or BUFFER) over the tokens whose
 * choice of that expert was kept; 0 for an expert that kept none. Summed on the device in a
 * fixed order (the same bits every run), divided on the host in double. expert_loss [E], host.
 * Errors: INVALID_ARGUMENT (no route, no token loss, a short buffer), DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_router_expert_loss(moevk_router *router, moevk_tensor token_loss,
                                                double *expert_loss);

/* ---- Training the layer: its backward (moevk 0.7) ----------------------------------------- */
/* The gradients of a loss L given dL/doutput of the layer's last forward (moevk_layer_forward,
 * or moevk_layer_forward_submit; not a recorded forward), for that forward's route (the top-k
 * choice and the drops are constants: a dropped choice gets no gradient through its expert).
 * Computed on the device in one submission, every sum in a fixed order with no atomics: the
 * same input gives the same bits every run: through the combine (dL/dweights), the router's
 * backward (dL/dlogits from dL/dweights, as moevk_router_losses gives it), the routed experts
 * (down, the activation, gate and up, their biases), the dispatch (dL/dx summed over each
 * token's kept choices in order), the shared experts and their gate (every token's; their
 * share of dL/dx added after the routed experts'), and the router projection (dL/dW_g, and
 * its share of dL/dx added last); with `losses`, the balancing losses' gradient joins
 * dL/dlogits. */
typedef struct moevk_layer_backward_info {
    uint32_t struct_size; /* see "Structs that grow" */
    /* [T, d] f32 dL/doutput, HOST or BUFFER; required when T > 0. */
    moevk_tensor grad_output;
    /* Outputs, HOST or BUFFER (NONE: not taken): dL/dx [T, d] f32, and dL/dweights [T, k] f32
     * (<dL/doutput_t, expert output of choice j>, 0 for a dropped choice), which
     * moevk_router_losses takes as its grad_weights for the router's backward. */
    moevk_tensor grad_hidden;
    moevk_tensor grad_weights;
    /* 0: the parameters' gradients are this call's; non-zero: this call's are added to what the
     * layer holds (accumulation over micro-batches: each sum runs per call, and the calls'
     * sums are added in call order). */
    int accumulate;
    /* The router's balancing losses added to L (NULL: none; a model config's
     * router_aux_loss_coef is not applied unless given here): coefficients and
     * sequence_length as moevk_router_losses takes them, over this forward's route; its
     * tensors NONE (the layer gives dL/dweights). Their gradient joins dL/dlogits, and so
     * dL/dW_g and dL/dx. */
    const moevk_loss_info *losses;
    moevk_losses *loss_values; /* the losses' values (NULL: not taken) */
} moevk_layer_backward_info;

static inline void moevk_layer_backward_info_init(moevk_layer_backward_info *info) {
    MOEVK_INIT_STRUCT_(info);
}

/* Runs the backward of the layer's last forward (waits). Errors: INVALID_ARGUMENT (a layer made
 * without `trainable`, no forward to go back through, a short tensor), UNSUPPORTED (a router
 * reaching its buffers by device address), DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_layer_backward(moevk_layer *layer,
                                            const moevk_layer_backward_info *info);
/* Reads the gradient of a weight (moevk_layer_weight, first and count as moevk_layer_set_weights
 * takes them) as f32 into destination (HOST or BUFFER), whatever the weight's storage type.
 * Errors: INVALID_ARGUMENT (a layer made without `trainable`, a weight it does not have, experts
 * out of range, a short tensor), DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_layer_read_gradient(moevk_layer *layer, moevk_layer_weight which,
                                                 uint32_t first, uint32_t count,
                                                 moevk_tensor destination);
/* Sets every parameter gradient the layer holds to zero (waits). */
MOEVK_API moevk_result moevk_layer_zero_gradients(moevk_layer *layer);

/* An optimizer step over the layer's parameters from the gradients it holds, on the device:
 * PyTorch's torch.optim.SGD (no momentum) and torch.optim.AdamW, step for step in f32. The
 * layer keeps f32 master weights (widened from the stored weights at the first step, and again
 * after moevk_layer_set_weights), AdamW's two moments per parameter, and writes each step's
 * weights back in the storage type (F16, BF16: rounded to nearest from the master). */
typedef enum moevk_optimizer_kind {
    MOEVK_OPTIMIZER_SGD = 0,   /* w -= lr (g + weight_decay w) */
    MOEVK_OPTIMIZER_ADAMW = 1, /* w *= 1 - lr weight_decay; m, v; w -= lr/(1 - b1^t) m /
                                  (sqrt(v) / sqrt(1 - b2^t) + epsilon) */
} moevk_optimizer_kind;

typedef struct moevk_optimizer_info {
    uint32_t struct_size; /* see "Structs that grow" */
    moevk_optimizer_kind kind;
    float learning_rate;  /* finite, > 0 */
    float beta1, beta2;   /* AdamW: in [0, 1) (PyTorch's 0.9 and 0.999) */
    float epsilon;        /* AdamW: finite, > 0 (PyTorch's 1e-8) */
    float weight_decay;   /* finite, >= 0 */
    /* > 0: the gradients are first scaled by min(1, max_grad_norm / (norm + 1e-6)), norm the
     * global L2 norm over every parameter's gradient (torch.nn.utils.clip_grad_norm_), its
     * squares summed on the device in a fixed order and reduced on the host in double. */
    float max_grad_norm;
    uint32_t step; /* AdamW's step count t, from 1 (its bias correction) */
} moevk_optimizer_info;

static inline void moevk_optimizer_info_init(moevk_optimizer_info *info) {
    MOEVK_INIT_STRUCT_(info);
}

/* One step (waits). grad_norm (may be NULL) gets the gradients' global norm before clipping
 * (computed whenever it is asked for or max_grad_norm > 0). Errors: INVALID_ARGUMENT (a layer
 * made without `trainable`, a bad option), DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_layer_optimizer_step(moevk_layer *layer,
                                                  const moevk_optimizer_info *info,
                                                  double *grad_norm);

/* ---- Routing health over steps (host only) --------------------------------------------------- */
/* A ring buffer of per-step router reports, built from each route's statistics and counts (which
 * the device accumulates), with warnings when routing collapses or oscillates. Needs no context;
 * one thread at a time per history. */
typedef struct moevk_history moevk_history;

typedef struct moevk_history_info {
    uint32_t struct_size;       /* see "Structs that grow" */
    uint32_t num_experts;       /* E */
    uint32_t max_steps;         /* steps kept (the oldest go first); 0: 1024 */
    float collapse_share;       /* collapse: one expert holds more than this share of the
                                   assignments (before drops) ... ; 0: 0.5 */
    uint32_t collapse_steps;    /* ... for this many consecutive steps; 0: 20 */
    uint32_t oscillation_steps; /* oscillation: over this many steps the most loaded expert
                                   changed at least half as many times while the load
                                   imbalance (max / mean) stayed above 1.5; 0: 20 */
} moevk_history_info;

static inline void moevk_history_info_init(moevk_history_info *info) { MOEVK_INIT_STRUCT_(info); }

typedef struct moevk_step_report {
    uint32_t struct_size; /* the caller's (moevk_step_report_init): what moevk fills */
    uint32_t step;
    double entropy; /* mean routing entropy */
    double z_loss;  /* mean logsumexp^2 */
    double mean_logsumexp;
    double aux_loss;      /* Switch balancing loss */
    double drop_fraction; /* assignments dropped by the capacity */
    double imbalance;     /* max / mean of the assignments per expert, before drops */
    double load_cv;       /* their coefficient of variation (std / mean) */
    uint32_t top_expert;  /* the expert with the most assignments (lowest index on ties) */
    double top_share;     /* its share of the assignments */
    uint32_t nonfinite_rows, masked_rows;
    uint32_t unrouted_tokens; /* valid rows with no kept choice */
    int has_expert_loss;      /* moevk_history_set_expert_loss gave this step a per-expert loss */
    /* ---- Since moevk 0.6: the step's drift (moevk_route_stats; zero where not judged) ---- */
    uint32_t drift; /* MOEVK_DRIFT_* bits */
    int drift_judged;
    double usage_jsd;
    double max_psi; /* the largest of the measures' PSI */
    double energy_tail;
} moevk_step_report;

static inline void moevk_step_report_init(moevk_step_report *report) { MOEVK_INIT_STRUCT_(report); }

#define MOEVK_WARNING_COLLAPSE 1u
#define MOEVK_WARNING_OSCILLATION 2u
#define MOEVK_WARNING_DRIFT 4u /* the latest step's routing drifted from its profile */

/* Errors: INVALID_ARGUMENT (E out of range, a share outside (0, 1]), OUT_OF_HOST_MEMORY. */
MOEVK_API moevk_result moevk_history_create(const moevk_history_info *info, moevk_history **out);
MOEVK_API void moevk_history_destroy(moevk_history *history);
/* Adds a step from a route's statistics and its counts before and after drops [E]. */
MOEVK_API moevk_result moevk_history_add(moevk_history *history, uint32_t step,
                                         const moevk_route_stats *stats,
                                         const uint32_t *counts_before, const uint32_t *counts);
/* Attaches a per-expert loss [E] (moevk_router_expert_loss) to the latest step. Errors:
 * INVALID_ARGUMENT (no step yet). */
MOEVK_API moevk_result moevk_history_set_expert_loss(moevk_history *history,
                                                     const double *expert_loss);
/* Step i's per-expert loss [E] (zeros where none was set). */
MOEVK_API moevk_result moevk_history_get_expert_loss(const moevk_history *history, uint32_t i,
                                                     double *expert_loss);
/* Steps held (at most max_steps). */
MOEVK_API uint32_t moevk_history_count(const moevk_history *history);
/* Step i of those held, 0 the oldest; counts_before and counts [E] may be NULL. */
MOEVK_API moevk_result moevk_history_get(const moevk_history *history, uint32_t i,
                                         moevk_step_report *report, uint32_t *counts_before,
                                         uint32_t *counts);
/* MOEVK_WARNING_* flags for the latest step (0: healthy). */
MOEVK_API uint32_t moevk_history_warnings(const moevk_history *history);
/* Writes the steps held as CSV (one row per step: the report, then each expert's assignments
 * before and after drops, overflow (before - after), drop rate (overflow / before) and
 * per-expert loss (empty where not set))
 * or JSON (the same, and the latest warnings). Errors:
 * INVALID_ARGUMENT (also when the file cannot be written). */
MOEVK_API moevk_result moevk_history_write_csv(const moevk_history *history, const char *path);
MOEVK_API moevk_result moevk_history_write_json(const moevk_history *history, const char *path);

/* ---- Routing under distribution shift (since moevk 0.6; host objects, no context) ---------- */
/* A routing profile holds what calibration routes looked like: per-expert usage (before drops),
 * fixed-bin histograms of five measures of each valid token, and for TOKEN and SINKHORN routers
 * with k >= 2 the co-selection counts. A route adds its batch to a profile
 * (moevk_route_output.profile: the device measures and bins the tokens, the host adds the counts),
 * or judges its batch against one (moevk_route_output.drift_profile: the statistics below, in
 * moevk_route_stats, and MOEVK_WARNING_DRIFT in a history). A profile matches routers of its E, k,
 * mode, score function and temperature; others are refused. One thread at a time per profile. */
typedef enum moevk_measure {
    MOEVK_MEASURE_ENTROPY = 0,   /* entropy (nats) of the token's routing distribution */
    MOEVK_MEASURE_TOP1 = 1,      /* its largest probability */
    MOEVK_MEASURE_MARGIN = 2,    /* its largest minus its second largest */
    MOEVK_MEASURE_LOGSUMEXP = 3, /* logsumexp of the token's raw clean logits */
    MOEVK_MEASURE_ENERGY = 4,    /* -temperature logsumexp(logits / temperature) */
} moevk_measure;
#define MOEVK_MEASURES 5
#define MOEVK_PROFILE_MAX_BINS 256u
#define MOEVK_PROFILE_VERSION 1 /* the JSON file's "version" */

/* Which statistics passed their thresholds (moevk_route_stats.drift): usage, then each measure's
 * PSI (MOEVK_DRIFT_PSI(measure)), then the energy tail. */
#define MOEVK_DRIFT_USAGE 1u
#define MOEVK_DRIFT_PSI(measure) (2u << (measure))
#define MOEVK_DRIFT_ENERGY_TAIL 64u

typedef struct moevk_profile_info {
    uint32_t struct_size;    /* see "Structs that grow" */
    uint32_t num_experts;    /* E */
    uint32_t top_k;          /* k (the router's, also in EXPERT_CHOICE mode) */
    moevk_routing_mode mode; /* TOKEN, EXPERT_CHOICE or SINKHORN */
    moevk_score_func score;
    float temperature;
    uint32_t bins; /* per measure, 1 .. MOEVK_PROFILE_MAX_BINS; 0: 64 */
    /* Non-zero: each measure's histogram spans [lower, upper) (finite, lower < upper);
     * 0: the first batch with valid rows sets them, its least and greatest value widened by a
     * quarter of their span on each side (by 0.5 where they are equal). A histogram also counts
     * the values below its span and those at or above it, in a bin each. */
    int given_bounds;
    float lower[MOEVK_MEASURES];
    float upper[MOEVK_MEASURES];
} moevk_profile_info;

static inline void moevk_profile_info_init(moevk_profile_info *info) { MOEVK_INIT_STRUCT_(info); }

/* When a batch's statistics count as drift. Zero fields take the defaults
 * (moevk_profile_get_thresholds tells the values in force): usage_jsd 0.05 nats, psi 0.25 (the
 * usual "significant shift"), energy_tail 0.05 (five times the 1% a profile's own batches give),
 * min_tokens 256 (smaller batches get the statistics but are not judged: their sampling noise
 * alone would pass the thresholds). The usage threshold a batch is judged by is never below six
 * times the JSD that sampling alone gives a batch of N assignments, (E - 1) / (8 N): with many
 * experts and few tokens the usage cannot tell drift from chance. */
typedef struct moevk_drift_thresholds {
    uint32_t struct_size; /* see "Structs that grow" */
    uint32_t min_tokens;  /* valid rows a batch needs to be judged */
    double usage_jsd;
    double psi;
    double energy_tail;
} moevk_drift_thresholds;

static inline void moevk_drift_thresholds_init(moevk_drift_thresholds *thresholds) {
    MOEVK_INIT_STRUCT_(thresholds);
}

/* The profile info matching a router's options (bins and bounds left to the caller). */
MOEVK_API void moevk_profile_info_for_router(const moevk_router *router, moevk_profile_info *info);
/* An empty profile. Errors: INVALID_ARGUMENT (E or k out of range, another mode, bins past the
 * limit, bounds not finite or not increasing), OUT_OF_HOST_MEMORY. */
MOEVK_API moevk_result moevk_profile_create(const moevk_profile_info *info, moevk_profile **out);
MOEVK_API void moevk_profile_destroy(moevk_profile *profile);
/* The profile's info, its bounds as set (given_bounds non-zero once a batch set them). */
MOEVK_API void moevk_profile_get_info(const moevk_profile *profile, moevk_profile_info *info);
/* Batches added and the valid rows they held. */
MOEVK_API uint64_t moevk_profile_batches(const moevk_profile *profile);
MOEVK_API uint64_t moevk_profile_tokens(const moevk_profile *profile);
/* Copies of the counts: usage [E] (assignments per expert before drops), a measure's histogram
 * [bins + 2] (below the span, the bins, at or above it), co-selection [E, E] (tokens that chose
 * both experts; the diagonal each expert's; zeros where the router does not count pairs). */
MOEVK_API void moevk_profile_get_usage(const moevk_profile *profile, uint64_t *usage);
MOEVK_API moevk_result moevk_profile_get_histogram(const moevk_profile *profile,
                                                   moevk_measure measure, uint64_t *counts);
MOEVK_API void moevk_profile_get_co_selection(const moevk_profile *profile, uint64_t *counts);
/* The energy below which 99% of the profile's valid rows lie, interpolated linearly within its
 * histogram bin (the span's bounds where it falls outside; NaN for an empty profile). */
MOEVK_API double moevk_profile_energy_p99(const moevk_profile *profile);
/* The thresholds a batch is judged by (zero fields: the defaults); saved with the profile. */
MOEVK_API moevk_result moevk_profile_set_thresholds(moevk_profile *profile,
                                                    const moevk_drift_thresholds *thresholds);
MOEVK_API void moevk_profile_get_thresholds(const moevk_profile *profile,
                                            moevk_drift_thresholds *thresholds);
/* A profile as a JSON file (README, "Routing profiles": format "moevk-routing-profile", version
 * MOEVK_PROFILE_VERSION) and back; every count and bound survives exactly. Load refuses, with
 * INVALID_ARGUMENT and a message, a file that is not such a profile or whose counts disagree
 * (usage and histograms of other totals, a count that is not a whole number); parse does the same
 * for text in memory. The reason goes to error (error_size bytes, NUL-terminated; NULL: none).
 * A route refuses a profile of another E, k, mode, score function or temperature (the context's
 * last error says which). Needs libmoevk built with cJSON (UNSUPPORTED otherwise). Errors also:
 * OUT_OF_HOST_MEMORY; save: INVALID_ARGUMENT when the file cannot be written. */
MOEVK_API moevk_result moevk_profile_save(const moevk_profile *profile, const char *path);
MOEVK_API moevk_result moevk_profile_load(const char *path, moevk_profile **out, char *error,
                                          size_t error_size);
MOEVK_API moevk_result moevk_profile_parse(const char *text, size_t length, moevk_profile **out,
                                           char *error, size_t error_size);

/* ---- Recording into the application's command buffers ------------------------------------ */
/* Records a route into the application's command buffer (in the recording state, outside a
 * render pass, of the router's context's device and a compute-capable queue family), reading
 * and writing the application's buffers; submits nothing. The input's logits, bias and hidden
 * are VULKAN tensors (noise_std and noise_weights are not taken: a learned std needs
 * moevk_route); output may be NULL, or give only dispatched, a VULKAN tensor.
 * Synchronisation: before this call, make your writes to logits, bias and hidden visible to
 * VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT / VK_ACCESS_SHADER_READ_BIT; after it, dispatched (and the
 * router's results) are written by VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT /
 * VK_ACCESS_SHADER_WRITE_BIT. moevk records only its own internal barriers: buffer barriers on
 * its own buffers at the start (ordering it after earlier work that used them), and global
 * memory barriers between its stages. The recording rewrites descriptor sets the router owns:
 * until the command buffer has executed, do not record this router again (a combine may be
 * recorded after the route) nor call moevk_route or moevk_combine on it. Read the ids, weights,
 * slots, counts and statistics afterwards with moevk_route_read. Errors: INVALID_ARGUMENT,
 * UNSUPPORTED (a router whose buffers are reached through device addresses cannot bind the
 * application's buffers; a struct with fields this library does not know). */
MOEVK_API moevk_result moevk_route_record(moevk_router *router, VkCommandBuffer command_buffer,
                                          const moevk_route_input *input,
                                          const moevk_route_output *output);
/* Records a combine of the last recorded (or run) route: expert_out [rows, d] to combined
 * [T, d], VULKAN tensors; the same synchronisation rules. */
MOEVK_API moevk_result moevk_combine_record(moevk_router *router, VkCommandBuffer command_buffer,
                                            moevk_tensor expert_out, moevk_tensor combined);
/* Records a layer's forward into the application's command buffer, as moevk_route_record
 * records a route (the same command buffer, synchronisation and descriptor rules): the input's
 * hidden [T, d] (required when T > 0) and bias are VULKAN tensors, logits and router_weights
 * NONE; the output's output [T, d] (required when T > 0; its bytes rounded up to a multiple of
 * 4, because a 16-bit output of odd T d also writes the zero half that ends its last word) and
 * router_logits [T, E] f32 (or NONE) are VULKAN tensors, and its route may give only
 * dispatched. Read the route's ids, weights, counts and statistics afterwards with
 * moevk_route_read(moevk_layer_router(layer), ...); moevk_router_timings gives layer_ms. The
 * errors of moevk_route_record. */
MOEVK_API moevk_result moevk_layer_record(moevk_layer *layer, VkCommandBuffer command_buffer,
                                          const moevk_route_input *input,
                                          const moevk_layer_output *output);
/* After the command buffer holding moevk_route_record has completed (or after any route): the
 * route's ids, weights, slots, counts and statistics, whichever output asks for, as HOST
 * tensors (dispatched is not taken). Errors: INVALID_ARGUMENT, DEVICE_LOST, VULKAN. */
MOEVK_API moevk_result moevk_route_read(moevk_router *router, const moevk_route_output *output);

/* GPU time of each stage of the router's last route and last combine, from timestamp queries. */
typedef struct moevk_timings {
    uint32_t struct_size;  /* the caller's (moevk_timings_init): what moevk fills */
    double scores_topk_ms; /* scores and top-k selection */
    double bucketing_ms;   /* counts, prefix sums, slots (and the score policy's selection) */
    double dispatch_ms;    /* gathering rows (0 without hidden states) */
    double stats_ms;       /* statistics reductions */
    double route_ms;       /* all of the route's stages, uploads and downloads excluded */
    double combine_ms;     /* the last combine */
    /* ---- Since moevk 0.4 ---- */
    /* After a layer's forward (moevk_layer_forward): its experts, shared experts and combine,
     * from the end of its route (route_ms) to its output; 0 after a plain route. */
    double layer_ms;
    /* ---- Since moevk 0.5: layer_ms in its three parts ---- */
    double experts_ms;        /* the routed experts: tile map, up (with gate), down */
    double shared_experts_ms; /* the shared experts (0 without) */
    double layer_combine_ms;  /* the combine of the kept rows and the shared output */
} moevk_timings;

static inline void moevk_timings_init(moevk_timings *timings) { MOEVK_INIT_STRUCT_(timings); }

/* Reads the timings of the last route and combine. Errors: UNSUPPORTED when the router was
 * created without profile or the queue has no timestamps; INVALID_ARGUMENT before any route. */
MOEVK_API moevk_result moevk_router_timings(moevk_router *router, moevk_timings *timings);

/* ---- What a route's recording holds (since moevk 0.7) ---- */
/* The dispatches and pipeline barriers of the last route's recording (a resubmitted route's:
 * the recording it submitted again; a layer's forward: its route), in all and in the front end:
 * scores, top-k and bucketing (the stages that decide the slots, before rows are dispatched,
 * with the barrier after the fills they start from). A property of the call's recording, not of
 * the device: the same on every device for the same call. */
typedef struct moevk_recording_counts {
    uint32_t struct_size;          /* the caller's (moevk_recording_counts_init) */
    uint32_t front_end_dispatches; /* scores + top-k (or the mode's selection) + bucketing */
    uint32_t front_end_barriers;
    uint32_t route_dispatches; /* every stage of the route, the front end's included */
    uint32_t route_barriers;   /* between its stages (the uploads' and downloads' excluded) */
} moevk_recording_counts;

static inline void moevk_recording_counts_init(moevk_recording_counts *counts) {
    MOEVK_INIT_STRUCT_(counts);
}

/* Reads the counts of the router's last recorded or resubmitted route (moevk_route,
 * moevk_route_record, a layer's forward). Errors: INVALID_ARGUMENT before any route. */
MOEVK_API moevk_result moevk_router_recording_counts(const moevk_router *router,
                                                     moevk_recording_counts *counts);

#ifdef __cplusplus
}
#endif
#endif /* MOEVK_H */
