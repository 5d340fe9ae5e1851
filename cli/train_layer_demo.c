/* `moevk train-demo --layer`: trains a whole small MoE layer on the device (router and SwiGLU
 * experts, E = 8, k = 2) on a toy regression task: tokens come from 8 clusters, and cluster c's
 * target is its own linear map of the token, y = A_c x. Each step runs the layer's forward,
 * the mean squared error's dL/doutput, the backward with the Switch balancing loss and the
 * z-loss joining the router's gradient, and an AdamW step; Gaussian noise on the router's logits
 * is annealed from 1 to 0 (cosine), and the routing health goes into the history. The loss
 * falls and the experts specialise: each cluster's tokens end up on experts of their own.
 * Writes the history (CSV, JSON) and layer.svg: the loss and each expert's share over the
 * steps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "train_layer_demo.h"

enum { EXPERTS = 8, TOP_K = 2, CLUSTERS = 8, DIM = 16, WIDTH = 32, TOKENS = 512 };

typedef struct layer_demo {
    float centers[CLUSTERS][DIM];
    float maps[CLUSTERS][DIM][DIM]; /* A_c */
    float x[TOKENS][DIM], y[TOKENS][DIM], out[TOKENS][DIM], dy[TOKENS][DIM];
    int32_t cluster[TOKENS], ids[TOKENS][TOP_K];
    uint32_t before[EXPERTS], kept[EXPERTS];
    float *loss; /* [steps] */
} layer_demo;

static float demo_gauss(uint64_t *state) {
    float sum = 0.0f; /* Irwin-Hall: plenty for a demo's data, and no libm in the data */
    for (int i = 0; i < 12; ++i) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        sum += (float)(*state >> 40) / 16777216.0f;
    }
    return sum - 6.0f;
}

static void make_task(layer_demo *d, uint64_t *state) {
    for (int c = 0; c < CLUSTERS; ++c) {
        for (int i = 0; i < DIM; ++i) d->centers[c][i] = 2.0f * demo_gauss(state);
        for (int i = 0; i < DIM; ++i)
            for (int j = 0; j < DIM; ++j) d->maps[c][i][j] = demo_gauss(state) / sqrtf(DIM);
    }
}

static void make_batch(layer_demo *d, uint64_t *state) {
    for (int t = 0; t < TOKENS; ++t) {
        int c = t % CLUSTERS;
        d->cluster[t] = c;
        for (int i = 0; i < DIM; ++i) d->x[t][i] = d->centers[c][i] + 0.5f * demo_gauss(state);
        for (int i = 0; i < DIM; ++i) {
            float sum = 0.0f;
            for (int j = 0; j < DIM; ++j) sum += d->maps[c][i][j] * d->x[t][j];
            d->y[t][i] = sum;
        }
    }
}

/* The mean squared error of the batch and its gradient dL/doutput. */
static float mse(layer_demo *d) {
    double sum = 0.0;
    const float scale = 2.0f / (TOKENS * DIM);
    for (int t = 0; t < TOKENS; ++t)
        for (int i = 0; i < DIM; ++i) {
            float diff = d->out[t][i] - d->y[t][i];
            sum += (double)diff * diff;
            d->dy[t][i] = scale * diff;
        }
    return (float)(sum / (TOKENS * DIM));
}

/* Per cluster, the expert most of its tokens go to first, and that expert's share of them. */
static void dominant_experts(const layer_demo *d, int *expert, float *share) {
    for (int c = 0; c < CLUSTERS; ++c) {
        int count[EXPERTS] = {0}, total = 0;
        for (int t = 0; t < TOKENS; ++t)
            if (d->cluster[t] == c && d->ids[t][0] >= 0) ++count[d->ids[t][0]], ++total;
        int best = 0;
        for (int e = 1; e < EXPERTS; ++e)
            if (count[e] > count[best]) best = e;
        expert[c] = best;
        share[c] = total ? (float)count[best] / total : 0.0f;
    }
}

static const char *const COLORS[EXPERTS] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                            "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

/* layer.svg: the loss (log scale) over the steps above, each expert's share of the assignments
 * below. */
