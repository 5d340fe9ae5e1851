/* An MoE layer whose experts are spread over MPI ranks (libmoevk_mpi): run it as
 *   mpirun -np R build/examples/expert_parallel      (R dividing 8: 1, 2, 4 or 8)
 * Rank r holds experts [r * E / R, (r + 1) * E / R) and routes its own tokens; the rows each
 * expert keeps travel to its rank and back. Every rank makes the same weights and every rank's
 * tokens (one seed), so each can also run the whole layer alone, over all ranks' tokens in rank
 * order, and check its slice of the expert-parallel output against it: the same bits, drops by
 * the global capacity included. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moevk_mpi.h"

enum { E = 8, K = 2, D = 64, F = 96, BASE_TOKENS = 300 };

static float frand(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f - 0.5f;
}

/* Uneven loads: rank r has BASE_TOKENS + 37 r tokens. */
static uint32_t tokens_of(int rank) { return BASE_TOKENS + 37u * (uint32_t)rank; }

typedef struct weights {
    float router[E * D], gate[E * F * D], up[E * F * D], down[E * D * F];
} weights;

static void make_weights(weights *w) {
    unsigned seed = 7;
    for (int i = 0; i < E * D; ++i) w->router[i] = frand(&seed);
    for (int i = 0; i < E * F * D; ++i) {
        w->gate[i] = frand(&seed) * 0.3f;
        w->up[i] = frand(&seed) * 0.3f;
    }
    for (int i = 0; i < E * D * F; ++i) w->down[i] = frand(&seed) * 0.3f;
}

static void layer_info(moevk_router_info *router, moevk_layer_info *info, uint32_t max_tokens) {
    moevk_router_info_init(router);
    router->num_experts = E;
    router->top_k = K;
    router->max_tokens = max_tokens;
    router->hidden_size = D;
    router->renormalize = 1;
    router->capacity_factor = 1.0f; /* tight enough that some choices drop */
    moevk_layer_info_init(info);
    info->router = router;
    info->intermediate_size = F;
    info->activation = MOEVK_ACTIVATION_SWIGLU;
}

/* Runs a forward of T tokens from x: the output and the choices' global slots. */
typedef moevk_result (*forward_fn)(void *layer, const moevk_route_input *,
                                   const moevk_layer_output *);
