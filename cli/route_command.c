/* `moevk route`: routes logits read from .npy files and writes every output as .npy, plus
 * stats.json, so that results can be held against any framework. Exit status: 0 done, 1 device
 * failure, 2 bad arguments or files, 3 written but some rows held NaN or +inf. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "make_folder.h"
#include "drift_json.h"
#include "npy.h"
#include "option_table.h"
#include "options.h"
#include "routing_options.h"
#include "stats_json.h"

#define MAX_LOGITS_FILES 256

typedef struct route_args {
    moevk_router_info info; /* first: routing_options.h */
    const char *logits, *bias, *hidden, *expert_out, *out, *device, *grad_weights;
    const char *noise_std, *noise_weights, *token_loss, *router_weights;
    uint32_t choices; /* columns of the per-token outputs: k, or E with expert choice */
    uint32_t step, layer;
    moevk_loss_info loss;
    int want_losses, want_grad;
    int want_token_scores;
    int dropless_given; /* --dropless (which sets info.capacity_mode) */
    /* --logits may be given several times (each file a batch) with --profile-out only. */
    const char *logits_files[MAX_LOGITS_FILES];
    uint32_t logits_count;
    const char *profile_out, *profile; /* --profile-out, --profile */
    uint32_t profile_bins;
    moevk_drift_thresholds thresholds; /* --drift-thresholds (zeros: the defaults) */
    int thresholds_given;
} route_args;

/* "aux=0.01,z=0.001,..." for --loss. */
static const char *take_losses(void *args, const char *text) {
    const char *wrong = routing_parse_losses(text, &((route_args *)args)->loss);
    if (!wrong) ((route_args *)args)->want_losses = 1;
    return wrong;
}

static const char *take_logits(void *args, const char *text) {
    route_args *a = args;
    if (a->logits_count == MAX_LOGITS_FILES) return "--logits is given too often (at most 256)";
    a->logits_files[a->logits_count++] = text;
    if (!a->logits) a->logits = text;
    return NULL;
}

/* "psi=0.2,tail=0.03,..." for --drift-thresholds. */
static const char *take_thresholds(void *args, const char *text) {
    static const char *const NAMES[] = {"jsd", "psi", "tail", "min_tokens"};
    route_args *a = args;
    moevk_drift_thresholds *t = &a->thresholds;
    float values[4] = {0};
    int given[4] = {0}, ok = options_parse_pairs(text, NAMES, 4, values, given);
    for (int i = 0; i < 4; ++i) ok = ok && values[i] >= 0;
    ok = ok && values[3] == (float)(uint32_t)values[3];
    if (!ok)
        return "--drift-thresholds takes NAME=VALUE pairs separated by commas, NAME one of jsd, "
               "psi, tail (each >= 0) and min_tokens (a count)";
    if (given[0]) t->usage_jsd = values[0];
    if (given[1]) t->psi = values[1];
    if (given[2]) t->energy_tail = values[2];
    if (given[3]) t->min_tokens = (uint32_t)values[3];
    a->thresholds_given = 1;
    return NULL;
}

/* What some options imply besides their value. */
static void learned_noise(void *args) { ((route_args *)args)->info.learned_noise = 1; }
static void gradient(void *args) { ((route_args *)args)->want_losses = 1; }
static void same_sequence_length(void *args) {
    route_args *a = args;
    a->loss.sequence_length = a->info.sequence_length;
}

