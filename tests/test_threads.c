/* The thread-safety model: one context shared by several threads, each routing on its own
 * router; the context serialises the queue. Results must equal single-threaded runs bit for
 * bit. Built also with ThreadSanitizer by the test command. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define THREADS 4
#define CALLS 12
#define TOKENS 200

typedef struct job {
    moevk_router *router;
    float logits[CALLS][TOKENS * 16];
    int32_t ids[CALLS][TOKENS * 2];
    float weights[CALLS][TOKENS * 2];
    moevk_result result;
} job;

static moevk_router *make_router(void) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = 16;
    info.top_k = 2;
    info.max_tokens = TOKENS;
    moevk_router *router = NULL;
    return moevk_router_create(test_context(), &info, &router) == MOEVK_SUCCESS ? router : NULL;
}

static void *route_all(void *argument) {
    job *j = argument;
    j->result = MOEVK_SUCCESS;
    for (int c = 0; c < CALLS && j->result == MOEVK_SUCCESS; ++c) {
        moevk_route_input input = {.num_tokens = TOKENS - (uint32_t)c,
                                   .logits = moevk_host_tensor(j->logits[c])};
        moevk_route_output output = {.expert_ids = moevk_host_tensor(j->ids[c]),
                                     .weights = moevk_host_tensor(j->weights[c])};
        j->result = moevk_route(j->router, &input, &output);
    }
    return NULL;
}

static void test_threads_route_like_one_thread(void) {
    job *jobs = calloc(THREADS, sizeof *jobs), *alone = calloc(1, sizeof *alone);
    CHECK(jobs && alone, "out of memory");
    for (int t = 0; t < THREADS; ++t) {
        for (int c = 0; c < CALLS; ++c)
            for (int i = 0; i < TOKENS * 16; ++i) jobs[t].logits[c][i] = rng_normal();
        jobs[t].router = make_router();
    }
    pthread_t threads[THREADS];
    int started = 0;
    for (int t = 0; t < THREADS; ++t)
        if (jobs[t].router && pthread_create(&threads[t], NULL, route_all, &jobs[t]) == 0)
            ++started;
    for (int t = 0; t < started; ++t) pthread_join(threads[t], NULL);
    /* The same inputs again, one thread, one router at a time. */
    int same = started == THREADS;
    alone->router = make_router();
    for (int t = 0; same && t < THREADS; ++t) {
        memcpy(alone->logits, jobs[t].logits, sizeof alone->logits);
        route_all(alone);
        same = alone->result == MOEVK_SUCCESS && jobs[t].result == MOEVK_SUCCESS &&
               !memcmp(alone->ids, jobs[t].ids, sizeof alone->ids) &&
               !memcmp(alone->weights, jobs[t].weights, sizeof alone->weights);
    }
    for (int t = 0; t < THREADS; ++t) moevk_router_destroy(jobs[t].router);
    moevk_router_destroy(alone->router);
    free(jobs);
    free(alone);
    CHECK(started == THREADS, "only %d of %d threads started", started, THREADS);
    CHECK(same, "threads routed differently from one thread");
}

/* Routers created and destroyed from several threads at once, on one context. */
static void *create_and_destroy(void *argument) {
    (void)argument;
    for (int i = 0; i < 3; ++i) moevk_router_destroy(make_router());
    return NULL;
}

static void test_routers_come_and_go_on_several_threads(void) {
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; ++t) pthread_create(&threads[t], NULL, create_and_destroy, NULL);
    for (int t = 0; t < THREADS; ++t) pthread_join(threads[t], NULL);
}

static const test_case TESTS[] = {
    TEST(threads_route_like_one_thread),
    TEST(routers_come_and_go_on_several_threads),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
