/* `moevk train-demo`: a small routing training loop on the default device. Tokens come from
 * E clusters and cluster c is best served by expert c; a linear router W [d, E] starts out
 * preferring expert 0 and learns from the reward of the experts it picks, with the Switch
 * balancing loss and the z-loss applied through moevk_router_losses, and Gaussian noise
 * annealed from 1 to 0.05 (cosine). Prints a health line every N steps and writes the history
 * as CSV and JSON (with each expert's miss rate over the tokens it kept, from
 * moevk_router_expert_loss) and an SVG chart of expert usage over the steps. A last phase serves
 * the trained router: a routing profile from calibration batches (profile.json), then batches
 * judged against it, first from the training clusters and then from a cluster it never saw,
 * whose drift the history warns of. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "make_folder.h"
#include "option_table.h"
#include "options.h"
#include "train_layer_demo.h"

enum { EXPERTS = 8, TOP_K = 2, DIM = 16, TOKENS = 512 };

typedef struct demo_rng {
    uint64_t state;
} demo_rng;

static float rng_gauss(demo_rng *rng) {
    float sum = 0.0f; /* Irwin-Hall: plenty for a demo's data */
    for (int i = 0; i < 12; ++i) {
        rng->state = rng->state * 6364136223846793005ull + 1442695040888963407ull;
        sum += (float)(rng->state >> 40) / 16777216.0f;
    }
    return sum - 6.0f;
}

typedef struct demo {
    float centers[EXPERTS][DIM];
    float W[DIM][EXPERTS];
    float x[TOKENS][DIM];
    int32_t target[TOKENS];
    float logits[TOKENS][EXPERTS];
    int32_t ids[TOKENS][TOP_K];
    float grad_weights[TOKENS][TOP_K];
    float grad_logits[TOKENS][EXPERTS];
    float miss[TOKENS]; /* per-token loss for the report: 1 where the first choice missed */
    double expert_loss[EXPERTS];
    uint32_t before[EXPERTS], kept[EXPERTS];
} demo;

/* Tokens from the clusters (or, with `unseen`, all from that center). */
static void make_batch_from(demo *d, demo_rng *rng, const float *unseen) {
    for (int t = 0; t < TOKENS; ++t) {
        d->target[t] = t % EXPERTS;
        const float *center = unseen ? unseen : d->centers[t % EXPERTS];
        for (int i = 0; i < DIM; ++i) d->x[t][i] = center[i] + rng_gauss(rng);
        for (int e = 0; e < EXPERTS; ++e) {
            float sum = 0.0f;
            for (int i = 0; i < DIM; ++i) sum += d->x[t][i] * d->W[i][e];
            d->logits[t][e] = sum;
        }
    }
}

static void make_batch(demo *d, demo_rng *rng) { make_batch_from(d, rng, NULL); }

static const char *const COLORS[EXPERTS] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                            "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

/* Each expert's share of the assignments (before drops) over the steps, as lines. */
static int write_usage_svg(const moevk_history *history, const char *path) {
    FILE *file = fopen(path, "w");
    if (!file) return 0;
    const double width = 800, height = 320, left = 50, top = 20;
    uint32_t n = moevk_history_count(history);
    fprintf(
        file,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
        "font-family=\"sans-serif\" font-size=\"12\">\n"
        "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
        "<text x=\"%.0f\" y=\"14\">share of assignments per expert over training steps</text>\n",
        width + left + 110, height + top + 40, left);
    fprintf(file,
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n"
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
            left, top, left, top + height, left, top + height, left + width, top + height);
    for (int tick = 0; tick <= 4; ++tick) {
        double y = top + height - height * tick / 4.0;
        fprintf(file, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", left - 4,
                y + 4, tick / 4.0);
    }
    moevk_step_report first = {0}, last = {0};
    if (n > 0 && moevk_history_get(history, 0, &first, NULL, NULL) == MOEVK_SUCCESS &&
        moevk_history_get(history, n - 1, &last, NULL, NULL) == MOEVK_SUCCESS)
        fprintf(file,
                "<text x=\"%.0f\" y=\"%.0f\">step %u</text>\n"
                "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">step %u</text>\n",
                left, top + height + 16, first.step, left + width, top + height + 16, last.step);
    for (int e = 0; e < EXPERTS; ++e) {
        fprintf(file, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                COLORS[e]);
        for (uint32_t i = 0; i < n; ++i) {
            uint32_t before[EXPERTS];
            moevk_history_get(history, i, NULL, before, NULL);
            double total = 0;
            for (int j = 0; j < EXPERTS; ++j) total += before[j];
            double share = total > 0 ? before[e] / total : 0;
            fprintf(file, "%.1f,%.1f ", left + width * i / (n > 1 ? n - 1 : 1),
                    top + height - height * share);
        }
        fprintf(file, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">expert %d</text>\n",
                left + width + 10, top + 16.0 * (e + 1), COLORS[e], e);
    }
    fprintf(file, "</svg>\n");
    return fclose(file) == 0;
}