#define OPTION_ARGS route_args
static const option ROUTE_OPTIONS[] = {
    OPT_CALL("--logits", "L.npy",
             "router logits [T, E], float32 or float16 (or --router-weights); several with "
             "--profile-out: one batch each",
             take_logits),
    OPT_TEXT("--router-weights", "W.npy",
             "W_router [E, d] float32: the logits are hidden . W^T, on the device (needs --hidden)",
             router_weights),
    OPT_TEXT("--out", "DIR", "folder for the outputs (required; made if missing)", out),
    OPT_TEXT("--hidden", "X.npy", "hidden states [T, d] float32, float16 or bfloat16: dispatch",
             hidden),
    OPT_TEXT("--expert-out", "Y.npy", "expert outputs to combine ([E, C, d]; dropless [rows, d])",
             expert_out),
    ROUTING_OPTIONS(same_sequence_length),
    OPT_UINT("--layer", "N", "the noise counter's layer", layer, 0, UINT32_MAX, NULL),
    OPT_TEXT("--noise-std", "STD.npy", "Gaussian std per expert [E] float32", noise_std),
    {"--noise-weights", "W.npy", "W_noise [d, E]: std = softplus(x . W_noise) + EPS (--hidden)",
     OPTION_TEXT, OPTION_AT(noise_weights), 0, 0, NULL, NULL, learned_noise},
    OPT_FLOAT("--noise-epsilon", "EPS", "the learned std's floor (default 0.01)",
              info.noise_epsilon, 1, NULL),
    OPT_CALL("--loss", "NAME=C,...", "losses.json: aux, z, importance, load, entropy, sequence",
             take_losses),
    OPT_FLAG("--token-scores",
             "token_scores.npy [T, 3]: each token's energy, entropy (nats), top-1 probability",
             want_token_scores, NULL),
    OPT_TEXT("--profile-out", "P.json", "adds the routes to a routing profile and writes it",
             profile_out),
    OPT_TEXT("--profile", "P.json", "drift.json: this batch judged against the profile", profile),
    OPT_UINT("--profile-bins", "N", "--profile-out: bins of each measure's histogram (default 64)",
             profile_bins, 1, MOEVK_PROFILE_MAX_BINS, NULL),
    OPT_CALL("--drift-thresholds", "NAME=V,...",
             "jsd, psi, tail, min_tokens (defaults 0.05, 0.25, 0.05, 256); kept in --profile-out",
             take_thresholds),
    OPT_FLAG("--grad", "grad_logits.npy: dL/dlogits of the losses (and of --grad-weights)",
             want_grad, gradient),
    OPT_TEXT("--grad-weights", "DW.npy", "dL/dweights [T, k] float32 added to the gradient",
             grad_weights),
    OPT_TEXT("--token-loss", "L.npy", "expert_loss.npy [E]: each expert's mean of L [T]",
             token_loss),
};

static const char ROUTE_SYNOPSIS[] =
    "--logits L.npy --out DIR [options]\n"
    "  Routes the logits and writes expert_ids.npy, weights.npy, slots.npy, counts.npy,\n"
    "  stats.json and, as asked, dispatched, combined, losses and gradients. With\n"
    "  expert-choice the per-token outputs have E columns.";

#define BAD(...) COMMAND_FAIL("route", __VA_ARGS__)

/* 1: parsed; 0: wrong (said on stderr); -1: --help was printed. */
static int parse_args(int argc, char **argv, route_args *a) {
    memset(a, 0, sizeof *a);
    moevk_router_info_init(&a->info);
    a->info.top_k = 2;
    int parsed = options_parse("route", ROUTE_SYNOPSIS, ROUTE_OPTIONS, OPTION_COUNT(ROUTE_OPTIONS),
                               argc, argv, a);
    if (parsed != 1) return parsed;
    if (!a->logits == !a->router_weights) BAD("give --logits or --router-weights (one of them)");
    if (a->router_weights && !a->hidden) BAD("--router-weights needs --hidden");
    if (!a->out) BAD("--out is required");
    if (a->expert_out && !a->hidden) BAD("--expert-out needs --hidden (the routing it combines)");
    if (a->grad_weights && !a->want_grad) BAD("--grad-weights needs --grad");
    if (a->info.num_groups > 1 && a->info.topk_groups == 0) BAD("--groups needs --topk-groups");
    if (a->info.mode == MOEVK_MODE_SEQUENCE && a->info.sequence_length == 0)
        BAD("--mode sequence needs --sequence-length");
    if (a->noise_std && a->noise_weights) BAD("give --noise-std or --noise-weights, not both");
    if (a->noise_weights && !a->hidden) BAD("--noise-weights needs --hidden");
    if (a->profile && a->profile_out) BAD("give --profile-out or --profile, not both");
    if (a->profile_bins && !a->profile_out) BAD("--profile-bins needs --profile-out");
    if (a->logits_count > 1) {
        if (!a->profile_out) BAD("several --logits files need --profile-out (one batch each)");
        if (a->router_weights || a->hidden || a->bias || a->expert_out || a->noise_std ||
            a->noise_weights || a->want_losses || a->token_loss || a->want_token_scores)
            BAD("several --logits files take routing options and --profile-out only");
    }
    a->info.losses = a->want_losses;
    return 1;
}

