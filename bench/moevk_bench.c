/* moevk-bench: per-stage GPU times of moevk's routing on one or every Vulkan device, beside the
 * device's own ceilings (copy bandwidth, launch floor), as a table, JSON and an SVG chart.
 *
 * Napkin floor: dispatch and combine move (kept rows + output rows) * d * bytes; at the copy
 * ceiling that is the least they can take. Scores, top-k and bucketing move a few bytes per
 * token and are bound by launches: eight dispatches make the whole route's launch floor. */
#include <stdlib.h>
#include <string.h>

#include "monotonic_clock.h"
#include "bench.h"

#define MAX_CASES 1024

#define MAX_LAYER_CASES 128

typedef struct options {
    int list, all, quick, full, warmup, repeats;
    int layers;    /* --layers: the layer sweep after the routing sweep; --layers-only: alone */
    int routing;   /* 0 with --layers-only */
    int drift;     /* --drift: what watching for drift costs, after the other tables */
    int host_cost; /* --host-cost: the host's time and allocations per call, resubmitted or not */
    int back_to_back; /* --back-to-back: several layers' routes in one submission, and alone */
    int backward;     /* --backward: the layer cases' backward beside their forward */
    layer_case layer_cases[MAX_LAYER_CASES];
    int layer_count;
    int device;                       /* -1: the one moevk would pick */
    moevk_selection_kernel selection; /* --selection auto|per-token|subgroup: every case's */
    uint32_t choice_block;            /* --choice-block N: expert choice's block, 0: moevk's */
    const char *json, *svg;
    bench_case cases[MAX_CASES];
    int case_count;
} options;

static double now_ms(void) { return monotonic_seconds() * 1e3; }

static void add_case(options *o, uint32_t T, uint32_t E, uint32_t k, uint32_t d, moevk_dtype dtype,
                     bench_policy policy) {
    for (int i = 0; i < o->case_count; ++i) {
        const bench_case *c = &o->cases[i];
        if (c->T == T && c->E == E && c->k == k && c->d == d && c->dtype == dtype &&
            c->policy == policy)
            return;
    }
    if (o->case_count == MAX_CASES) return;
    o->cases[o->case_count++] =
        (bench_case){.T = T, .E = E, .k = k, .d = d, .dtype = dtype, .policy = policy};
}

/* The sweep: one factor at a time around T=16384, E=64, k=2, d=4096, f32, position
 * (--full: the whole product; --quick: small sizes for lavapipe). */
static void plan_sweep(options *o) {
    static const uint32_t Ts[] = {1024, 4096, 16384, 65536, 262144}, Es[] = {8, 64, 256},
                          ks[] = {1, 2, 8}, ds[] = {1024, 4096};
    if (o->quick) {
        add_case(o, 1024, 8, 2, 1024, MOEVK_DTYPE_F32, POLICY_POSITION);
        add_case(o, 4096, 64, 2, 1024, MOEVK_DTYPE_F32, POLICY_POSITION);
        add_case(o, 4096, 64, 2, 1024, MOEVK_DTYPE_F16, POLICY_SCORE);
        add_case(o, 4096, 64, 2, 1024, MOEVK_DTYPE_BF16, POLICY_DROPLESS);
        add_case(o, 16384, 64, 2, 1024, MOEVK_DTYPE_F32, POLICY_POSITION);
        for (int p = POLICY_SEQUENCE; p < POLICY_COUNT; ++p)
            add_case(o, 4096, 64, 2, 1024, MOEVK_DTYPE_F32, (bench_policy)p);
        return;
    }
    if (o->full) {
        for (int t = 0; t < 5; ++t)
            for (int e = 0; e < 3; ++e)
                for (int k = 0; k < 3; ++k)
                    for (int d = 0; d < 2; ++d)
                        for (int type = 0; type < 3; ++type)
                            for (int p = POLICY_POSITION; p <= POLICY_DROPLESS; ++p)
                                add_case(o, Ts[t], Es[e], ks[k], ds[d], (moevk_dtype)type,
                                         (bench_policy)p);
        return;
    }
    for (int t = 0; t < 5; ++t) add_case(o, Ts[t], 64, 2, 1024, MOEVK_DTYPE_F32, POLICY_POSITION);
    for (int d = 0; d < 2; ++d) add_case(o, 16384, 64, 2, ds[d], MOEVK_DTYPE_F32, POLICY_POSITION);
    for (int e = 0; e < 3; ++e)
        add_case(o, 16384, Es[e], 2, 4096, MOEVK_DTYPE_F32, POLICY_POSITION);
    for (int k = 0; k < 3; ++k)
        add_case(o, 16384, 64, ks[k], 4096, MOEVK_DTYPE_F32, POLICY_POSITION);
    for (int type = 0; type < 3; ++type)
        add_case(o, 16384, 64, 2, 4096, (moevk_dtype)type, POLICY_POSITION);
    for (int p = 0; p < POLICY_COUNT; ++p)
        add_case(o, 16384, 64, 2, 4096, MOEVK_DTYPE_F32, (bench_policy)p);
    for (int t = 0; t < 5; ++t) add_case(o, Ts[t], 64, 2, 4096, MOEVK_DTYPE_F16, POLICY_POSITION);
}