/* One step: route, reward the choices that hit the token's expert, backward, SGD on W.
 * Returns the share of tokens whose first choice is their cluster's expert. */
static moevk_result train_step(demo *d, moevk_router *router, uint32_t step,
                               moevk_route_stats *stats, moevk_losses *losses) {
    moevk_route_input input = {
        .num_tokens = TOKENS, .logits = moevk_host_tensor(d->logits), .step = step};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(&d->ids[0][0]),
                                 .counts_before = moevk_host_tensor(d->before),
                                 .counts = moevk_host_tensor(d->kept),
                                 .stats = stats};
    moevk_result r = moevk_route(router, &input, &output);
    if (r != MOEVK_SUCCESS) return r;
    /* Task loss: -(1/T) sum of the weights of the choices that hit the token's expert. */
    for (int t = 0; t < TOKENS; ++t)
        for (int j = 0; j < TOP_K; ++j)
            d->grad_weights[t][j] = d->ids[t][j] == d->target[t] ? -1.0f / TOKENS : 0.0f;
    moevk_loss_info loss = {.aux_coef = 0.05f,
                            .z_coef = 0.002f,
                            .grad_weights = moevk_host_tensor(&d->grad_weights[0][0])};
    r = moevk_router_losses(router, &loss, losses, moevk_host_tensor(&d->grad_logits[0][0]));
    if (r != MOEVK_SUCCESS) return r;
    const float rate = 0.5f;
    for (int i = 0; i < DIM; ++i)
        for (int e = 0; e < EXPERTS; ++e) {
            float grad = 0.0f;
            for (int t = 0; t < TOKENS; ++t) grad += d->x[t][i] * d->grad_logits[t][e];
            d->W[i][e] -= rate * grad;
        }
    return MOEVK_SUCCESS;
}

/* An inference route of the batch: added to the profile, or judged against drift_profile. */
static moevk_result serve_step(demo *d, moevk_router *router, uint32_t step, moevk_profile *profile,
                               const moevk_profile *drift_profile, moevk_route_stats *stats) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = TOKENS;
    input.logits = moevk_host_tensor(d->logits);
    input.step = step;
    input.inference = 1;
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.expert_ids = moevk_host_tensor(&d->ids[0][0]);
    output.counts_before = moevk_host_tensor(d->before);
    output.counts = moevk_host_tensor(d->kept);
    output.stats = stats;
    output.profile = profile;
    output.drift_profile = drift_profile;
    return moevk_route(router, &input, &output);
}

enum { CALIBRATION_BATCHES = 10, SERVED_BATCHES = 4 };

/* The serving phase after training: calibrate a profile, then judge batches from the training
 * clusters and from an unseen one, each added to the history. 1 when it ran. */