static int hidden_type_of(const npy_array *array, moevk_dtype *type) {
    switch (array->type) {
    case NPY_F32: *type = MOEVK_DTYPE_F32; return 1;
    case NPY_F16: *type = MOEVK_DTYPE_F16; return 1;
    case NPY_BF16: *type = MOEVK_DTYPE_BF16; return 1;
    default: return 0;
    }
}

/* Reads the inputs and checks their shapes and dtypes against each other. */
/* An optional f32 input of a given shape (dims of 0 are not checked). */
static int load_f32(const char *path, npy_array *array, uint32_t ndim, const uint64_t *shape,
                    const char *what) {
    char error[512];
    if (!npy_read(path, array, error, sizeof error)) BAD("%s", error);
    int ok = array->type == NPY_F32 && array->ndim == ndim;
    for (uint32_t i = 0; ok && i < ndim; ++i) ok = array->shape[i] == shape[i];
    if (!ok) {
        if (ndim == 1)
            BAD("%s: %s must be float32 [%llu]", path, what, (unsigned long long)shape[0]);
        BAD("%s: %s must be float32 [%llu, %llu]", path, what, (unsigned long long)shape[0],
            (unsigned long long)shape[1]);
    }
    return 1;
}

/* The router projection's inputs: W_router [E, d] and the hidden states [T, d] give T and E. */
static int load_projection(route_args *a, npy_array *w, npy_array *hidden) {
    char error[512];
    if (!npy_read(a->router_weights, w, error, sizeof error)) BAD("%s", error);
    if (w->type != NPY_F32 || w->ndim != 2 || w->shape[0] < 1 || w->shape[0] > MOEVK_MAX_EXPERTS)
        BAD("%s: W_router must be float32 [E, d] with E from 1 to %u", a->router_weights,
            MOEVK_MAX_EXPERTS);
    if (!npy_read(a->hidden, hidden, error, sizeof error)) BAD("%s", error);
    if (hidden->ndim != 2 || hidden->shape[0] > UINT32_MAX || hidden->shape[1] != w->shape[1])
        BAD("%s: hidden states must have shape [T, %llu] (W_router's d)", a->hidden,
            (unsigned long long)w->shape[1]);
    a->info.num_experts = (uint32_t)w->shape[0];
    a->info.max_tokens = (uint32_t)hidden->shape[0];
    a->info.logits_type = MOEVK_DTYPE_F32;
    a->info.router_projection = 1;
    return 1;
}

