/* Routing health over steps: reports from real routes, the ring buffer, the collapse and
 * oscillation warnings, and the CSV and JSON files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "route_check.h"

/* A step with no drops and these selections per expert. */
static void add_counts(moevk_history *history, uint32_t step, const uint32_t *counts) {
    moevk_route_stats stats = {0};
    moevk_history_add(history, step, &stats, counts, counts);
}

static void test_reports_follow_the_routes(void) {
    const uint32_t E = 8, T = 256;
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = 2;
    info.max_tokens = T;
    info.capacity_factor = 1.0f;
    moevk_router *router = NULL;
    moevk_history *history = NULL;
    moevk_history_info history_info = {.num_experts = E, .max_steps = 4};
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    CHECK(moevk_history_create(&history_info, &history) == MOEVK_SUCCESS, "history");
    float logits[256 * 8];
    uint32_t before[8], kept[8];
    moevk_route_stats stats = {0};
    for (uint32_t step = 0; step < 6; ++step) {
        for (uint32_t i = 0; i < T * E; ++i) logits[i] = rng_normal() + (i % E == 0 ? 1.0f : 0.0f);
        moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
        moevk_route_output output = {.counts_before = moevk_host_tensor(before),
                                     .counts = moevk_host_tensor(kept),
                                     .stats = &stats};
        CHECK_OK(moevk_route(router, &input, &output));
        CHECK(moevk_history_add(history, step, &stats, before, kept) == MOEVK_SUCCESS, "add");
    }
    moevk_router_destroy(router);
    CHECK(moevk_history_count(history) == 4, "the ring holds %u, want 4",
          moevk_history_count(history));
    moevk_step_report first = {0}, last = {0};
    uint32_t got_before[8], got_kept[8];
    CHECK(moevk_history_get(history, 0, &first, NULL, NULL) == MOEVK_SUCCESS, "get 0");
    CHECK(moevk_history_get(history, 3, &last, got_before, got_kept) == MOEVK_SUCCESS, "get 3");
    CHECK(first.step == 2 && last.step == 5, "steps %u..%u, want 2..5", first.step, last.step);
    CHECK(!memcmp(got_before, before, sizeof before) && !memcmp(got_kept, kept, sizeof kept),
          "the latest counts differ");
    CHECK(last.entropy == stats.entropy && last.drop_fraction == stats.drop_fraction, "stats");
    CHECK(last.top_expert == 0, "expert 0 is favoured, top is %u", last.top_expert);
    double total = 0;
    for (uint32_t e = 0; e < E; ++e) total += before[e];
    CHECK(last.top_share == before[0] / total && last.imbalance == before[0] / (total / E),
          "share %g imbalance %g", last.top_share, last.imbalance);
    CHECK(moevk_history_get(history, 4, &last, NULL, NULL) == MOEVK_ERROR_INVALID_ARGUMENT,
          "past the end");
    moevk_history_destroy(history);
}

static void test_collapse_is_warned(void) {
    moevk_history_info info = {.num_experts = 4, .collapse_share = 0.6f, .collapse_steps = 5};
    moevk_history *history = NULL;
    CHECK(moevk_history_create(&info, &history) == MOEVK_SUCCESS, "history");
    const uint32_t balanced[4] = {25, 25, 26, 24}, collapsed[4] = {5, 80, 10, 5};
    for (uint32_t step = 0; step < 10; ++step) add_counts(history, step, balanced);
    CHECK(moevk_history_warnings(history) == 0, "balanced routing warned");
    for (uint32_t step = 10; step < 14; ++step) add_counts(history, step, collapsed);
    CHECK(moevk_history_warnings(history) == 0, "four collapsed steps of five warned");
    add_counts(history, 14, collapsed);
    CHECK(moevk_history_warnings(history) == MOEVK_WARNING_COLLAPSE, "no collapse warning");
    add_counts(history, 15, balanced);
    CHECK(moevk_history_warnings(history) == 0, "a balanced step still warns");
    moevk_history_destroy(history);
}

