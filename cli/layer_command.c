/* `moevk layer`: one MoE layer of a Hugging Face checkpoint (safetensors weights, config.json)
 * run on the device over hidden states from a .npy file; writes the layer's output, its router
 * logits and the routing outputs of `moevk route`. Exit status: 0 done, 1 device failure,
 * 2 bad arguments or files, 3 written but some tokens held NaN or an infinity. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "make_folder.h"
#include "gguf_config.h"
#include "layer_expert_parallel.h"
#include "layer_gradients.h"
#include "layer_weights.h"
#include "model_config.h"
#include "model_files.h"
#include "moevk_reference.h"
#include "npy.h"
#include "option_table.h"
#include "routing_options.h"
#include "stats_json.h"

typedef struct layer_args {
    moevk_router_info info; /* first: routing_options.h */
    const char *bias, *device, *weights, *config, *prefix, *hidden, *out;
    uint32_t step, layer;
    int layer_given, dropless_given;
    int host_weights, token_scores;
    int activation;          /* a moevk_activation, or -1: from the config */
    const char *grad_output; /* --grad-output: DY.npy */
    moevk_loss_info loss;    /* --loss: the losses joining the gradient */
    int want_losses;
    int expert_parallel;      /* --expert-parallel: the experts over MPI ranks (under mpirun) */
    uint32_t exchange_chunks; /* --exchange-chunks: its overlap degree, 0 automatic */
} layer_args;

static void layer_given(void *args) { ((layer_args *)args)->layer_given = 1; }

static const char *take_losses(void *args, const char *text) {
    const char *wrong = routing_parse_losses(text, &((layer_args *)args)->loss);
    if (!wrong) ((layer_args *)args)->want_losses = 1;
    return wrong;
}

#define OPTION_ARGS layer_args
/* In moevk_activation's order. */
static const char *const ACTIVATIONS[] = {"swiglu", "gelu", "gelu-tanh", "relu", NULL};
static const option LAYER_OPTIONS[] = {
    OPT_TEXT("--weights", "PATH",
             "a .safetensors file, a model.safetensors.index.json, their folder, or a .gguf file",
             weights),
    OPT_TEXT("--config", "config.json", "the model's config (default: config.json beside them)",
             config),
    OPT_UINT("--layer", "N", "the model's layer N (also the noise counter's layer)", layer, 0,
             UINT32_MAX, layer_given),
    OPT_TEXT("--prefix", "P", "the MoE block's tensor-name prefix, e.g. model.layers.3.mlp.",
             prefix),
    OPT_TEXT("--hidden", "X.npy", "hidden states [T, d] float32, float16 or bfloat16", hidden),
    OPT_TEXT("--out", "DIR", "folder for the outputs (required; made if missing)", out),
    OPT_FLAG("--token-scores",
             "token_scores.npy [T, 3]: each token's energy, entropy (nats), top-1 probability",
             token_scores, NULL),
    OPT_FLAG("--host-weights",
             "keep the experts' weights in host memory the device reads over the bus (offload)",
             host_weights, NULL),
    OPT_CHOICE("--activation", "swiglu|gelu|gelu-tanh|relu",
               "the experts' activation (default: the config's hidden_act)", activation,
               ACTIVATIONS),
    OPT_TEXT("--grad-output", "DY.npy",
             "dL/doutput [T, d] float32: also writes grad_hidden.npy, grad_router.npy and "
             "grad_weights.safetensors, the gradients of sum(output * DY)",
             grad_output),
    OPT_CALL("--loss", "NAME=C,...",
             "with --grad-output: balancing losses join the gradient (aux, z, importance, "
             "entropy, sequence; none unless given)",
             take_losses),
    OPT_FLAG("--expert-parallel",
             "under mpirun: the experts spread over the ranks, each rank a share of the tokens; "
             "rank 0 writes what one process writes",
             expert_parallel, NULL),
    OPT_UINT("--exchange-chunks", "N",
             "with --expert-parallel: each expert's rows exchanged and run in N chunks that "
             "overlap (1 none; default 0: chosen from the batch)",
             exchange_chunks, 0, 16, NULL),
    ROUTING_OPTIONS(NULL),
};