static int load_inputs(route_args *a, npy_array *logits, npy_array *bias, npy_array *hidden,
                       npy_array *expert_out, npy_array *noise_std, npy_array *noise_weights,
                       npy_array *token_loss, npy_array *router_weights) {
    char error[512];
    if (a->router_weights) {
        if (!load_projection(a, router_weights, hidden)) return 0;
        /* The logits' place: [T, E] as the projection will fill it. */
        logits->ndim = 2;
        logits->type = NPY_F32;
        logits->shape[0] = a->info.max_tokens;
        logits->shape[1] = a->info.num_experts;
    } else if (!npy_read(a->logits, logits, error, sizeof error)) {
        BAD("%s", error);
    }
    const char *logits_name = a->logits ? a->logits : a->router_weights;
    if (logits->ndim != 2)
        BAD("%s: logits must be 2-D [T, E], not %u-D", logits_name, logits->ndim);
    if (logits->type != NPY_F32 && logits->type != NPY_F16)
        BAD("%s: logits must be float32 or float16, not '%s'", logits_name, logits->descr);
    if (logits->shape[0] > UINT32_MAX || logits->shape[1] < 1 ||
        logits->shape[1] > MOEVK_MAX_EXPERTS)
        BAD("%s: E = %llu experts; moevk takes 1 to %u", logits_name,
            (unsigned long long)logits->shape[1], MOEVK_MAX_EXPERTS);
    uint64_t T = logits->shape[0], E = logits->shape[1];
    a->info.logits_type = logits->type == NPY_F16 ? MOEVK_DTYPE_F16 : MOEVK_DTYPE_F32;
    a->info.num_experts = (uint32_t)E;
    a->info.max_tokens = (uint32_t)T;
    if (a->bias) {
        if (!npy_read(a->bias, bias, error, sizeof error)) BAD("%s", error);
        if (bias->type != NPY_F32) BAD("%s: bias must be float32, not '%s'", a->bias, bias->descr);
        if (bias->ndim != 1 || bias->shape[0] != E)
            BAD("%s: bias must have shape [%llu] (E)", a->bias, (unsigned long long)E);
    }
    if (a->hidden) {
        if (!a->router_weights && !npy_read(a->hidden, hidden, error, sizeof error))
            BAD("%s", error);
        if (!hidden_type_of(hidden, &a->info.hidden_type))
            BAD("%s: hidden states must be float32, float16 or bfloat16 (uint16), not '%s'",
                a->hidden, hidden->descr);
        if (hidden->ndim != 2 || hidden->shape[0] != T || hidden->shape[1] < 1 ||
            hidden->shape[1] > (1u << 20))
            BAD("%s: hidden states must have shape [%llu, d] (T rows, d >= 1)", a->hidden,
                (unsigned long long)T);
        a->info.hidden_size = (uint32_t)hidden->shape[1];
    }
    uint64_t e_shape[1] = {E}, t_shape[1] = {T}, w_shape[2] = {a->info.hidden_size, E};
    if (a->noise_std && !load_f32(a->noise_std, noise_std, 1, e_shape, "the noise std")) return 0;
    if (a->noise_weights && !load_f32(a->noise_weights, noise_weights, 2, w_shape, "W_noise"))
        return 0;
    if (a->token_loss && !load_f32(a->token_loss, token_loss, 1, t_shape, "the token loss"))
        return 0;
    if (a->expert_out) {
        if (!npy_read(a->expert_out, expert_out, error, sizeof error)) BAD("%s", error);
        if (expert_out->type != hidden->type)
            BAD("%s: expert outputs must have the hidden states' dtype '%s', not '%s'",
                a->expert_out, hidden->descr, expert_out->descr);
    }
    return 1;
}

static int check_expert_out(const route_args *a, const npy_array *y,
                            const moevk_route_stats *stats) {
    uint64_t d = a->info.hidden_size, E = a->info.num_experts;
    int dropless = a->info.capacity_mode == MOEVK_CAPACITY_DROPLESS;
    int ok = dropless ? (y->ndim == 2 && y->shape[0] == stats->dispatched_rows && y->shape[1] == d)
                      : (y->ndim == 3 && y->shape[0] == E && y->shape[1] == stats->capacity &&
                         y->shape[2] == d);
    if (ok) return 1;
    if (dropless)
        BAD("%s: expert outputs must have shape [%u, %llu] (dispatched rows, d)", a->expert_out,
            stats->dispatched_rows, (unsigned long long)d);
    BAD("%s: expert outputs must have shape [%llu, %u, %llu] (E, C, d)", a->expert_out,
        (unsigned long long)E, stats->capacity, (unsigned long long)d);
}

typedef struct outputs {
    int32_t *ids, *slots;
    float *weights, *token_scores;
    uint32_t *counts, *offsets;
    void *dispatched, *combined;
} outputs;