static int parse_case(const char *text, options *o) {
    unsigned T, E, k, d;
    char type[8] = "f32", policy[16] = "position";
    int n = sscanf(text, "%u,%u,%u,%u,%7[a-z0-9],%15[a-z]", &T, &E, &k, &d, type, policy);
    if (n < 4) return 0;
    moevk_dtype dtype = !strcmp(type, "f16")    ? MOEVK_DTYPE_F16
                        : !strcmp(type, "bf16") ? MOEVK_DTYPE_BF16
                                                : MOEVK_DTYPE_F32;
    int p = 0;
    while (p < POLICY_COUNT && strcmp(policy, policy_name((bench_policy)p)) != 0) ++p;
    if (p == POLICY_COUNT) return 0;
    add_case(o, T, E, k, d, dtype, (bench_policy)p);
    return 1;
}

/* --layer-case T,E,k,d,f[,fs[,TYPE[,host]]]: one layer case of the caller's shape (TYPE: f32,
 * f16, bf16, q8_0, q4_0, q4_k, q6_k; host: the weights in host memory, expert offload). */
static int parse_layer_case(const char *text, options *o) {
    unsigned T, E, k, d, f, fs = 0;
    char type[8] = "f16", where[8] = "";
    int n = sscanf(text, "%u,%u,%u,%u,%u,%u,%7[a-z0-9_],%7s", &T, &E, &k, &d, &f, &fs, type, where);
    if (n < 5 || o->layer_count == MAX_LAYER_CASES) return 0;
    moevk_dtype dtype = dtype_named(type);
    if ((int)dtype < 0 || (where[0] && strcmp(where, "host") != 0)) return 0;
    o->layer_cases[o->layer_count++] = (layer_case){.model = "given",
                                                    .T = T,
                                                    .E = E,
                                                    .k = k,
                                                    .d = d,
                                                    .f = f,
                                                    .fs = fs,
                                                    .weight_type = dtype,
                                                    .host_weights = where[0] != 0};
    return 1;
}