static moevk_result ep_forward(void *l, const moevk_route_input *i, const moevk_layer_output *o) {
    return moevk_ep_layer_forward(l, i, o);
}
static moevk_result one_forward(void *l, const moevk_route_input *i, const moevk_layer_output *o) {
    return moevk_layer_forward(l, i, o);
}
static moevk_result forward(forward_fn run, void *layer, uint32_t T, const float *x, float *out,
                            int32_t *slots, moevk_route_stats *stats) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.hidden = moevk_host_tensor((void *)x);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.slots = moevk_host_tensor(slots);
    route.stats = stats;
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    output.route = &route;
    return run(layer, &input, &output);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, ranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);

    /* Every rank's tokens, in rank order, from one seed. */
    uint32_t first_token = 0, total = 0;
    for (int q = 0; q < ranks; ++q) {
        if (q == rank) first_token = total;
        total += tokens_of(q);
    }
    uint32_t mine = tokens_of(rank);
    weights *w = malloc(sizeof *w);
    float *x = malloc(sizeof(float) * total * D), *out = malloc(sizeof(float) * total * D);
    float *ep_out = malloc(sizeof(float) * mine * D);
    int32_t *slots = malloc(sizeof(int32_t) * total * K),
            *ep_slots = malloc(sizeof(int32_t) * mine * K);
    moevk_result r = w && x && out && ep_out && slots && ep_slots ? MOEVK_SUCCESS
                                                                  : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS) {
        make_weights(w);
        unsigned seed = 11;
        for (size_t i = 0; i < (size_t)total * D; ++i) x[i] = frand(&seed);
    }

    moevk_context *context = NULL;
    moevk_ep_layer *ep = NULL;
    moevk_layer *whole = NULL;
    if (r == MOEVK_SUCCESS) r = moevk_context_create(NULL, &context);
    /* The expert-parallel layer (collective): the router on every rank, this rank's experts. */
    moevk_router_info router;
    moevk_layer_info info;
    layer_info(&router, &info, mine);
    moevk_ep_layer_info ep_info;
    moevk_ep_layer_info_init(&ep_info);
    ep_info.layer = &info;
    ep_info.comm = MPI_COMM_WORLD;
    if (r == MOEVK_SUCCESS) r = moevk_ep_layer_create(context, &ep_info, &ep);
    uint32_t own_first = 0, own_count = 0, unused_rank, unused_ranks;
    if (r == MOEVK_SUCCESS)
        r = moevk_ep_layer_experts(ep, &unused_rank, &unused_ranks, &own_first, &own_count);
    if (r == MOEVK_SUCCESS)
        r = moevk_ep_layer_set_weights(ep, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(w->router));
    const struct {
        moevk_layer_weight which;
        const float *data;
        size_t per_expert;
    } experts[] = {{MOEVK_WEIGHT_GATE, w->gate, F * D},
                   {MOEVK_WEIGHT_UP, w->up, F * D},
                   {MOEVK_WEIGHT_DOWN, w->down, D * F}};
    for (size_t i = 0; r == MOEVK_SUCCESS && i < 3; ++i)
        r = moevk_ep_layer_set_weights(
            ep, experts[i].which, own_first, own_count,
            moevk_host_tensor((void *)(experts[i].data + own_first * experts[i].per_expert)));
    moevk_route_stats ep_stats, stats;
    moevk_route_stats_init(&ep_stats);
    moevk_route_stats_init(&stats);
    if (r == MOEVK_SUCCESS)
        r = forward(ep_forward, ep, mine, x + (size_t)first_token * D, ep_out, ep_slots, &ep_stats);

    /* The whole layer in this one process, over every rank's tokens. */
    moevk_router_info whole_router;
    moevk_layer_info whole_info;
    layer_info(&whole_router, &whole_info, total);
    if (r == MOEVK_SUCCESS) r = moevk_layer_create(context, &whole_info, &whole);
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_set_weights(whole, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(w->router));
    for (size_t i = 0; r == MOEVK_SUCCESS && i < 3; ++i)
        r = moevk_layer_set_weights(whole, experts[i].which, 0, E,
                                    moevk_host_tensor((void *)experts[i].data));
    if (r == MOEVK_SUCCESS) r = forward(one_forward, whole, total, x, out, slots, &stats);

    int differs =
        r != MOEVK_SUCCESS ||
        memcmp(ep_out, out + (size_t)first_token * D, sizeof(float) * mine * D) != 0 ||
        memcmp(ep_slots, slots + (size_t)first_token * K, sizeof(int32_t) * mine * K) != 0;
    if (r != MOEVK_SUCCESS)
        fprintf(stderr, "rank %d: %s\n", rank, moevk_context_last_error(context));
    int any_differs = 0;
    MPI_Allreduce(&differs, &any_differs, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (rank == 0 && r == MOEVK_SUCCESS)
        printf("expert-parallel MoE layer over %d rank%s: %u tokens in all (%u on rank 0), %d "
               "experts (%u per rank), top-%d,\nglobal capacity %u, %llu of %llu choices "
               "dropped; every rank's output and slots %s one process's\n",
               ranks, ranks == 1 ? "" : "s", total, mine, E, own_count, K, ep_stats.capacity,
               (unsigned long long)ep_stats.dropped, (unsigned long long)ep_stats.assignments,
               any_differs ? "DIFFER from" : "are bit for bit");
    moevk_layer_destroy(whole);
    moevk_ep_layer_destroy(ep);
    moevk_context_destroy(context);
    free(w);
    free(x);
    free(out);
    free(ep_out);
    free(slots);
    free(ep_slots);
    MPI_Finalize();
    return any_differs ? 1 : 0;
}