static const char LAYER_SYNOPSIS[] =
    "--weights PATH [--config config.json] (--layer N | --prefix P) --hidden X.npy --out DIR\n"
    "  [routing options]\n"
    "  Runs one MoE layer of a mixtral, qwen2_moe, qwen3_moe or deepseek_v3 checkpoint (or a\n"
    "  llama, qwen2moe, qwen3moe or deepseek2 GGUF file) on the device and "
    "writes output.npy [T, d] float32, router_logits.npy [T, E], expert_ids.npy,\n  weights.npy, "
    "slots.npy, counts.npy (offsets.npy when dropless) and stats.json. The routing\n  comes from "
    "config.json, dropless unless a capacity option is given; options given here\n  override it. "
    "With --grad-output, the layer's backward too (F32, F16 or BF16 weights).";

#define BAD(...) COMMAND_FAIL("layer", __VA_ARGS__)

static int parse(int argc, char **argv, const moevk_router_info *base, layer_args *a) {
    memset(a, 0, sizeof *a);
    a->info = *base;
    a->activation = -1;
    moevk_loss_info_init(&a->loss);
    return options_parse("layer", LAYER_SYNOPSIS, LAYER_OPTIONS, OPTION_COUNT(LAYER_OPTIONS), argc,
                         argv, a);
}

/* The routing of the model's MoE block, as its framework runs it at inference. */
static void routing_from_config(const model_config *c, moevk_router_info *info) {
    moevk_router_info_init(info);
    info->num_experts = c->num_experts;
    info->top_k = c->top_k;
    info->hidden_size = c->hidden_size;
    info->score = c->sigmoid ? MOEVK_SCORE_SIGMOID : MOEVK_SCORE_SOFTMAX;
    /* DeepSeek-V3's own code renormalises only when k > 1; its bias is on the scores. */
    info->renormalize = c->renormalize && (c->family != MODEL_DEEPSEEK_V3 || c->top_k > 1);
    info->bias_on_scores = c->family == MODEL_DEEPSEEK_V3 && c->sigmoid;
    info->scale = c->routed_scaling_factor;
    info->num_groups = c->num_groups;
    info->topk_groups = c->topk_groups;
    info->capacity_mode = MOEVK_CAPACITY_DROPLESS;
}

/* The files the arguments name: the weights, the config, the hidden states. */
typedef struct layer_inputs {
    model_files files;
    model_config config;
    layer_weights weights;
    npy_array hidden, bias, grad_output;
    const float *score_bias; /* DeepSeek-V3's e_score_correction_bias as f32 */
    void *score_bias_copy;
    char prefix[512];
} layer_inputs;

static int check_args(const layer_args *a) {
    if (!a->weights) BAD("--weights is required");
    if (!a->hidden) BAD("--hidden is required");
    if (!a->out) BAD("--out is required");
    if (a->layer_given == !!a->prefix) BAD("give --layer N or --prefix P (one of them)");
#ifndef MOEVK_CLI_MPI
    if (a->expert_parallel) BAD("--expert-parallel: this moevk was built without MPI");
#endif
    if (a->exchange_chunks && !a->expert_parallel)
        BAD("--exchange-chunks is an option of --expert-parallel");
    return 1;
}