static int parse_options(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->device = -1;
    o->routing = 1;
    o->warmup = 10; /* long enough for a GPU's clocks to settle */
    o->repeats = 15;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--list"))
            o->list = 1;
        else if (!strcmp(a, "--layers"))
            o->layers = 1;
        else if (!strcmp(a, "--layers-only"))
            o->layers = 1, o->routing = 0;
        else if (!strcmp(a, "--drift"))
            o->drift = 1;
        else if (!strcmp(a, "--backward"))
            o->backward = 1;
        else if (!strcmp(a, "--drift-only"))
            o->drift = 1, o->routing = 0;
        else if (!strcmp(a, "--back-to-back"))
            o->back_to_back = 1;
        else if (!strcmp(a, "--back-to-back-only"))
            o->back_to_back = 1, o->routing = 0;
        else if (!strcmp(a, "--host-cost"))
            o->host_cost = 1;
        else if (!strcmp(a, "--host-cost-only"))
            o->host_cost = 1, o->routing = 0;
        else if (!strcmp(a, "--quick"))
            o->quick = 1;
        else if (!strcmp(a, "--full"))
            o->full = 1;
        else if (!strcmp(a, "--device") && v) {
            if (!strcmp(v, "all"))
                o->all = 1;
            else
                o->device = atoi(v);
            ++i;
        } else if (!strcmp(a, "--repeat") && v) {
            o->repeats = atoi(v);
            ++i;
        } else if (!strcmp(a, "--warmup") && v) {
            o->warmup = atoi(v);
            ++i;
        } else if (!strcmp(a, "--json") && v) {
            o->json = v;
            ++i;
        } else if (!strcmp(a, "--svg") && v) {
            o->svg = v;
            ++i;
        } else if (!strcmp(a, "--layer-case") && v) {
            if (!parse_layer_case(v, o)) return 0;
            o->routing = 0;
            ++i;
        } else if (!strcmp(a, "--case") && v) {
            if (!parse_case(v, o)) return 0;
            ++i;
        } else if (!strcmp(a, "--selection") && v) {
            static const char *const kinds[] = {"auto", "per-token", "subgroup"};
            int kind = 0;
            while (kind < 3 && strcmp(v, kinds[kind]) != 0) ++kind;
            if (kind == 3) return 0;
            o->selection = (moevk_selection_kernel)kind;
            ++i;
        } else if (!strcmp(a, "--choice-block") && v) {
            char *end = NULL;
            unsigned long tokens = strtoul(v, &end, 10);
            if (*end != '\0' || tokens > 262144) return 0;
            o->choice_block = (uint32_t)tokens;
            ++i;
        } else
            return 0;
    }
    if (o->repeats < 1) o->repeats = 1;
    if (o->warmup < 0) o->warmup = 0;
    /* Layer cases alone (--layer-case) time just those. */
    if (o->case_count == 0 && o->routing && o->layer_count == 0) plan_sweep(o);
    for (int i = 0; i < o->case_count; ++i) {
        o->cases[i].selection = o->selection;
        o->cases[i].choice_block = o->choice_block;
    }
    if (o->layers)
        o->layer_count += plan_layer_cases(o->layer_cases + o->layer_count,
                                           MAX_LAYER_CASES - o->layer_count, o->quick);
    return 1;
}

static int default_device(void) {
    uint32_t count = 0;
    moevk_devices_enumerate(&count, NULL);
    moevk_device_info infos[16] = {{0}};
    if (count > 16) count = 16;
    if (moevk_devices_enumerate(&count, infos) != MOEVK_SUCCESS) return 0;
    static const VkPhysicalDeviceType order[] = {VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU,
                                                 VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU,
                                                 VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU};
    for (int k = 0; k < 3; ++k)
        for (uint32_t i = 0; i < count; ++i)
            if (infos[i].type == order[k]) return (int)i;
    return 0;
}

/* Context and router creation: cold (first in the process, no pipeline cache), then warm (a
 * new context given the first one's pipeline cache), and the first route of a new router. */