static int write_outputs(const route_args *a, const outputs *o, const moevk_route_stats *stats,
                         const char *hidden_descr, const char *device) {
    char path[4096];
    uint64_t T = a->info.max_tokens, k = a->choices, E = a->info.num_experts;
    uint64_t d = a->info.hidden_size;
    size_t item = a->info.hidden_type == MOEVK_DTYPE_F32 ? 4 : 2;
    uint64_t tk[2] = {T, k}, e1[1] = {E}, e2[1] = {E + 1};
#define WRITE(name, ...)                                                                           \
    do {                                                                                           \
        snprintf(path, sizeof path, "%s/%s", a->out, name);                                        \
        if (!npy_write(path, __VA_ARGS__)) {                                                       \
            fprintf(stderr, "moevk route: %s: cannot write\n", path);                              \
            return 0;                                                                              \
        }                                                                                          \
    } while (0)
    WRITE("expert_ids.npy", "<i4", 2, tk, o->ids, 4);
    WRITE("weights.npy", "<f4", 2, tk, o->weights, 4);
    WRITE("slots.npy", "<i4", 2, tk, o->slots, 4);
    WRITE("counts.npy", "<i4", 1, e1, o->counts, 4);
    if (a->info.capacity_mode == MOEVK_CAPACITY_DROPLESS)
        WRITE("offsets.npy", "<i4", 1, e2, o->offsets, 4);
    if (o->dispatched) {
        if (a->info.capacity_mode == MOEVK_CAPACITY_DROPLESS) {
            uint64_t shape[2] = {stats->dispatched_rows, d};
            WRITE("dispatched.npy", hidden_descr, 2, shape, o->dispatched, item);
        } else {
            uint64_t shape[3] = {E, stats->capacity, d};
            WRITE("dispatched.npy", hidden_descr, 3, shape, o->dispatched, item);
        }
    }
    if (o->combined) {
        uint64_t shape[2] = {T, d};
        WRITE("combined.npy", hidden_descr, 2, shape, o->combined, item);
    }
    if (o->token_scores) {
        uint64_t shape[2] = {T, 3};
        WRITE("token_scores.npy", "<f4", 2, shape, o->token_scores, 4);
    }
    snprintf(path, sizeof path, "%s/stats.json", a->out);
    if (!stats_json_write(path, stats, device)) {
        fprintf(stderr, "moevk route: %s: cannot write\n", path);
        return 0;
    }
    return 1;
#undef WRITE
}

/* --loss and --grad: the losses of the route (losses.json) and dL/dlogits (grad_logits.npy).
 * Returns an exit status. */
static int write_losses(route_args *a, moevk_router *router, moevk_context *context) {
    uint64_t T = a->info.max_tokens, k = a->info.top_k, E = a->info.num_experts;
    npy_array grad_weights = {0};
    float *grad = NULL;
    int status = 2;
    char path[4096], error[512];
    if (a->grad_weights) {
        if (!npy_read(a->grad_weights, &grad_weights, error, sizeof error)) {
            fprintf(stderr, "moevk route: %s\n", error);
            goto done;
        }
        if (grad_weights.type != NPY_F32 || grad_weights.ndim != 2 || grad_weights.shape[0] != T ||
            grad_weights.shape[1] != k) {
            fprintf(stderr, "moevk route: %s: dL/dweights must be float32 [%llu, %llu] (T, k)\n",
                    a->grad_weights, (unsigned long long)T, (unsigned long long)k);
            goto done;
        }
        a->loss.grad_weights = moevk_host_tensor(grad_weights.data);
    }
    if (a->want_grad && !(grad = calloc(T * E + 1, sizeof *grad))) {
        fprintf(stderr, "moevk route: out of host memory\n");
        goto done;
    }
    moevk_losses losses = {0};
    moevk_result r = moevk_router_losses(router, &a->loss, &losses, moevk_host_tensor(grad));
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: %s\n", moevk_context_last_error(context));
        status = r == MOEVK_ERROR_INVALID_ARGUMENT ? 2 : 1;
        goto done;
    }
    status = 1;
    snprintf(path, sizeof path, "%s/losses.json", a->out);
    FILE *file = fopen(path, "w");
    if (!file) goto cannot_write;
    fprintf(file,
            "{\n  \"aux\": %.9g,\n  \"z\": %.9g,\n  \"importance\": %.9g,\n  \"load\": %.9g,\n"
            "  \"entropy\": %.9g,\n  \"sequence\": %.9g,\n  \"total\": %.9g\n}\n",
            losses.aux, losses.z, losses.importance, losses.load, losses.entropy, losses.sequence,
            losses.total);
    if (fclose(file) != 0) goto cannot_write;
    if (grad) {
        uint64_t shape[2] = {T, E};
        snprintf(path, sizeof path, "%s/grad_logits.npy", a->out);
        if (!npy_write(path, "<f4", 2, shape, grad, 4)) goto cannot_write;
    }
    status = 0;
    goto done;
