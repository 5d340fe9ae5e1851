/* moevk-bench: shared declarations of its parts (device ceilings, the sweep, the reports). */
#ifndef MOEVK_BENCH_H
#define MOEVK_BENCH_H

#include <stdint.h>
#include <stdio.h>

#include <volk.h>

#include "moevk.h"

/* The application side of the bench: its own instance and device through volk's globals, as an
 * application that uses volk would, handed to moevk by adoption. */
typedef struct bench_device {
    VkInstance instance;
    VkPhysicalDevice physical;
    VkDevice device;
    VkQueue queue;
    uint32_t family;
    uint32_t timestamp_bits;
    float timestamp_period;
    VkPhysicalDeviceProperties properties;
    char driver_name[256], driver_info[256];
    uint32_t subgroup_size;
    int buffer_device_address;
    int subgroup_size_control; /* enabled: moevk may run its subgroup kernels */
} bench_device;

typedef struct ceilings {
    double copy_gbps;          /* bytes read + written per second: the better of the two below */
    double transfer_copy_gbps; /* vkCmdCopyBuffer */
    double shader_copy_gbps;   /* a compute shader copying 16-byte units */
    double copy_bytes;         /* size of that copy */
    double launch_ms;          /* one empty dispatch, submitted alone */
    double fma_gflops;      /* independent FMA chains: the compute ceiling without tensor cores */
    double context_cold_ms; /* first moevk context + router creation in the process */
    double context_warm_ms; /* the same again (driver caches warm) */
    double first_route_ms;  /* first route of a new router, wall clock */
} ceilings;

typedef struct stage_figures {
    double median_ms, low_ms, high_ms; /* median and the 10th/90th percentiles */
    double best_ms;                    /* the fastest run */
    double bytes;                      /* napkin bytes moved */
} stage_figures;

enum { STAGE_TOPK, STAGE_BUCKET, STAGE_DISPATCH, STAGE_COMBINE, STAGE_STATS, STAGE_ROUTE, STAGE_N };
extern const char *const STAGE_NAMES[STAGE_N];

/* How a case routes: the drop policies of the TOKEN mode, then the routing modes (position
 * drops; SEQUENCE with S = 256). */
typedef enum bench_policy {
    POLICY_POSITION,
    POLICY_SCORE,
    POLICY_DROPLESS,
    POLICY_SEQUENCE,
    POLICY_BATCH,
    POLICY_SINKHORN,
    POLICY_CHOICE,
    POLICY_COUNT
} bench_policy;

typedef struct bench_case {
    uint32_t T, E, k, d;
    moevk_dtype dtype;
    bench_policy policy;
    moevk_selection_kernel selection; /* --selection: which scores and top-k kernel */
    uint32_t choice_block;            /* --choice-block: expert choice's block (0: moevk's) */
    /* results */
    int ran;
    char skipped[160];
    uint32_t capacity;
    stage_figures stages[STAGE_N];
    moevk_recording_counts counts; /* the route's recording: its front end's dispatches, ... */
} bench_case;

int bench_device_open(uint32_t index, bench_device *out, char *error, size_t error_size);
void bench_device_close(bench_device *device);
uint32_t bench_device_count(void);
/* Ascending doubles for qsort, and the median of n samples (sorting them). */
int bench_compare_double(const void *a, const void *b);
double bench_median(double *values, int n);
/* The bench's own submissions, timed with its own timestamps: a command buffer, two queries and
 * a fence. */
typedef struct bench_timer {
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkQueryPool queries;
    VkFence fence;
} bench_timer;
int bench_timer_open(const bench_device *device, bench_timer *timer);
void bench_timer_close(const bench_device *device, bench_timer *timer);
/* Records body between two timestamps, submits, waits: the GPU milliseconds between them. */
double bench_timed_ms(const bench_device *device, bench_timer *timer,
                      void (*body)(VkCommandBuffer, void *), void *user);
/* A storage buffer of the bench's own: device-local, or host-visible and coherent. */
int bench_buffer_make(const bench_device *device, VkDeviceSize size, int host_visible,
                      VkBuffer *buffer, VkDeviceMemory *memory);