static void test_oscillation_is_warned(void) {
    moevk_history_info info = {.num_experts = 4, .oscillation_steps = 8};
    moevk_history *history = NULL;
    CHECK(moevk_history_create(&info, &history) == MOEVK_SUCCESS, "history");
    const uint32_t left[4] = {70, 10, 10, 10}, right[4] = {10, 70, 10, 10};
    for (uint32_t step = 0; step < 8; ++step) add_counts(history, step, left);
    CHECK(!(moevk_history_warnings(history) & MOEVK_WARNING_OSCILLATION), "steady load warned");
    for (uint32_t step = 8; step < 16; ++step) add_counts(history, step, step % 2 ? left : right);
    CHECK(moevk_history_warnings(history) & MOEVK_WARNING_OSCILLATION, "no oscillation warning");
    moevk_history_destroy(history);
}

static void test_csv_and_json_files(void) {
    moevk_history_info info = {.num_experts = 3};
    moevk_history *history = NULL;
    CHECK(moevk_history_create(&info, &history) == MOEVK_SUCCESS, "history");
    const uint32_t counts[3] = {7, 8, 9};
    for (uint32_t step = 0; step < 5; ++step) add_counts(history, step * 10, counts);
    const double loss[3] = {0.5, 1.0, 1.5};
    double got_loss[3];
    moevk_step_report report = {0};
    CHECK(moevk_history_set_expert_loss(history, loss) == MOEVK_SUCCESS, "set the expert loss");
    CHECK(moevk_history_get_expert_loss(history, 4, got_loss) == MOEVK_SUCCESS &&
              !memcmp(got_loss, loss, sizeof loss),
          "get the expert loss");
    CHECK(moevk_history_get(history, 4, &report, NULL, NULL) == MOEVK_SUCCESS &&
              report.has_expert_loss,
          "the latest step has its loss");
    CHECK(moevk_history_get(history, 3, &report, NULL, NULL) == MOEVK_SUCCESS &&
              !report.has_expert_loss,
          "an earlier step has none");
    char path[1024];
    snprintf(path, sizeof path, "%s", test_temp_path("history.csv"));
    CHECK(moevk_history_write_csv(history, path) == MOEVK_SUCCESS, "csv");
    FILE *file = fopen(path, "r");
    char line[1024];
    int lines = 0, header_ok = 0, row_ok = 0;
    while (file && fgets(line, sizeof line, file)) {
        if (lines == 0)
            header_ok = strstr(line, "step,entropy") && strstr(line, "kept_2,overflow_0") &&
                        strstr(line, "loss_2\n");
        if (lines == 4)
            row_ok = !strncmp(line, "30,", 3) && strstr(line, ",7,8,9,7,8,9,0,0,0,0,0,0,,,\n");
        if (lines == 5)
            row_ok = row_ok && !strncmp(line, "40,", 3) &&
                     strstr(line, ",7,8,9,7,8,9,0,0,0,0,0,0,0.5,1,1.5\n");
        ++lines;
    }
    if (file) fclose(file);
    CHECK(lines == 6 && header_ok && row_ok, "csv: %d lines, header %d, last row %d", lines,
          header_ok, row_ok);
    CHECK(moevk_history_write_json(history, path) == MOEVK_SUCCESS, "json");
    char text[4096];
    size_t n = read_text_file(path, text, sizeof text);
    remove(path);
    CHECK(n > 0 && strstr(text, "\"steps\": [") && strstr(text, "\"before\": [7, 8, 9]") &&
              strstr(text, "\"expert_loss\": null") &&
              strstr(text, "\"overflow\": [0, 0, 0], \"drop_rate\": [0, 0, 0]") &&
              strstr(text, "\"expert_loss\": [0.5, 1, 1.5]"),
          "json: %s", text);
    CHECK(moevk_history_write_csv(history, "/nonexistent/dir/h.csv") ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "an unwritable path");
    moevk_history_destroy(history);
    moevk_history_info bad = {.num_experts = 0};
    CHECK(moevk_history_create(&bad, &history) == MOEVK_ERROR_INVALID_ARGUMENT && !history,
          "E = 0 accepted");
}

/* The per-expert loss on the device against the host's mean over each expert's kept tokens:
 * token choice with drops, then expert choice; the same bits from a buffer; the errors. */