static void measure_startup(const bench_device *device, ceilings *ceil) {
    void *cache = NULL;
    size_t cache_size = 0;
    for (int round = 0; round < 2; ++round) {
        double start = now_ms();
        moevk_context_info info = {.struct_size = sizeof(moevk_context_info),
                                   .instance = device->instance,
                                   .physical_device = device->physical,
                                   .device_handle = device->device,
                                   .queue_family_index = device->family,
                                   .get_instance_proc_addr = vkGetInstanceProcAddr,
                                   .buffer_device_address = device->buffer_device_address,
                                   .subgroup_size_control = device->subgroup_size_control,
                                   .pipeline_cache_data = cache,
                                   .pipeline_cache_size = cache_size};
        moevk_context *context = NULL;
        moevk_router *router = NULL;
        moevk_router_info router_info;
        moevk_router_info_init(&router_info);
        router_info.num_experts = 64;
        router_info.top_k = 2;
        router_info.max_tokens = 4096;
        router_info.hidden_size = 1024;
        if (moevk_context_create(&info, &context) == MOEVK_SUCCESS)
            moevk_router_create(context, &router_info, &router);
        double created = now_ms() - start;
        if (round == 0)
            ceil->context_cold_ms = created;
        else
            ceil->context_warm_ms = created;
        if (router && round == 1) {
            float *logits = calloc(4096 * 64, sizeof(float));
            moevk_route_input input = {.num_tokens = 4096,
                                       .logits = moevk_host_tensor(logits),
                                       .bias = moevk_host_tensor(NULL),
                                       .hidden = moevk_host_tensor(NULL)};
            moevk_route_output output = {0};
            double before = now_ms();
            if (logits && moevk_route(router, &input, &output) == MOEVK_SUCCESS)
                ceil->first_route_ms = now_ms() - before;
            free(logits);
        }
        if (round == 0 && context &&
            moevk_context_pipeline_cache(context, &cache_size, NULL) == MOEVK_SUCCESS) {
            cache = malloc(cache_size ? cache_size : 1);
            if (!cache ||
                moevk_context_pipeline_cache(context, &cache_size, cache) != MOEVK_SUCCESS)
                cache_size = 0;
        }
        moevk_router_destroy(router);
        moevk_context_destroy(context);
    }
    free(cache);
}

static const char *with_suffix(const char *path, int index, int many, char *buffer, size_t size) {
    if (!many || !path) return path;
    const char *dot = strrchr(path, '.');
    int stem = dot ? (int)(dot - path) : (int)strlen(path);
    snprintf(buffer, size, "%.*s-%d%s", stem, path, index, dot ? dot : "");
    return buffer;
}