static int serve(demo *d, demo_rng *rng, moevk_router *router, moevk_history *history,
                 uint32_t first_step, const char *out) {
    moevk_profile_info info;
    moevk_profile_info_for_router(router, &info);
    moevk_profile *profile = NULL;
    if (moevk_profile_create(&info, &profile) != MOEVK_SUCCESS) return 0;
    int ok = 1;
    for (int b = 0; ok && b < CALIBRATION_BATCHES; ++b) {
        make_batch(d, rng);
        ok = serve_step(d, router, first_step, profile, NULL, NULL) == MOEVK_SUCCESS;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/profile.json", out);
    /* A library without cJSON (the Windows build) keeps the profile in memory only. */
    moevk_result saved = ok ? moevk_profile_save(profile, path) : MOEVK_SUCCESS;
    if (saved == MOEVK_ERROR_UNSUPPORTED)
        snprintf(path, sizeof path, "memory (no profile files)");
    else if (saved != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk train-demo: %s: cannot write\n", path);
        ok = 0;
    }
    if (ok)
        printf("serving: a routing profile of %d calibration batches in %s; then batches from "
               "the training clusters, then from a cluster never seen\n",
               CALIBRATION_BATCHES, path);
    float unseen[DIM];
    for (int i = 0; i < DIM; ++i) unseen[i] = 2.0f * rng_gauss(rng);
    for (int b = 0; ok && b < 2 * SERVED_BATCHES; ++b) {
        int shifted = b >= SERVED_BATCHES;
        make_batch_from(d, rng, shifted ? unseen : NULL);
        moevk_route_stats stats;
        moevk_route_stats_init(&stats);
        uint32_t step = first_step + (uint32_t)b;
        ok = serve_step(d, router, step, NULL, profile, &stats) == MOEVK_SUCCESS;
        if (!ok) break;
        moevk_history_add(history, step, &stats, d->before, d->kept);
        double psi = 0;
        for (int q = 0; q < MOEVK_MEASURES; ++q) psi = fmax(psi, stats.psi[q]);
        uint32_t warnings = moevk_history_warnings(history);
        printf("serve %4u  %-15s  usage JSD %.3f  largest PSI %.3f  energy tail %.3f%s\n", step,
               shifted ? "unseen cluster" : "seen clusters", stats.usage_jsd, psi,
               stats.energy_tail, warnings & MOEVK_WARNING_DRIFT ? "  WARNING: drift" : "");
    }
    moevk_profile_destroy(profile);
    return ok;
}

static double accuracy(const demo *d) {
    int hits = 0;
    for (int t = 0; t < TOKENS; ++t) hits += d->ids[t][0] == d->target[t];
    return (double)hits / TOKENS;
}

static int run(const char *device_selector, uint32_t steps, uint32_t every, const char *out) {
    demo *d = calloc(1, sizeof *d);
    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_history *history = NULL;
    int status = 1;
    if (!d) return 1;
    demo_rng rng = {2024};
    for (int e = 0; e < EXPERTS; ++e)
        for (int i = 0; i < DIM; ++i) d->centers[e][i] = rng_gauss(&rng);
    /* Start collapsed: every cluster's tokens prefer expert 0 by about 4 logits. */
    float mean[DIM] = {0}, norm = 0.0f;
    for (int i = 0; i < DIM; ++i) {
        for (int c = 0; c < EXPERTS; ++c) mean[i] += d->centers[c][i] / EXPERTS;
        norm += mean[i] * mean[i];
    }
    for (int i = 0; i < DIM; ++i)
        for (int e = 0; e < EXPERTS; ++e)
            d->W[i][e] = 0.01f * rng_gauss(&rng) + (e == 0 ? 4.0f * mean[i] / norm : 0.0f);
    moevk_context_info context_info = {.device = device_selector};
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk train-demo: no device: %s\n", moevk_result_string(r));
        goto done;
    }
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = EXPERTS;
    info.top_k = TOP_K;
    info.max_tokens = TOKENS;
    info.losses = 1;
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_seed = 7;
    info.noise_schedule =
        (moevk_schedule){MOEVK_SCHEDULE_COSINE, 1.0f, 0.05f, steps > 1 ? steps - 1 : 1};
    moevk_history_info history_info = {.num_experts = EXPERTS,
                                       .max_steps = steps + 2 * SERVED_BATCHES};
    if ((r = moevk_router_create(context, &info, &router)) != MOEVK_SUCCESS ||
        (r = moevk_history_create(&history_info, &history)) != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk train-demo: %s\n", moevk_context_last_error(context));
        goto done;
    }
    moevk_device_info device = {0};
    moevk_context_device_info(context, &device);
    printf("moevk train-demo on %s: %d experts, top-%d, %d tokens a step, %u steps\n", device.name,
           EXPERTS, TOP_K, TOKENS, steps);
    double hit = 0.0;
    for (uint32_t step = 0; step < steps; ++step) {
        make_batch(d, &rng);
        moevk_route_stats stats;
        moevk_route_stats_init(&stats);
        moevk_losses losses = {0};
        r = train_step(d, router, step, &stats, &losses);
        if (r != MOEVK_SUCCESS) {
            fprintf(stderr, "moevk train-demo: %s\n", moevk_context_last_error(context));
            goto done;
        }
        moevk_history_add(history, step, &stats, d->before, d->kept);
        /* Each expert's miss rate over the tokens it kept, into the report. */
        for (int t = 0; t < TOKENS; ++t) d->miss[t] = d->ids[t][0] == d->target[t] ? 0.0f : 1.0f;
        r = moevk_router_expert_loss(router, moevk_host_tensor(d->miss), d->expert_loss);
        if (r != MOEVK_SUCCESS) {
            fprintf(stderr, "moevk train-demo: %s\n", moevk_context_last_error(context));
            goto done;
        }
        moevk_history_set_expert_loss(history, d->expert_loss);
        hit = accuracy(d);
        if (step % every == 0 || step + 1 == steps) {
            moevk_step_report report = {0};
            moevk_history_get(history, moevk_history_count(history) - 1, &report, NULL, NULL);
            uint32_t warnings = moevk_history_warnings(history);
            printf("step %4u  hit %.2f  entropy %.3f  top expert %u holds %.2f  imbalance %.2f  "
                   "drops %.3f  aux %.3f  z %.2f  noise %.2f%s%s\n",
                   step, hit, report.entropy, report.top_expert, report.top_share, report.imbalance,
                   report.drop_fraction, losses.aux, losses.z,
                   moevk_schedule_value(&info.noise_schedule, step),
                   warnings & MOEVK_WARNING_COLLAPSE ? "  WARNING: collapse" : "",
                   warnings & MOEVK_WARNING_OSCILLATION ? "  WARNING: oscillation" : "");
        }
    }
    if (!serve(d, &rng, router, history, steps, out)) {
        fprintf(stderr, "moevk train-demo: %s\n", moevk_context_last_error(context));
        goto done;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/history.csv", out);
    int written = moevk_history_write_csv(history, path) == MOEVK_SUCCESS;
    snprintf(path, sizeof path, "%s/history.json", out);
    written = written && moevk_history_write_json(history, path) == MOEVK_SUCCESS;
    snprintf(path, sizeof path, "%s/usage.svg", out);
    written = written && write_usage_svg(history, path);
    if (!written) {
        fprintf(stderr, "moevk train-demo: %s: cannot write\n", path);
        goto done;
    }
    printf("final: %.0f%% of tokens routed first to their cluster's expert; history in "
           "%s/history.csv and .json, chart in %s/usage.svg\n",
           100.0 * hit, out, out);
    status = 0;
done:
    moevk_history_destroy(history);
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    free(d);
    return status;
}

typedef struct train_args {
    uint32_t steps, every;
    const char *device, *out;
    int layer;
} train_args;

#define OPTION_ARGS train_args
static const option TRAIN_OPTIONS[] = {
    OPT_UINT("--steps", "N", "training steps (default 300)", steps, 1, 1 << 20, NULL),
    OPT_UINT("--every", "N", "a health line every N steps (default 25)", every, 1, 1 << 20, NULL),
    OPT_TEXT("--out", "DIR",
             "history.csv, history.json, usage.svg, profile.json (default moevk-train-demo)", out),
    OPT_TEXT("--device", "N|NAME", "the Vulkan device (default: the best one)", device),
    OPT_FLAG("--layer",
             "train a whole MoE layer instead (router and experts, the backward and AdamW on the "
             "device; history and layer.svg)",
             layer, NULL),
};

int command_train_demo(int argc, char **argv) {
    train_args args = {.steps = 300, .every = 25, .out = "moevk-train-demo"};
    int parsed = options_parse("train-demo",
                               "[options]\n  Trains a toy router out of collapse "
                               "with noise and balancing losses.",
                               TRAIN_OPTIONS, OPTION_COUNT(TRAIN_OPTIONS), argc, argv, &args);
    if (parsed != 1) return parsed < 0 ? 0 : 2;
    uint32_t steps = args.steps, every = args.every;
    const char *device_selector = args.device, *out = args.out;
    if (!make_folder(out)) {
        fprintf(stderr, "moevk train-demo: %s: cannot create the output folder\n", out);
        return 2;
    }
    return args.layer ? train_layer_demo(device_selector, steps, every, out)
                      : run(device_selector, steps, every, out);
}