static void check_expert_loss(moevk_routing_mode mode, uint32_t E, uint32_t k, uint32_t T) {
    moevk_router_info info = route_case_info(mode, E, k, T, 0);
    info.capacity_factor = 0.6f; /* drops */
    uint64_t TE = (uint64_t)T * E;
    float *logits = malloc(TE * 4), *token_loss = malloc(T * 4);
    int32_t *ids = malloc(TE * 4), *slots = malloc(TE * 4);
    double *got = malloc(E * 8), *from_buffer = malloc(E * 8);
    if (!logits || !token_loss || !ids || !slots || !got || !from_buffer) {
        free(logits), free(token_loss), free(ids), free(slots), free(got), free(from_buffer);
        CHECK(0, "out of memory");
    }
    for (uint64_t i = 0; i < TE; ++i) logits[i] = rng_normal() + (i % E == 1 ? 1.0f : 0.0f);
    for (uint32_t t = 0; t < T; ++t) token_loss[t] = rng_uniform(0.0f, 3.0f);
    moevk_router *router = NULL;
    moevk_buffer *buffer = NULL;
    moevk_result r = moevk_router_create(test_context(), &info, &router);
    moevk_result before_route =
        r == MOEVK_SUCCESS ? moevk_router_expert_loss(router, moevk_host_tensor(token_loss), got)
                           : r;
    moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .slots = moevk_host_tensor(slots)};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS)
        r = moevk_router_expert_loss(router, moevk_host_tensor(token_loss), got);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_create(test_context(), T * 4, &buffer);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, 0, token_loss, T * 4);
    if (r == MOEVK_SUCCESS)
        r = moevk_router_expert_loss(router, moevk_buffer_tensor(buffer, 0), from_buffer);
    /* A buffer too short for [T] f32, from an offset. */
    moevk_result short_buffer =
        router ? moevk_router_expert_loss(router, moevk_buffer_tensor(buffer, 4), got)
               : MOEVK_SUCCESS;
    uint32_t choices = router ? moevk_router_choices(router) : 0;
    moevk_buffer_destroy(buffer);
    moevk_router_destroy(router);
    int same = r == MOEVK_SUCCESS && !memcmp(got, from_buffer, E * 8);
    uint32_t bad_expert = E;
    double bad_got = 0, bad_want = 0;
    for (uint32_t e = 0; e < E && r == MOEVK_SUCCESS && bad_expert == E; ++e) {
        double sum = 0.0;
        uint32_t kept = 0;
        for (uint64_t i = 0; i < (uint64_t)T * choices; ++i)
            if (ids[i] == (int32_t)e && slots[i] >= 0) {
                sum += token_loss[i / choices];
                ++kept;
            }
        double want = kept ? sum / kept : 0.0;
        if (!(fabs(got[e] - want) <= 1e-5 * want))
            bad_expert = e, bad_got = got[e], bad_want = want;
    }
    free(logits), free(token_loss), free(ids), free(slots), free(got), free(from_buffer);
    CHECK(r == MOEVK_SUCCESS, "expert loss -> %s (%s)", moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(before_route == MOEVK_ERROR_INVALID_ARGUMENT, "an expert loss before any route");
    CHECK(short_buffer == MOEVK_ERROR_INVALID_ARGUMENT,
          "a buffer short of [T] f32 from its offset accepted");
    CHECK(same, "the buffer's result differs");
    CHECK(bad_expert == E, "E %u, T %u: expert %u: %.9g, host %.9g", E, T, bad_expert, bad_got,
          bad_want);
}

static void test_expert_loss_matches_the_host(void) {
    check_expert_loss(MOEVK_MODE_TOKEN, 8, 2, 300);
    check_expert_loss(MOEVK_MODE_EXPERT_CHOICE, 8, 2, 300);
}

/* At the largest sizes: every stage keeps within lavapipe's loop limit (LOOP_BUDGET). */
static void test_expert_loss_large(void) {
    check_expert_loss(MOEVK_MODE_TOKEN, 1024, 16, 8192);
    check_expert_loss(MOEVK_MODE_TOKEN, 64, 8, 65536);
    check_expert_loss(MOEVK_MODE_EXPERT_CHOICE, 1024, 1, 4096);
    check_expert_loss(MOEVK_MODE_EXPERT_CHOICE, 64, 1, 65536);
}

int main(int argc, char **argv) {
    static const test_case tests[] = {
        TEST(reports_follow_the_routes),    TEST(collapse_is_warned),
        TEST(oscillation_is_warned),        TEST(csv_and_json_files),
        TEST(expert_loss_matches_the_host), TEST(expert_loss_large),
    };
    return test_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