static int load_config(const layer_args *a, layer_inputs *in) {
    char error[1024], path[4200];
    if (!model_files_open(a->weights, &in->files, error, sizeof error)) BAD("%s", error);
    if (in->files.is_gguf) {
        if (a->config)
            BAD("%s: a GGUF file's metadata are its config: --config is not read", a->config);
        if (!gguf_model_config(&in->files.gguf.files[0], &in->config, error, sizeof error))
            BAD("%s: %s", a->weights, error);
        if (a->layer_given && !model_config_moe_layer(&in->config, a->layer, error, sizeof error))
            BAD("%s: %s", a->weights, error);
        return 1;
    }
    if (a->config)
        snprintf(path, sizeof path, "%s", a->config);
    else
        snprintf(path, sizeof path, "%s/config.json", in->files.folder);
    struct stat st;
    if (!a->config && stat(path, &st) != 0)
        BAD("%s: no config.json beside the weights (give --config)", path);
    if (!model_config_read(path, &in->config, error, sizeof error)) BAD("%s", error);
    if (a->layer_given && !model_config_moe_layer(&in->config, a->layer, error, sizeof error))
        BAD("%s: %s", path, error);
    return 1;
}

static int load_tensors(const layer_args *a, layer_inputs *in, moevk_activation activation) {
    char error[1024];
    if (a->prefix)
        snprintf(in->prefix, sizeof in->prefix, "%s", a->prefix);
    else
        layer_weights_prefix(&in->files, &in->config, a->layer, in->prefix, sizeof in->prefix);
    if (!layer_weights_find(&in->files, &in->config, in->prefix,
                            activation == MOEVK_ACTIVATION_SWIGLU, &in->weights, error,
                            sizeof error))
        BAD("%s", error);
    if (!npy_read(a->hidden, &in->hidden, error, sizeof error)) BAD("%s", error);
    const npy_array *x = &in->hidden;
    if ((x->type != NPY_F32 && x->type != NPY_F16 && x->type != NPY_BF16) || x->ndim != 2 ||
        x->shape[0] > UINT32_MAX || x->shape[1] != in->config.hidden_size)
        BAD("%s: hidden states must be float32, float16 or bfloat16 [T, %u] (hidden_size)",
            a->hidden, in->config.hidden_size);
    if (a->bias && in->weights.score_bias)
        BAD("%s: the checkpoint has its own selection bias (%se_score_correction_bias): --bias is "
            "refused",
            a->bias, in->prefix);
    if (in->weights.score_bias &&
        !(in->score_bias = layer_tensor_f32(in->weights.score_bias, &in->score_bias_copy)))
        BAD("out of host memory");
    if (a->grad_output) {
        if (!npy_read(a->grad_output, &in->grad_output, error, sizeof error)) BAD("%s", error);
        if (!layer_gradients_check(&in->grad_output, x->shape[0], in->config.hidden_size, error,
                                   sizeof error))
            BAD("%s: %s", a->grad_output, error);
    }
    if (a->want_losses && !a->grad_output) BAD("--loss needs --grad-output");
    if (a->bias) {
        if (!npy_read(a->bias, &in->bias, error, sizeof error)) BAD("%s", error);
        if (in->bias.type != NPY_F32 || in->bias.ndim != 1 ||
            in->bias.shape[0] != in->config.num_experts)
            BAD("%s: bias must be float32 [%u] (E)", a->bias, in->config.num_experts);
    }
    return 1;
}

typedef struct layer_outputs {
    void *output;
    float *logits, *weights, *output_f32, *token_scores;
    int32_t *ids, *slots;
    uint32_t *counts, *offsets;
} layer_outputs;

static void free_outputs(layer_outputs *o) {
    free(o->output);
    free(o->logits);
    free(o->weights);
    free(o->output_f32);
    free(o->token_scores);
    free(o->ids);
    free(o->slots);
    free(o->counts);
    free(o->offsets);
}