cannot_write:
    fprintf(stderr, "moevk route: %s: cannot write\n", path);
done:
    npy_free(&grad_weights);
    free(grad);
    return status;
}

/* --token-loss: each expert's mean of the token loss over its kept tokens (expert_loss.npy). */
static int write_expert_loss(const route_args *a, moevk_router *router, moevk_context *context,
                             const npy_array *token_loss) {
    double expert_loss[MOEVK_MAX_EXPERTS];
    if (moevk_router_expert_loss(router, moevk_host_tensor(token_loss->data), expert_loss) !=
        MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: %s\n", moevk_context_last_error(context));
        return 0;
    }
    char path[4096];
    uint64_t shape[1] = {a->info.num_experts};
    snprintf(path, sizeof path, "%s/expert_loss.npy", a->out);
    if (npy_write(path, "<f8", 1, shape, expert_loss, 8)) return 1;
    fprintf(stderr, "moevk route: %s: cannot write\n", path);
    return 0;
}

/* --profile-out: a new profile for the router; --profile: the one the file holds. */
static int open_profile(const route_args *a, const moevk_router *router, moevk_profile **out) {
    *out = NULL;
    moevk_profile *profile = NULL;
    if (a->profile_out) {
        moevk_profile_info info;
        moevk_profile_info_for_router(router, &info);
        info.bins = a->profile_bins;
        if (moevk_profile_create(&info, &profile) != MOEVK_SUCCESS)
            BAD("cannot make a profile for this router's options");
    } else if (a->profile) {
        char error[512];
        moevk_result r = moevk_profile_load(a->profile, &profile, error, sizeof error);
        if (r != MOEVK_SUCCESS) BAD("%s: %s", a->profile, error);
    } else {
        return 1;
    }
    if (a->thresholds_given && moevk_profile_set_thresholds(profile, &a->thresholds) != 0) {
        moevk_profile_destroy(profile);
        BAD("--drift-thresholds: a threshold is not finite");
    }
    *out = profile;
    return 1;
}

/* Writes the profile (--profile-out) or drift.json (--profile). */
static int close_profile(const route_args *a, const moevk_profile *profile,
                         const moevk_route_stats *stats) {
    if (a->profile_out && moevk_profile_save(profile, a->profile_out) != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: %s: cannot write\n", a->profile_out);
        return 0;
    }
    if (!a->profile) return 1;
    char path[4096];
    moevk_drift_thresholds thresholds;
    moevk_drift_thresholds_init(&thresholds);
    moevk_profile_get_thresholds(profile, &thresholds);
    snprintf(path, sizeof path, "%s/drift.json", a->out);
    if (drift_json_write(path, stats, &thresholds)) return 1;
    fprintf(stderr, "moevk route: %s: cannot write\n", path);
    return 0;
}