static int bench_one(const options *o, int index, int many) {
    bench_device device;
    char error[256];
    if (!bench_device_open((uint32_t)index, &device, error, sizeof error)) {
        fprintf(stderr, "moevk-bench: device %d: %s\n", index, error);
        bench_device_close(&device);
        return 1;
    }
    ceilings ceil = {0};
    if (!measure_ceilings(&device, &ceil, error, sizeof error)) {
        fprintf(stderr, "moevk-bench: %s: %s\n", device.properties.deviceName, error);
        bench_device_close(&device);
        return 1;
    }
    measure_startup(&device, &ceil);
    moevk_context_info info = {.struct_size = sizeof(moevk_context_info),
                               .instance = device.instance,
                               .physical_device = device.physical,
                               .device_handle = device.device,
                               .queue_family_index = device.family,
                               .get_instance_proc_addr = vkGetInstanceProcAddr,
                               .buffer_device_address = device.buffer_device_address,
                               .subgroup_size_control = device.subgroup_size_control};
    moevk_context *context = NULL;
    moevk_result r = moevk_context_create(&info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk-bench: %s\n", moevk_result_string(r));
        bench_device_close(&device);
        return 1;
    }
    bench_case *cases = malloc(sizeof(bench_case) * (size_t)o->case_count);
    memcpy(cases, o->cases, sizeof(bench_case) * (size_t)o->case_count);
    for (int i = 0; i < o->case_count; ++i) {
        fprintf(stderr, "\r[%d/%d] %s: T=%u E=%u k=%u d=%u        ", i + 1, o->case_count,
                device.properties.deviceName, cases[i].T, cases[i].E, cases[i].k, cases[i].d);
        run_case(context, &cases[i], o->warmup, o->repeats);
    }
    layer_case *layers = malloc(sizeof(layer_case) * (size_t)(o->layer_count + 1));
    memcpy(layers, o->layer_cases, sizeof(layer_case) * (size_t)o->layer_count);
    for (int i = 0; i < o->layer_count; ++i) {
        fprintf(stderr, "\r[layer %d/%d] %s: %s T=%u        ", i + 1, o->layer_count,
                device.properties.deviceName, layers[i].model, layers[i].T);
        /* A CPU device takes seconds a forward: fewer runs. */
        int cpu = device.properties.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
        run_layer_case(context, &layers[i], cpu ? 1 : o->warmup, cpu ? 3 : o->repeats);
        if (o->backward)
            run_backward_case(context, &layers[i], cpu ? 1 : o->warmup, cpu ? 5 : o->repeats);
    }
    fprintf(stderr, "\n");
    report_table(stdout, &device, &ceil, cases, o->case_count);
    if (o->layer_count) {
        report_layer_table(stdout, &ceil, layers, o->layer_count);
        if (o->backward) report_backward_table(stdout, layers, o->layer_count);
        report_layer_memory(stdout);
    }
    free(layers);
    if (o->drift) run_drift_cases(context, stdout, o->quick, o->warmup, o->repeats);
    if (o->back_to_back)
        run_back_to_back(&device, context, stdout, o->quick, o->warmup, o->repeats);
    if (o->host_cost) run_host_cost_cases(&info, stdout, o->quick, o->warmup, o->repeats);
    char path[1024];
    int status = 0;
    if (o->json && !report_json(with_suffix(o->json, index, many, path, sizeof path), &device,
                                &ceil, cases, o->case_count)) {
        fprintf(stderr, "moevk-bench: cannot write %s\n", path);
        status = 1;
    }
    if (o->svg && !report_svg(with_suffix(o->svg, index, many, path, sizeof path), &device, cases,
                              o->case_count)) {
        fprintf(stderr, "moevk-bench: cannot write %s\n", path);
        status = 1;
    }
    free(cases);
    moevk_context_destroy(context);
    bench_device_close(&device);
    return status;
}

int main(int argc, char **argv) {
    static options o;
    if (!parse_options(argc, argv, &o)) {
        fprintf(
            stderr,
            "usage: moevk-bench [--list] [--device N|all] [--quick|--full] "
            "[--layers|--layers-only] [--backward] [--drift|--drift-only] "
            "[--host-cost|--host-cost-only] [--back-to-back|--back-to-back-only] "
            "[--repeat N] [--warmup N]\n"
            "                   [--case "
            "T,E,k,d[,f32|f16|bf16[,position|score|dropless|sequence|batch|sinkhorn|choice]]]... "
            "[--selection auto|per-token|subgroup] [--choice-block N] [--json FILE] [--svg FILE]\n"
            "                   [--layer-case T,E,k,d,f[,shared "
            "f[,f32|f16|bf16|q8_0|q4_0|q4_k|q6_k]]]...\n");
        return 2;
    }
    uint32_t count = bench_device_count();
    if (count == 0) {
        fprintf(stderr, "moevk-bench: no Vulkan device\n");
        return 1;
    }
    if (o.list) {
        for (uint32_t i = 0; i < count; ++i) {
            bench_device device;
            char error[256];
            if (bench_device_open(i, &device, error, sizeof error))
                printf("%u: %s (%s), timestamps %s\n", i, device.properties.deviceName,
                       device.driver_info, device.timestamp_bits ? "yes" : "no");
            bench_device_close(&device);
        }
        return 0;
    }
    if (!o.all) return bench_one(&o, o.device >= 0 ? o.device : default_device(), 0);
    int status = 0;
    for (uint32_t i = 0; i < count; ++i) status |= bench_one(&o, (int)i, 1);
    return status;
}