static int write_files(const layer_args *a, const layer_outputs *o, uint64_t T, uint64_t choices,
                       const moevk_route_stats *stats, const char *device) {
    char path[4200];
    uint64_t E = a->info.num_experts, d = a->info.hidden_size;
    uint64_t td[2] = {T, d}, te[2] = {T, E}, tk[2] = {T, choices}, e1[1] = {E}, e2[1] = {E + 1};
#define WRITE(name, ...)                                                                           \
    do {                                                                                           \
        snprintf(path, sizeof path, "%s/%s", a->out, name);                                        \
        if (!npy_write(path, __VA_ARGS__)) BAD("%s: cannot write", path);                          \
    } while (0)
    WRITE("output.npy", "<f4", 2, td, o->output_f32, 4);
    WRITE("router_logits.npy", "<f4", 2, te, o->logits, 4);
    WRITE("expert_ids.npy", "<i4", 2, tk, o->ids, 4);
    WRITE("weights.npy", "<f4", 2, tk, o->weights, 4);
    WRITE("slots.npy", "<i4", 2, tk, o->slots, 4);
    WRITE("counts.npy", "<i4", 1, e1, o->counts, 4);
    if (a->info.capacity_mode == MOEVK_CAPACITY_DROPLESS)
        WRITE("offsets.npy", "<i4", 1, e2, o->offsets, 4);
    uint64_t t3[2] = {T, 3};
    if (o->token_scores) WRITE("token_scores.npy", "<f4", 2, t3, o->token_scores, 4);
#undef WRITE
    snprintf(path, sizeof path, "%s/stats.json", a->out);
    if (!stats_json_write(path, stats, device)) BAD("%s: cannot write", path);
    return 1;
}

/* Every output's host array for T tokens; 0 (with a message) when out of memory. */
static int alloc_outputs(const layer_args *a, layer_outputs *o, uint64_t T, uint64_t choices) {
    uint64_t E = a->info.num_experts, d = a->info.hidden_size;
    o->output = calloc(T * d + 1, a->info.hidden_type == MOEVK_DTYPE_F32 ? 4 : 2);
    o->output_f32 = calloc(T * d + 1, 4);
    o->logits = calloc(T * E + 1, 4);
    o->weights = calloc(T * choices + 1, 4);
    o->ids = calloc(T * choices + 1, 4);
    o->slots = calloc(T * choices + 1, 4);
    o->counts = calloc(E + 1, 4);
    o->offsets = calloc(E + 2, 4);
    if (a->token_scores) o->token_scores = calloc(T * 3 + 1, 4);
    if (o->output && o->output_f32 && o->logits && o->weights && o->ids && o->slots && o->counts &&
        o->offsets && (!a->token_scores || o->token_scores))
        return 1;
    fprintf(stderr, "moevk layer: out of host memory\n");
    return 0;
}

/* The exit status of a written layer: 3 (with a warning) when tokens held NaN or inf. */
static int written_status(const moevk_route_stats *stats) {
    if (stats->nonfinite_rows == 0) return 0;
    fprintf(stderr,
            "moevk layer: warning: %u tokens held NaN or an infinity: routed nowhere, their "
            "output rows NaN\n",
            stats->nonfinite_rows);
    return 3;
}

/* The layer's output as float32 (output.npy's type, whatever the hidden states'). */
static void widen_output(const layer_outputs *o, uint64_t count, moevk_dtype type) {
    const uint16_t *bits = o->output;
    for (uint64_t i = 0; i < count; ++i)
        o->output_f32[i] = type == MOEVK_DTYPE_F32   ? ((const float *)o->output)[i]
                           : type == MOEVK_DTYPE_F16 ? ref_half_to_float(bits[i])
                                                     : ref_bf16_to_float(bits[i]);
}