static int run_route(route_args *a, npy_array *logits, npy_array *bias, npy_array *hidden,
                     npy_array *expert_out, const npy_array *noise_std,
                     const npy_array *noise_weights, const npy_array *token_loss,
                     const npy_array *router_weights, outputs *o) {
    moevk_context_info context_info = {.device = a->device};
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_profile *profile = NULL;
    int status = 1;
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: no device: %s\n", moevk_result_string(r));
        return 1;
    }
    r = moevk_router_create(context, &a->info, &router);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: %s\n", moevk_context_last_error(context));
        status = r == MOEVK_ERROR_INVALID_ARGUMENT ? 2 : 1;
        goto done;
    }
    a->choices = moevk_router_choices(router);
    uint64_t T = a->info.max_tokens, k = a->choices, E = a->info.num_experts;
    uint64_t row_bytes =
        (uint64_t)a->info.hidden_size * (a->info.hidden_type == MOEVK_DTYPE_F32 ? 4 : 2);
    o->ids = calloc(T * k + 1, 4);
    o->slots = calloc(T * k + 1, 4);
    o->weights = calloc(T * k + 1, 4);
    o->counts = calloc(E + 1, 4);
    o->offsets = calloc(E + 1, 4);
    if (a->hidden)
        o->dispatched = calloc(moevk_router_max_dispatched_rows(router) * row_bytes + 1, 1);
    if (a->expert_out) o->combined = calloc(T * row_bytes + 1, 1);
    if (a->want_token_scores) o->token_scores = calloc(T * 3 + 1, 4);
    if (!o->ids || !o->slots || !o->weights || !o->counts || !o->offsets ||
        (a->hidden && !o->dispatched) || (a->expert_out && !o->combined) ||
        (a->want_token_scores && !o->token_scores)) {
        fprintf(stderr, "moevk route: out of host memory\n");
        goto done;
    }
    moevk_route_input input = {.num_tokens = (uint32_t)T,
                               .logits = moevk_host_tensor(logits->data),
                               .bias = moevk_host_tensor(bias->data),
                               .hidden = moevk_host_tensor(hidden->data),
                               .step = a->step,
                               .layer = a->layer,
                               .noise_std = moevk_host_tensor(noise_std->data),
                               .noise_weights = moevk_host_tensor(noise_weights->data),
                               .router_weights = moevk_host_tensor(router_weights->data)};
    input.struct_size = sizeof input; /* router_weights is past the first layout */
    moevk_route_stats stats;
    moevk_route_stats_init(&stats); /* its struct_size asks for the drift's fields too */
    int dropless = a->info.capacity_mode == MOEVK_CAPACITY_DROPLESS;
    moevk_route_output output = {.expert_ids = moevk_host_tensor(o->ids),
                                 .weights = moevk_host_tensor(o->weights),
                                 .slots = moevk_host_tensor(o->slots),
                                 .counts = moevk_host_tensor(o->counts),
                                 .counts_before = moevk_host_tensor(NULL),
                                 .offsets = moevk_host_tensor(dropless ? o->offsets : NULL),
                                 .dispatched = moevk_host_tensor(o->dispatched),
                                 .stats = &stats,
                                 .token_scores = moevk_host_tensor(o->token_scores)};
    output.struct_size = sizeof output; /* token_scores is past the first layout */
    if (!open_profile(a, router, &profile)) {
        status = 2;
        goto done;
    }
    if (a->profile_out) output.profile = profile;
    if (a->profile) output.drift_profile = profile;
    r = moevk_route(router, &input, &output);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: %s\n", moevk_context_last_error(context));
        status = r == MOEVK_ERROR_INVALID_ARGUMENT ? 2 : 1; /* bad arguments, or the device */
        goto done;
    }
    if (a->expert_out) {
        if (!check_expert_out(a, expert_out, &stats)) {
            status = 2;
            goto done;
        }
        r = moevk_combine(router, moevk_host_tensor(expert_out->data),
                          moevk_host_tensor(o->combined));
        if (r != MOEVK_SUCCESS) {
            fprintf(stderr, "moevk route: %s\n", moevk_context_last_error(context));
            goto done;
        }
    }
    moevk_device_info device = {0};
    moevk_context_device_info(context, &device);
    if (!write_outputs(a, o, &stats, hidden->data ? hidden->descr : "<f4", device.name)) goto done;
    if (a->token_loss && !write_expert_loss(a, router, context, token_loss)) goto done;
    if (!close_profile(a, profile, &stats)) goto done;
    if (a->want_losses) {
        int losses_status = write_losses(a, router, context);
        if (losses_status != 0) {
            status = losses_status;
            goto done;
        }
    }
    status = 0;
    if (stats.nonfinite_rows > 0) {
        fprintf(stderr, "moevk route: warning: %u rows held NaN or +inf and were routed nowhere\n",
                stats.nonfinite_rows);
        status = 3;
    }
done:
    moevk_profile_destroy(profile);
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return status;
}

/* Reads --logits file i (2-D float32 or float16; the first sets E and the type). */
static int read_batch(route_args *a, uint32_t i, npy_array *logits) {
    char error[512];
    const char *path = a->logits_files[i];
    if (!npy_read(path, logits, error, sizeof error)) BAD("%s", error);
    if (logits->ndim != 2 || (logits->type != NPY_F32 && logits->type != NPY_F16) ||
        logits->shape[0] > UINT32_MAX || logits->shape[1] < 1 ||
        logits->shape[1] > MOEVK_MAX_EXPERTS)
        BAD("%s: logits must be float32 or float16 [T, E] with E from 1 to %u", path,
            MOEVK_MAX_EXPERTS);
    moevk_dtype type = logits->type == NPY_F16 ? MOEVK_DTYPE_F16 : MOEVK_DTYPE_F32;
    if (i > 0 && (logits->shape[1] != a->info.num_experts || type != a->info.logits_type))
        BAD("%s: every --logits file must have the first's E (%u) and dtype", path,
            a->info.num_experts);
    a->info.num_experts = (uint32_t)logits->shape[1];
    a->info.logits_type = type;
    return 1;
}