static int write_svg(const moevk_history *history, const float *loss, uint32_t steps,
                     const char *path) {
    FILE *file = fopen(path, "w");
    if (!file) return 0;
    const double width = 800, left = 50, plot = 700, panel = 200;
    fprintf(file,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"14\">training loss (mean squared error, log scale)</text>\n"
            "<text x=\"%.0f\" y=\"%.0f\">share of assignments per expert</text>\n",
            width, 2 * panel + 80, left, left, panel + 54);
    float lo = loss[0], hi = loss[0];
    for (uint32_t s = 0; s < steps; ++s) lo = fminf(lo, loss[s]), hi = fmaxf(hi, loss[s]);
    double span = log(hi / lo) > 1e-6 ? log(hi / lo) : 1.0;
    fprintf(file, "<polyline fill=\"none\" stroke=\"black\" stroke-width=\"1.5\" points=\"");
    for (uint32_t s = 0; s < steps; ++s)
        fprintf(file, "%.1f,%.1f ", left + plot * s / (steps > 1 ? steps - 1 : 1),
                24 + panel * (1.0 - log(loss[s] / lo) / span));
    fprintf(file, "\"/>\n");
    uint32_t n = moevk_history_count(history);
    for (int e = 0; e < EXPERTS; ++e) {
        fprintf(file, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                COLORS[e]);
        for (uint32_t i = 0; i < n; ++i) {
            moevk_step_report report = {0};
            uint32_t before[EXPERTS] = {0}, total = 0;
            moevk_history_get(history, i, &report, before, NULL);
            for (int k = 0; k < EXPERTS; ++k) total += before[k];
            double share = total ? (double)before[e] / total : 0.0;
            fprintf(file, "%.1f,%.1f ", left + plot * i / (n > 1 ? n - 1 : 1),
                    panel + 64 + panel * (1.0 - 2.0 * share));
        }
        fprintf(file, "\"/>\n");
    }
    fprintf(file, "</svg>\n");
    return fclose(file) == 0;
}

static moevk_result set_random(moevk_layer *layer, moevk_layer_weight which, uint32_t experts,
                               uint64_t count, float scale, uint64_t *state) {
    float *w = malloc(count * sizeof *w);
    if (!w) return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    for (uint64_t i = 0; i < count; ++i) w[i] = scale * demo_gauss(state);
    moevk_result r = moevk_layer_set_weights(layer, which, 0, experts, moevk_host_tensor(w));
    free(w);
    return r;
}

/* One step: forward, the loss, backward (with the balancing losses), AdamW. */
static moevk_result train_step(layer_demo *d, moevk_layer *layer, uint32_t step,
                               moevk_route_stats *stats, moevk_losses *balancing) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = TOKENS;
    input.hidden = moevk_host_tensor(d->x);
    input.step = step;
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(d->ids);
    route.counts_before = moevk_host_tensor(d->before);
    route.counts = moevk_host_tensor(d->kept);
    route.stats = stats;
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(d->out);
    output.route = &route;
    moevk_result r = moevk_layer_forward(layer, &input, &output);
    if (r != MOEVK_SUCCESS) return r;
    d->loss[step] = mse(d);
    moevk_loss_info losses;
    moevk_loss_info_init(&losses);
    losses.aux_coef = 0.01f;
    losses.z_coef = 0.001f;
    moevk_layer_backward_info backward;
    moevk_layer_backward_info_init(&backward);
    backward.grad_output = moevk_host_tensor(d->dy);
    backward.losses = &losses;
    backward.loss_values = balancing;
    r = moevk_layer_backward(layer, &backward);
    if (r != MOEVK_SUCCESS) return r;
    moevk_optimizer_info adamw;
    moevk_optimizer_info_init(&adamw);
    adamw.kind = MOEVK_OPTIMIZER_ADAMW;
    adamw.learning_rate = 0.01f;
    adamw.beta1 = 0.9f;
    adamw.beta2 = 0.999f;
    adamw.epsilon = 1e-8f;
    adamw.weight_decay = 0.01f;
    adamw.max_grad_norm = 1.0f;
    adamw.step = step + 1;
    return moevk_layer_optimizer_step(layer, &adamw, NULL);
}