#ifdef MOEVK_CLI_MPI
/* The layer over MPI ranks (layer_expert_parallel.c); rank 0 writes the files. */
static int run_expert_parallel(layer_args *a, layer_inputs *in, const moevk_layer_info *info,
                               moevk_context *context) {
    uint64_t T = in->hidden.shape[0];
    layer_outputs o = {0};
    moevk_route_stats stats;
    moevk_route_stats_init(&stats);
    int status = 1, writer = 1;
    if (alloc_outputs(a, &o, T, a->info.top_k)) {
        moevk_route_input input;
        moevk_route_input_init(&input);
        input.num_tokens = (uint32_t)T;
        input.hidden = moevk_host_tensor(in->hidden.data);
        input.bias =
            moevk_host_tensor(in->score_bias ? (const void *)in->score_bias : in->bias.data);
        input.step = a->step;
        input.layer = a->layer;
        layer_forward_arrays arrays = {o.output, o.logits, o.weights, o.token_scores, o.ids,
                                       o.slots,  o.counts, o.offsets, &stats};
        char error[1024];
        a->loss.sequence_length = a->info.sequence_length;
        layer_backward_request backward = {&in->grad_output, a->want_losses ? &a->loss : NULL,
                                           a->out, 0};
        moevk_result r = layer_forward_expert_parallel(
            context, info, a->exchange_chunks, &in->weights, &in->config, &input, &arrays,
            a->grad_output ? &backward : NULL, &writer, error, sizeof error);
        if (r != MOEVK_SUCCESS) {
            if (writer) fprintf(stderr, "moevk layer: %s\n", error);
            status = r == MOEVK_ERROR_INVALID_ARGUMENT || r == MOEVK_ERROR_UNSUPPORTED ? 2 : 1;
        } else if (backward.status != 0) {
            status = backward.status; /* the writer said why */
        } else if (!writer) {
            status = 0;
        } else {
            widen_output(&o, T * a->info.hidden_size, a->info.hidden_type);
            moevk_device_info device = {0};
            moevk_context_device_info(context, &device);
            if (write_files(a, &o, T, a->info.top_k, &stats, device.name))
                status = written_status(&stats);
        }
    }
    free_outputs(&o);
    return status;
}
#endif

static int run_layer(layer_args *a, layer_inputs *in, moevk_activation activation) {
    const model_config *c = &in->config;
    uint64_t T = in->hidden.shape[0], E = c->num_experts, d = c->hidden_size;
    a->info.max_tokens = (uint32_t)T;
    a->info.hidden_type = in->hidden.type == NPY_F32   ? MOEVK_DTYPE_F32
                          : in->hidden.type == NPY_F16 ? MOEVK_DTYPE_F16
                                                       : MOEVK_DTYPE_BF16;
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &a->info;
    info.intermediate_size = c->intermediate_size;
    info.activation = activation;
    info.weight_type = in->weights.weight_type;
    info.separate_down_type = in->weights.down_type != in->weights.weight_type;
    info.down_weight_type = in->weights.down_type;
    info.host_weights = a->host_weights;
    info.shared_intermediate_size = in->weights.shared_intermediate_size;
    info.shared_gate = in->weights.shared_expert_gate != NULL;
    info.trainable = a->grad_output != NULL;

    moevk_context_info context_info = {.device = a->device};
    moevk_context *context = NULL;
    moevk_layer *layer = NULL;
    layer_outputs o = {0};
    int status = 1;
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk layer: no device: %s\n", moevk_result_string(r));
        return 1;
    }
#ifdef MOEVK_CLI_MPI
    if (a->expert_parallel) {
        status = run_expert_parallel(a, in, &info, context);
        goto done;
    }