/* Several --logits files: each routed as a batch into the profile, which is then written. */
static int run_profile_batches(route_args *a) {
    uint32_t largest = 1;
    for (uint32_t i = 0; i < a->logits_count; ++i) {
        npy_array logits = {0};
        int ok = read_batch(a, i, &logits);
        if (ok && logits.shape[0] > largest) largest = (uint32_t)logits.shape[0];
        npy_free(&logits);
        if (!ok) return 2;
    }
    a->info.max_tokens = largest;
    moevk_context_info context_info = {.device = a->device};
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_profile *profile = NULL;
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: no device: %s\n", moevk_result_string(r));
        return 1;
    }
    int status = 2;
    r = moevk_router_create(context, &a->info, &router);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk route: %s\n", moevk_context_last_error(context));
        status = r == MOEVK_ERROR_INVALID_ARGUMENT ? 2 : 1;
    } else if (open_profile(a, router, &profile)) {
        status = 0;
        for (uint32_t i = 0; status == 0 && i < a->logits_count; ++i) {
            npy_array logits = {0};
            if (!read_batch(a, i, &logits)) {
                status = 2;
                break;
            }
            moevk_route_input input;
            moevk_route_input_init(&input);
            input.num_tokens = (uint32_t)logits.shape[0];
            input.logits = moevk_host_tensor(logits.data);
            input.step = a->step;
            input.layer = a->layer;
            moevk_route_output output;
            moevk_route_output_init(&output);
            output.profile = profile;
            r = moevk_route(router, &input, &output);
            npy_free(&logits);
            if (r != MOEVK_SUCCESS) {
                fprintf(stderr, "moevk route: %s: %s\n", a->logits_files[i],
                        moevk_context_last_error(context));
                status = r == MOEVK_ERROR_INVALID_ARGUMENT ? 2 : 1;
            }
        }
        if (status == 0 && !close_profile(a, profile, NULL)) status = 1;
    }
    moevk_profile_destroy(profile);
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return status;
}

int command_route(int argc, char **argv) {
    route_args a;
    if (argc == 0) {
        options_usage(stderr, "route", ROUTE_SYNOPSIS, ROUTE_OPTIONS, OPTION_COUNT(ROUTE_OPTIONS));
        return 2;
    }
    int parsed = parse_args(argc, argv, &a);
    if (parsed < 0) return 0; /* --help */
    if (!parsed) return 2;    /* parse_args said what is wrong, in one line */
    if (!make_folder(a.out)) {
        fprintf(stderr, "moevk route: %s: cannot create the output folder\n", a.out);
        return 2;
    }
    if (a.logits_count > 1) return run_profile_batches(&a);
    npy_array logits = {0}, bias = {0}, hidden = {0}, expert_out = {0};
    npy_array noise_std = {0}, noise_weights = {0}, token_loss = {0}, router_weights = {0};
    outputs o = {0};
    int status = 2;
    if (load_inputs(&a, &logits, &bias, &hidden, &expert_out, &noise_std, &noise_weights,
                    &token_loss, &router_weights))
        status = run_route(&a, &logits, &bias, &hidden, &expert_out, &noise_std, &noise_weights,
                           &token_loss, &router_weights, &o);
    npy_free(&router_weights);
    npy_free(&noise_std);
    npy_free(&noise_weights);
    npy_free(&token_loss);
    npy_free(&logits);
    npy_free(&bias);
    npy_free(&hidden);
    npy_free(&expert_out);
    free(o.ids);
    free(o.slots);
    free(o.weights);
    free(o.counts);
    free(o.offsets);
    free(o.dispatched);
    free(o.combined);
    free(o.token_scores);
    return status;
}