int train_layer_demo(const char *device_selector, uint32_t steps, uint32_t every, const char *out) {
    layer_demo *d = calloc(1, sizeof *d);
    float *loss = calloc(steps, sizeof *loss);
    moevk_context *context = NULL;
    moevk_layer *layer = NULL;
    moevk_history *history = NULL;
    int status = 1;
    if (!d || !loss) {
        free(d), free(loss);
        return 1;
    }
    d->loss = loss;
    uint64_t state = 2026;
    make_task(d, &state);
    moevk_context_info context_info = {.device = device_selector};
    moevk_result r = moevk_context_create(&context_info, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk train-demo: no device: %s\n", moevk_result_string(r));
        goto done;
    }
    moevk_router_info router;
    moevk_router_info_init(&router);
    router.num_experts = EXPERTS;
    router.top_k = TOP_K;
    router.max_tokens = TOKENS;
    router.hidden_size = DIM;
    router.renormalize = 1;
    router.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    router.noise = MOEVK_NOISE_GAUSSIAN;
    router.noise_seed = 11;
    router.noise_schedule =
        (moevk_schedule){MOEVK_SCHEDULE_COSINE, 1.0f, 0.0f, steps > 1 ? steps - 1 : 1};
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router;
    info.intermediate_size = WIDTH;
    info.trainable = 1;
    moevk_history_info history_info = {.num_experts = EXPERTS, .max_steps = steps};
    if ((r = moevk_layer_create(context, &info, &layer)) != MOEVK_SUCCESS ||
        (r = moevk_history_create(&history_info, &history)) != MOEVK_SUCCESS)
        goto failed;
    const struct {
        moevk_layer_weight which;
        uint32_t experts;
        uint64_t count;
        float scale;
    } weights[] = {{MOEVK_WEIGHT_ROUTER, 1, EXPERTS * DIM, 0.05f},
                   {MOEVK_WEIGHT_GATE, EXPERTS, EXPERTS * WIDTH * DIM, 1.0f / sqrtf(DIM)},
                   {MOEVK_WEIGHT_UP, EXPERTS, EXPERTS * WIDTH * DIM, 1.0f / sqrtf(DIM)},
                   {MOEVK_WEIGHT_DOWN, EXPERTS, EXPERTS * DIM * WIDTH, 1.0f / sqrtf(WIDTH)}};
    for (size_t i = 0; i < sizeof weights / sizeof weights[0] && r == MOEVK_SUCCESS; ++i)
        r = set_random(layer, weights[i].which, weights[i].experts, weights[i].count,
                       weights[i].scale, &state);
    if (r != MOEVK_SUCCESS) goto failed;
    moevk_device_info device = {0};
    moevk_context_device_info(context, &device);
    printf("moevk train-demo --layer on %s: a layer of %d SwiGLU experts (d %d, f %d), top-%d, "
           "%d tokens a step from %d clusters, each its own linear target, %u steps\n",
           device.name, EXPERTS, DIM, WIDTH, TOP_K, TOKENS, CLUSTERS, steps);
    int dominant[CLUSTERS];
    float share[CLUSTERS];
    for (uint32_t step = 0; step < steps; ++step) {
        make_batch(d, &state);
        moevk_route_stats stats;
        moevk_route_stats_init(&stats);
        moevk_losses balancing;
        moevk_losses_init(&balancing);
        if ((r = train_step(d, layer, step, &stats, &balancing)) != MOEVK_SUCCESS) goto failed;
        moevk_history_add(history, step, &stats, d->before, d->kept);
        if (step % every == 0 || step + 1 == steps) {
            dominant_experts(d, dominant, share);
            float mean_share = 0.0f;
            for (int c = 0; c < CLUSTERS; ++c) mean_share += share[c] / CLUSTERS;
            printf("step %4u  loss %.4f  aux %.3f  z %.3f  entropy %.3f  clusters on their "
                   "experts %.2f  noise %.2f\n",
                   step, d->loss[step], balancing.aux, balancing.z, stats.entropy, mean_share,
                   moevk_schedule_value(&router.noise_schedule, step));
        }
    }
    /* Specialisation: each cluster's first choices, on the last batch. */
    dominant_experts(d, dominant, share);
    int distinct = 0, seen[EXPERTS] = {0};
    for (int c = 0; c < CLUSTERS; ++c)
        if (!seen[dominant[c]]++) ++distinct;
    printf("experts by cluster:");
    for (int c = 0; c < CLUSTERS; ++c) printf(" %d->%d (%.0f%%)", c, dominant[c], 100.0 * share[c]);
    printf("\n");
    char path[4096];
    snprintf(path, sizeof path, "%s/history.csv", out);
    int written = moevk_history_write_csv(history, path) == MOEVK_SUCCESS;
    snprintf(path, sizeof path, "%s/history.json", out);
    written = written && moevk_history_write_json(history, path) == MOEVK_SUCCESS;
    snprintf(path, sizeof path, "%s/layer.svg", out);
    written = written && write_svg(history, d->loss, steps, path);
    if (!written) {
        fprintf(stderr, "moevk train-demo: %s: cannot write\n", path);
        goto done;
    }
    printf("final: loss %.4f from %.4f; %d distinct experts lead the %d clusters; history in "
           "%s/history.csv and .json, chart in %s/layer.svg\n",
           d->loss[steps - 1], d->loss[0], distinct, CLUSTERS, out, out);
    status = 0;
    goto done;
failed:
    fprintf(stderr, "moevk train-demo: %s\n", moevk_context_last_error(context));
done:
    moevk_history_destroy(history);
    moevk_layer_destroy(layer);
    moevk_context_destroy(context);
    free(loss);
    free(d);
    return status;
}