/* Copy bandwidth and launch floor, measured with timestamps on the bench's own queue. */
int measure_ceilings(bench_device *device, ceilings *out, char *error, size_t error_size);
/* Runs one case: warm-up, then `repeats` timed routes and combines over rotating routers. */
void run_case(moevk_context *context, bench_case *c, int warmup, int repeats);

void report_table(FILE *out, const bench_device *device, const ceilings *ceil,
                  const bench_case *cases, int count);
int report_json(const char *path, const bench_device *device, const ceilings *ceil,
                const bench_case *cases, int count);
int report_svg(const char *path, const bench_device *device, const bench_case *cases, int count);
const char *policy_name(bench_policy policy);

/* ---- Drift watching (drift_bench.c) ---- */
/* Times plain routes against routes that fill or judge a routing profile and prints a table
 * (quick: without the largest shape). */
void run_drift_cases(moevk_context *context, FILE *out, int quick, int warmup, int repeats);

/* ---- Routes back to back (back_to_back.c) ---- */
/* Times route + combine of several MoE layers recorded into one submission beside each layer's
 * alone and waited for (quick: smaller shapes), and prints the table. */
void run_back_to_back(const bench_device *device, moevk_context *context, FILE *out, int quick,
                      int warmup, int repeats);

/* ---- The host's cost of a call (host_cost_bench.c) ---- */
/* Times steady route and layer calls, resubmitted, beside calls that record, on a context like
 * base with allocation callbacks that count the driver's allocations (quick: the smaller
 * shapes). */
void run_host_cost_cases(const moevk_context_info *base, FILE *out, int quick, int warmup,
                         int repeats);

/* ---- The MoE layer (layer_bench.c) ---- */
typedef struct layer_case {
    const char *model; /* what the shape is like */
    uint32_t T, E, k, d, f, fs;
    moevk_dtype weight_type;
    int host_weights; /* the weights in host memory the device reads over the bus (offload) */
    /* results */
    int ran;
    char skipped[160];
    double route_ms, layer_ms; /* GPU medians: the route; experts + shared experts + combine */
    double combine_ms;         /* the median of layer_ms's last part, the layer's combine */
    double flop;               /* the experts' and shared experts' matrix products */
    double weight_bytes;       /* the FFN weights of the experts the tokens chose, read once */
    /* --backward: wall-clock medians of a trainable layer's forward and backward, side by side */
    int backward_ran;
    char backward_skipped[160];
    double forward_wall_ms, backward_wall_ms;
} layer_case;

/* The layer sweep (quick: shapes scaled down for a CPU device) into cases; returns the count. */
int plan_layer_cases(layer_case *cases, int capacity, int quick);
/* A case's router and layer (dropless, renormalised top-k, SwiGLU; info->router = router). */
void layer_case_infos(const layer_case *c, moevk_router_info *router, moevk_layer_info *info);
/* A case's weights: the same smooth pattern for every expert (the figures depend on the sizes
 * alone). */
moevk_result layer_case_set_weights(moevk_layer *layer, const layer_case *c);
/* Warm-up, then repeats timed forwards over device-resident hidden states and output. */
void run_layer_case(moevk_context *context, layer_case *c, int warmup, int repeats);
void report_layer_table(FILE *out, const ceilings *ceil, const layer_case *cases, int count);
/* The backward (layer_backward_bench.c): a trainable layer's forward and backward, each waited
 * for, timed by the wall clock in turns (forward, backward, forward, ...), and their table. */
void run_backward_case(moevk_context *context, layer_case *c, int warmup, int repeats);
void report_backward_table(FILE *out, const layer_case *cases, int count);
/* The experts' memory of each model shape in each weight type (bytes per weight, GB). */
void report_layer_memory(FILE *out);
/* A weight type by its name in the tables ("q4_k"), or -1; its bytes per weight. */
moevk_dtype dtype_named(const char *name);
double dtype_bytes_per_weight(moevk_dtype type);
const char *dtype_name(moevk_dtype dtype);

#endif