#endif
    r = moevk_layer_create(context, &info, &layer);
    if (r == MOEVK_SUCCESS) r = layer_weights_upload(&in->weights, c, layer);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk layer: %s\n", moevk_context_last_error(context));
        status = r == MOEVK_ERROR_INVALID_ARGUMENT ? 2 : 1;
        goto done;
    }
    uint64_t choices = moevk_router_choices(moevk_layer_router(layer));
    if (!alloc_outputs(a, &o, T, choices)) goto done;
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = (uint32_t)T;
    input.hidden = moevk_host_tensor(in->hidden.data);
    input.bias = moevk_host_tensor(in->score_bias ? (const void *)in->score_bias : in->bias.data);
    input.step = a->step;
    input.layer = a->layer;
    moevk_route_stats stats;
    moevk_route_stats_init(&stats);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(o.ids);
    route.weights = moevk_host_tensor(o.weights);
    route.slots = moevk_host_tensor(o.slots);
    route.counts = moevk_host_tensor(o.counts);
    if (a->info.capacity_mode == MOEVK_CAPACITY_DROPLESS)
        route.offsets = moevk_host_tensor(o.offsets);
    route.stats = &stats;
    if (o.token_scores) route.token_scores = moevk_host_tensor(o.token_scores);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(o.output);
    output.router_logits = moevk_host_tensor(o.logits);
    output.route = &route;
    r = moevk_layer_forward(layer, &input, &output);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk layer: %s\n", moevk_context_last_error(context));
        status = r == MOEVK_ERROR_INVALID_ARGUMENT ? 2 : 1;
        goto done;
    }
    widen_output(&o, T * d, a->info.hidden_type);
    moevk_device_info device = {0};
    moevk_context_device_info(context, &device);
    if (!write_files(a, &o, T, choices, &stats, device.name)) goto done;
    if (a->grad_output) {
        a->loss.sequence_length = a->info.sequence_length;
        gradient_source source = layer_gradient_source(context, layer);
        status = layer_gradients_write(&source, &in->weights, (uint32_t)E, (uint32_t)d,
                                       &in->grad_output, a->want_losses ? &a->loss : NULL, a->out);
        if (status != 0) goto done;
    }
    status = written_status(&stats);
done:
    free_outputs(&o);
    moevk_layer_destroy(layer);
    moevk_context_destroy(context);
    return status;
}

/* Reads what the arguments name and runs the layer; an exit status. */
static int layer_from_files(int argc, char **argv, layer_args *a, layer_inputs *in) {
    if (!load_config(a, in)) return 2;
    moevk_router_info base;
    routing_from_config(&in->config, &base);
    if (parse(argc, argv, &base, a) != 1) return 2; /* again: the options over the config */
    moevk_activation activation = MOEVK_ACTIVATION_SWIGLU;
    if (a->activation >= 0) {
        activation = (moevk_activation)a->activation;
    } else if (!in->config.gated) {
        fprintf(stderr,
                "moevk layer: config.json: hidden_act '%s': moevk's gated experts take silu "
                "(SwiGLU); give --activation for experts of another kind\n",
                in->config.hidden_act);
        return 2;
    }
    if (a->info.num_groups > 1 && a->info.topk_groups == 0) {
        fprintf(stderr, "moevk layer: --groups needs --topk-groups\n");
        return 2;
    }
    if (!load_tensors(a, in, activation)) return 2;
    if (!make_folder(a->out)) {
        fprintf(stderr, "moevk layer: %s: cannot create the output folder\n", a->out);
        return 2;
    }
    return run_layer(a, in, activation);
}

int command_layer(int argc, char **argv) {
    if (argc == 0) {
        options_usage(stderr, "layer", LAYER_SYNOPSIS, LAYER_OPTIONS, OPTION_COUNT(LAYER_OPTIONS));
        return 2;
    }
    layer_args a;
    moevk_router_info defaults;
    moevk_router_info_init(&defaults);
    int parsed = parse(argc, argv, &defaults, &a); /* first: --help, bad values, the paths */
    if (parsed < 0) return 0;
    if (!parsed || !check_args(&a)) return 2;
    layer_inputs in;
    memset(&in, 0, sizeof in);
    int status = layer_from_files(argc, argv, &a, &in);
    layer_weights_free(&in.weights);
    model_files_close(&in.files);
    npy_free(&in.hidden);
    npy_free(&in.bias);
    npy_free(&in.grad_output);
    free(in.score_bias_copy);
    return status;
}
