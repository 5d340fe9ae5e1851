/* `moevk route` as a user runs it: .npy files in, .npy files and stats.json out, one-line
 * errors with exit status 2 for bad files, 3 for non-finite rows. The binary's path is argv[1]. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_shell.h"
#include "harness.h"
#include "moevk_reference.h"
#include "npy.h"

static const char *cli_path;
static char work_dir[256];

static const char *path_in_work(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", work_dir, name);
    return p;
}

/* Runs the CLI with arguments; returns its exit status, stderr captured in `message`. */
static int run_cli(const char *arguments, char *message, size_t message_size) {
    char command[4096];
    snprintf(command, sizeof command, "%s route %s 2>%s", cli_path, arguments,
             path_in_work("stderr.txt"));
    int status = shell_run(command);
    read_text_file(path_in_work("stderr.txt"), message, message_size);
    return status;
}

static void write_logits(const char *name, uint32_t T, uint32_t E, int nonfinite) {
    float *data = malloc((size_t)T * E * 4 + 4);
    for (size_t i = 0; i < (size_t)T * E; ++i) data[i] = 2.0f * rng_normal();
    if (nonfinite && T > 3) data[3 * E + 1] = NAN;
    uint64_t shape[2] = {T, E};
    npy_write(path_in_work(name), "<f4", 2, shape, data, 4);
    free(data);
}

static void write_raw(const char *name, const void *bytes, size_t size) {
    FILE *f = fopen(path_in_work(name), "wb");
    fwrite(bytes, 1, size, f);
    fclose(f);
}

static void test_route_writes_every_output(void) {
    uint32_t T = 300, E = 8, k = 2, d = 12;
    write_logits("logits.npy", T, E, 0);
    float bias[8], *hidden = malloc(T * d * 4);
    for (int e = 0; e < 8; ++e) bias[e] = rng_uniform(-0.3f, 0.3f);
    for (uint32_t i = 0; i < T * d; ++i) hidden[i] = rng_normal();
    uint64_t bias_shape[1] = {E}, hidden_shape[2] = {T, d};
    npy_write(path_in_work("bias.npy"), "<f4", 1, bias_shape, bias, 4);
    npy_write(path_in_work("hidden.npy"), "<f4", 2, hidden_shape, hidden, 4);
    free(hidden);
    /* First route to learn C, then give expert outputs of shape [E, C, d]. */
    char args[2048], message[1024];
    snprintf(args, sizeof args, "--logits %s --bias %s --k 2 --renorm --hidden %s --out %s",
             path_in_work("logits.npy"), path_in_work("bias.npy"), path_in_work("hidden.npy"),
             path_in_work("out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "route failed: %s", message);
    npy_array dispatched, ids, weights, slots, counts;
    char error[512];
    CHECK(npy_read(path_in_work("out/dispatched.npy"), &dispatched, error, sizeof error), "%s",
          error);
    CHECK(dispatched.ndim == 3 && dispatched.shape[0] == E && dispatched.shape[2] == d,
          "dispatched shape");
    uint32_t C = (uint32_t)dispatched.shape[1];
    CHECK(C == (uint32_t)ceil(1.25 * T * k / E), "capacity %u", C);
    npy_write(path_in_work("expert_out.npy"), "<f4", 3, dispatched.shape, dispatched.data, 4);
    snprintf(args + strlen(args), sizeof args - strlen(args), " --expert-out %s",
             path_in_work("expert_out.npy"));
    CHECK(run_cli(args, message, sizeof message) == 0, "route with --expert-out failed: %s",
          message);

    CHECK(npy_read(path_in_work("out/expert_ids.npy"), &ids, error, sizeof error), "%s", error);
    CHECK(npy_read(path_in_work("out/weights.npy"), &weights, error, sizeof error), "%s", error);
    CHECK(npy_read(path_in_work("out/slots.npy"), &slots, error, sizeof error), "%s", error);
    CHECK(npy_read(path_in_work("out/counts.npy"), &counts, error, sizeof error), "%s", error);
    CHECK(ids.type == NPY_I32 && ids.shape[0] == T && ids.shape[1] == k, "expert_ids dtype/shape");
    CHECK(weights.type == NPY_F32 && slots.type == NPY_I32 && counts.shape[0] == E, "dtypes");
    /* Identity experts: combined[t] = sum_j w * hidden[t] over kept choices. */
    npy_array combined, hidden_back;
    CHECK(npy_read(path_in_work("out/combined.npy"), &combined, error, sizeof error), "%s", error);
    CHECK(npy_read(path_in_work("hidden.npy"), &hidden_back, error, sizeof error), "%s", error);
    const float *w = weights.data, *x = hidden_back.data, *y = combined.data;
    const int32_t *s = slots.data;
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t i = 0; i < d; ++i) {
            float want = 0;
            for (uint32_t j = 0; j < k; ++j)
                if (s[t * k + j] >= 0) want += w[t * k + j] * x[t * d + i];
            CHECK(fabsf(y[t * d + i] - want) <= 1e-5f * fabsf(want) + 1e-6f, "combined[%u,%u]", t,
                  i);
        }
    char json[2048];
    CHECK(read_text_file(path_in_work("out/stats.json"), json, sizeof json) > 0,
          "stats.json missing");
    CHECK(strstr(json, "\"aux_loss\"") && strstr(json, "\"z_loss\"") &&
              strstr(json, "\"entropy\"") && strstr(json, "\"drop_fraction\"") &&
              strstr(json, "\"nonfinite_rows\": 0") && strstr(json, "\"capacity\"") &&
              strstr(json, "\"device\""),
          "stats.json lacks a field: %s", json);
    npy_free(&dispatched);
    npy_free(&ids);
    npy_free(&weights);
    npy_free(&slots);
    npy_free(&counts);
    npy_free(&combined);
    npy_free(&hidden_back);
}

static void test_dropless_writes_offsets_and_compact_rows(void) {
    write_logits("logits_dl.npy", 100, 5, 0);
    uint16_t *hidden = malloc(100 * 6 * 2);
    for (int i = 0; i < 600; ++i) hidden[i] = ref_float_to_bf16(rng_normal());
    uint64_t shape[2] = {100, 6};
    npy_write(path_in_work("hidden_bf16.npy"), "<u2", 2, shape, hidden, 2);
    free(hidden);
    char args[1024], message[1024], error[512];
    snprintf(
        args, sizeof args, "--logits %s --k 3 --dropless --pad-multiple 8 --hidden %s --out %s",
        path_in_work("logits_dl.npy"), path_in_work("hidden_bf16.npy"), path_in_work("out_dl"));
    CHECK(run_cli(args, message, sizeof message) == 0, "dropless route failed: %s", message);
    npy_array offsets, dispatched;
    CHECK(npy_read(path_in_work("out_dl/offsets.npy"), &offsets, error, sizeof error), "%s", error);
    CHECK(npy_read(path_in_work("out_dl/dispatched.npy"), &dispatched, error, sizeof error), "%s",
          error);
    const int32_t *o = offsets.data;
    CHECK(offsets.shape[0] == 6 && o[0] == 0, "offsets shape");
    for (int e = 0; e < 5; ++e) CHECK(o[e + 1] % 8 == 0 && o[e + 1] >= o[e], "offsets padded");
    CHECK(dispatched.ndim == 2 && dispatched.shape[0] == (uint64_t)o[5] &&
              dispatched.shape[1] == 6 && dispatched.type == NPY_BF16,
          "dropless dispatched shape [%llu, %llu]", (unsigned long long)dispatched.shape[0],
          (unsigned long long)dispatched.shape[1]);
    npy_free(&offsets);
    npy_free(&dispatched);
}

static void test_nonfinite_rows_warn_and_exit_3(void) {
    write_logits("logits_nan.npy", 20, 4, 1);
    char args[1024], message[1024];
    snprintf(args, sizeof args, "--logits %s --out %s", path_in_work("logits_nan.npy"),
             path_in_work("out_nan"));
    CHECK(run_cli(args, message, sizeof message) == 3, "expected exit 3: %s", message);
    CHECK(strstr(message, "warning") && strstr(message, "1 rows"), "warning missing: %s", message);
    CHECK(file_exists(path_in_work("out_nan/expert_ids.npy")), "outputs not written");
}

/* A bad input file: exit 2 and one line naming the file and the problem. */
static void expect_rejected(const char *args, const char *file, const char *problem) {
    char message[1024];
    int status = run_cli(args, message, sizeof message);
    CHECK(status == 2, "%s: exit %d, expected 2 (%s)", args, status, message);
    CHECK(strchr(message, '\n') == message + strlen(message) - 1 || !strstr(message, "usage"),
          "more than one line: %s", message);
    if (file) CHECK(strstr(message, file) != NULL, "message does not name %s: %s", file, message);
    CHECK(strstr(message, problem) != NULL, "message lacks '%s': %s", problem, message);
}

static void test_bad_files_get_one_line_and_exit_2(void) {
    char args[1024];
    snprintf(args, sizeof args, "--logits %s --out %s", path_in_work("missing.npy"),
             path_in_work("o"));
    expect_rejected(args, "missing.npy", "cannot open");

    write_raw("garbage.npy", "hello world, not numpy", 22);
    snprintf(args, sizeof args, "--logits %s --out %s", path_in_work("garbage.npy"),
             path_in_work("o"));
    expect_rejected(args, "garbage.npy", "bad magic");

    int32_t ints[8] = {0};
    uint64_t shape[2] = {2, 4};
    npy_write(path_in_work("ints.npy"), "<i4", 2, shape, ints, 4);
    snprintf(args, sizeof args, "--logits %s --out %s", path_in_work("ints.npy"),
             path_in_work("o"));
    expect_rejected(args, "ints.npy", "float32 or float16");

    const char fortran[] = "\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': True, "
                           "'shape': (2, 2), }          \n"
                           "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    write_raw("fortran.npy", fortran, sizeof fortran - 1);
    snprintf(args, sizeof args, "--logits %s --out %s", path_in_work("fortran.npy"),
             path_in_work("o"));
    expect_rejected(args, "fortran.npy", "Fortran");

    const char huge[] = "\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, "
                        "'shape': (100000000, 1000), }\n";
    write_raw("huge.npy", huge, sizeof huge - 1);
    snprintf(args, sizeof args, "--logits %s --out %s", path_in_work("huge.npy"),
             path_in_work("o"));
    expect_rejected(args, "huge.npy", "truncated");

    write_logits("logits4.npy", 10, 4, 0);
    float bias[3] = {0};
    uint64_t bias_shape[1] = {3};
    npy_write(path_in_work("bias3.npy"), "<f4", 1, bias_shape, bias, 4);
    snprintf(args, sizeof args, "--logits %s --bias %s --out %s", path_in_work("logits4.npy"),
             path_in_work("bias3.npy"), path_in_work("o"));
    expect_rejected(args, "bias3.npy", "shape");

    snprintf(args, sizeof args, "--logits %s --k 5 --out %s", path_in_work("logits4.npy"),
             path_in_work("o"));
    expect_rejected(args, NULL, "top_k");

    snprintf(args, sizeof args, "--logits %s --temperature 0 --out %s", path_in_work("logits4.npy"),
             path_in_work("o"));
    expect_rejected(args, NULL, "temperature");

    snprintf(args, sizeof args, "--logits %s --capacity -3 --out %s", path_in_work("logits4.npy"),
             path_in_work("o"));
    expect_rejected(args, NULL, "capacity");
}

static void test_npy_parser_survives_random_bytes(void) {
    unsigned char bytes[256];
    char error[256];
    for (int round = 0; round < 20000; ++round) {
        size_t size = rng_u32() % sizeof bytes;
        for (size_t i = 0; i < size; ++i) bytes[i] = (unsigned char)rng_u32();
        if (round % 2 && size > 10) memcpy(bytes, "\x93NUMPY\x01\x00", 8);
        npy_array array;
        if (npy_parse(bytes, size, &array, error, sizeof error)) npy_free(&array);
    }
}

/* No Vulkan driver at all: a clear message and exit status 1, not a crash. */
static void test_no_vulkan_device_is_a_clear_error(void) {
    char command[1024], message[1024] = {0};
    if (running_under_wine()) {
        /* Wine's loader is Linux's, which reads the driver list from the Linux environment that
         * wine started with: scripts/test-windows.sh makes this check from there. */
        printf("  not here: under Wine (scripts/test-windows.sh runs moevk.exe without drivers)\n");
        return;
    }
    snprintf(command, sizeof command, "%s demo 2>%s", cli_path, path_in_work("nodevice.txt"));
    /* The loader's driver list, for the command only (the loader reads it from its own
     * environment, which Wine's programs share with Linux's). */
    const char *names[2] = {"VK_DRIVER_FILES", "VK_ICD_FILENAMES"};
    char *kept[2];
    for (int i = 0; i < 2; ++i) {
        const char *value = getenv(names[i]);
        kept[i] = value ? strdup(value) : NULL;
        set_environment(names[i], "/nonexistent.json");
    }
    int status = shell_run(command);
    for (int i = 0; i < 2; ++i) {
        set_environment(names[i], kept[i]);
        free(kept[i]);
    }
    read_text_file(path_in_work("nodevice.txt"), message, sizeof message);
    CHECK(status == 1, "exit status %d", status);
    CHECK(strstr(message, "no Vulkan device") && strstr(message, "MOEVK_ERROR_NO_DEVICE"),
          "message: %s", message);
}

/* --noise, --seed, --step: the same arguments replay, another seed routes differently. */
static void test_noise_options_replay_by_seed(void) {
    write_logits("logits_noise.npy", 400, 8, 0);
    char args[1024], message[1024], error[512];
    const char *outs[3] = {"out_n1", "out_n2", "out_n3"};
    const char *seeds[3] = {"7", "7", "8"};
    npy_array ids[3];
    for (int i = 0; i < 3; ++i) {
        snprintf(args, sizeof args,
                 "--logits %s --noise gumbel:1 --seed %s --step 3 --layer 1 --out %s",
                 path_in_work("logits_noise.npy"), seeds[i], path_in_work(outs[i]));
        CHECK(run_cli(args, message, sizeof message) == 0, "noisy route failed: %s", message);
        char name[64];
        snprintf(name, sizeof name, "%s/expert_ids.npy", outs[i]);
        CHECK(npy_read(path_in_work(name), &ids[i], error, sizeof error), "%s", error);
    }
    size_t bytes = ids[0].count * 4;
    int replayed = !memcmp(ids[0].data, ids[1].data, bytes),
        changed = memcmp(ids[0].data, ids[2].data, bytes) != 0;
    for (int i = 0; i < 3; ++i) npy_free(&ids[i]);
    CHECK(replayed, "the same seed did not replay");
    CHECK(changed, "another seed routed the same");
    snprintf(args, sizeof args, "--logits %s --noise jitter:1.5 --out %s",
             path_in_work("logits_noise.npy"), path_in_work("o"));
    expect_rejected(args, NULL, "noise_amount");
}

/* --groups, --loss, --grad and --grad-weights: losses.json and grad_logits.npy match the CPU
 * reference. */
static void test_losses_and_gradient_files(void) {
    const uint32_t T = 60, E = 8, K = 2;
    write_logits("logits_loss.npy", T, E, 0);
    float grad_weights[60 * 2];
    for (uint32_t i = 0; i < T * K; ++i) grad_weights[i] = rng_normal();
    uint64_t shape[2] = {T, K};
    npy_write(path_in_work("grad_weights.npy"), "<f4", 2, shape, grad_weights, 4);
    char args[2048], message[1024], error[512];
    snprintf(args, sizeof args,
             "--logits %s --k 2 --groups 4 --topk-groups 2 --loss aux=0.01,z=0.001,entropy=0.1 "
             "--grad --grad-weights %s --out %s",
             path_in_work("logits_loss.npy"), path_in_work("grad_weights.npy"),
             path_in_work("out_loss"));
    CHECK(run_cli(args, message, sizeof message) == 0, "route with --grad failed: %s", message);
    npy_array logits, grad;
    CHECK(npy_read(path_in_work("logits_loss.npy"), &logits, error, sizeof error), "%s", error);
    CHECK(npy_read(path_in_work("out_loss/grad_logits.npy"), &grad, error, sizeof error), "%s",
          error);
    int shape_ok = grad.ndim == 2 && grad.shape[0] == T && grad.shape[1] == E;
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = K;
    info.num_groups = 4;
    info.topk_groups = 2;
    moevk_loss_info loss = {.aux_coef = 0.01f, .z_coef = 0.001f, .entropy_coef = 0.1f};
    double logits_d[60 * 8], grad_weights_d[60 * 2], want[60 * 8];
    for (uint32_t i = 0; i < T * E; ++i) logits_d[i] = ((const float *)logits.data)[i];
    for (uint32_t i = 0; i < T * K; ++i) grad_weights_d[i] = grad_weights[i];
    int computed =
        ref_loss_gradient(&info, NULL, &loss, T, logits_d, NULL, grad_weights_d, want, NULL);
    double worst = 0.0;
    for (uint32_t i = 0; shape_ok && i < T * E; ++i)
        worst = fmax(worst, fabs(((const float *)grad.data)[i] - want[i]));
    npy_free(&logits);
    npy_free(&grad);
    CHECK(shape_ok && computed, "grad_logits.npy must be [%u, %u] f32", T, E);
    CHECK(worst < 1e-5, "grad_logits differs from the reference by %g", worst);
    char text[512];
    size_t n = read_text_file(path_in_work("out_loss/losses.json"), text, sizeof text);
    CHECK(n > 0 && strstr(text, "\"total\""), "losses.json: %s", text);
    snprintf(args, sizeof args, "--logits %s --loss load=1 --out %s",
             path_in_work("logits_loss.npy"), path_in_work("o"));
    expect_rejected(args, NULL, "Gaussian");
    snprintf(args, sizeof args, "--logits %s --loss bogus=1 --out %s",
             path_in_work("logits_loss.npy"), path_in_work("o"));
    expect_rejected(args, NULL, "--loss");
}

/* moevk train-demo: the router learns the toy task; history and chart are written. */
static void test_train_demo_learns_and_writes_history(void) {
    char command[2048];
    snprintf(command, sizeof command, "%s train-demo --steps 200 --every 50 --out %s > %s 2>&1",
             cli_path, path_in_work("train"), path_in_work("train.txt"));
    int status = shell_run(command);
    char text[8192];
    size_t n = read_text_file(path_in_work("train.txt"), text, sizeof text);
    CHECK(status == 0 && n > 0, "train-demo failed: %s", text);
    const char *final = strstr(text, "final: ");
    int percent = final ? atoi(final + 7) : 0;
    CHECK(percent >= 80, "the router learned only %d%%: %s", percent, text);
    CHECK(strstr(text, "step  150") != NULL, "no health line for step 150: %s", text);
    /* The serving phase: no drift on the training clusters, drift on the unseen one. */
    int seen_lines = 0, seen_warned = 0, unseen_lines = 0, unseen_warned = 0;
    for (const char *line = strstr(text, "serve "); line; line = strstr(line + 1, "serve ")) {
        const char *end = strchr(line, '\n');
        int warned = end && strstr(line, "WARNING: drift") && strstr(line, "WARNING: drift") < end;
        if (strncmp(line + 12, "seen", 4) == 0) seen_lines++, seen_warned += warned;
        if (strncmp(line + 12, "unseen", 6) == 0) unseen_lines++, unseen_warned += warned;
    }
    CHECK(seen_lines == 4 && seen_warned == 0 && unseen_lines == 4 && unseen_warned == 4,
          "drift: %d of %d seen batches warned, %d of %d unseen: %s", seen_warned, seen_lines,
          unseen_warned, unseen_lines, text);
    const char *files[4] = {"train/history.csv", "train/history.json", "train/usage.svg",
                            "train/profile.json"};
    for (int i = 0; i < 4; ++i) {
        FILE *f = fopen(path_in_work(files[i]), "r");
        CHECK(f, "%s missing", files[i]);
        fclose(f);
    }
    static char json[1 << 20];
    read_text_file(path_in_work("train/history.json"), json, sizeof json);
    int with_loss = 0, drifted = 0; /* the training steps have a loss; the served, drift */
    for (const char *at = strstr(json, "\"expert_loss\": ["); at;
         at = strstr(at + 1, "\"expert_loss\": ["))
        ++with_loss;
    for (const char *at = strstr(json, "\"drift\": "); at; at = strstr(at + 1, "\"drift\": "))
        drifted += at[9] >= '1' && at[9] <= '9';
    CHECK(with_loss == 200, "%d of the 200 training steps have the experts' loss", with_loss);
    CHECK(drifted == 4, "%d served steps drifted in history.json, not 4", drifted);
}

/* --mode: expert choice writes E columns per token; sequence mode shares decisions; Sinkhorn
 * reports its iterations; --token-loss writes each expert's mean; --noise-std and
 * --noise-weights route; bad modes are one-line errors. */
static void test_modes_and_diagnostics_options(void) {
    enum { T = 64, E = 8, d = 4 };
    write_logits("mode_logits.npy", T, E, 0);
    float token_loss[T], std[E], hidden[T * d], noise_weights[d * E];
    for (int t = 0; t < T; ++t) token_loss[t] = rng_uniform(0.0f, 2.0f);
    for (int e = 0; e < E; ++e) std[e] = rng_uniform(0.1f, 1.0f);
    for (int i = 0; i < T * d; ++i) hidden[i] = rng_normal();
    for (int i = 0; i < d * E; ++i) noise_weights[i] = rng_normal();
    uint64_t t_shape[1] = {T}, e_shape[1] = {E}, h_shape[2] = {T, d}, w_shape[2] = {d, E};
    npy_write(path_in_work("token_loss.npy"), "<f4", 1, t_shape, token_loss, 4);
    npy_write(path_in_work("std.npy"), "<f4", 1, e_shape, std, 4);
    npy_write(path_in_work("mode_hidden.npy"), "<f4", 2, h_shape, hidden, 4);
    npy_write(path_in_work("noise_weights.npy"), "<f4", 2, w_shape, noise_weights, 4);
    char args[2048], message[1024], error[512], text[2048];
    char logits[512]; /* path_in_work's buffers are reused: keep a copy */
    snprintf(logits, sizeof logits, "%s", path_in_work("mode_logits.npy"));

    snprintf(args, sizeof args, "--logits %s --mode expert-choice --token-loss %s --out %s", logits,
             path_in_work("token_loss.npy"), path_in_work("out_choice"));
    CHECK(run_cli(args, message, sizeof message) == 0, "expert choice: %s", message);
    npy_array ids, expert_loss;
    CHECK(npy_read(path_in_work("out_choice/expert_ids.npy"), &ids, error, sizeof error), "%s",
          error);
    int wide = ids.ndim == 2 && ids.shape[0] == T && ids.shape[1] == E;
    npy_free(&ids);
    CHECK(wide, "expert choice ids are not [T, E]");
    CHECK(npy_read(path_in_work("out_choice/expert_loss.npy"), &expert_loss, error, sizeof error),
          "%s", error);
    int per_expert =
        expert_loss.ndim == 1 && expert_loss.shape[0] == E && !strcmp(expert_loss.descr, "<f8");
    npy_free(&expert_loss);
    CHECK(per_expert, "expert_loss.npy is not [E] float64");

    snprintf(args, sizeof args, "--logits %s --mode sequence --sequence-length 16 --k 2 --out %s",
             logits, path_in_work("out_sequence"));
    CHECK(run_cli(args, message, sizeof message) == 0, "sequence: %s", message);
    CHECK(npy_read(path_in_work("out_sequence/expert_ids.npy"), &ids, error, sizeof error), "%s",
          error);
    const int32_t *id = ids.data;
    int shared = 1;
    for (int t = 0; t < T; ++t) shared &= id[2 * t] == id[2 * (t / 16 * 16)];
    npy_free(&ids);
    CHECK(shared, "a sequence's tokens differ");

    snprintf(args, sizeof args, "--logits %s --mode sinkhorn --out %s", logits,
             path_in_work("out_sinkhorn"));
    CHECK(run_cli(args, message, sizeof message) == 0, "sinkhorn: %s", message);
    read_text_file(path_in_work("out_sinkhorn/stats.json"), text, sizeof text);
    unsigned iterations = 0;
    const char *at = strstr(text, "\"sinkhorn_iterations\": ");
    if (at) sscanf(at + strlen("\"sinkhorn_iterations\": "), "%u", &iterations);
    CHECK(iterations > 0, "stats.json: %s", text);

    snprintf(args, sizeof args, "--logits %s --noise gaussian:0 --noise-std %s --out %s", logits,
             path_in_work("std.npy"), path_in_work("out_std"));
    CHECK(run_cli(args, message, sizeof message) == 0, "--noise-std: %s", message);
    snprintf(args, sizeof args,
             "--logits %s --noise gaussian:0 --hidden %s --noise-weights %s --noise-epsilon 0.1 "
             "--out %s",
             logits, path_in_work("mode_hidden.npy"), path_in_work("noise_weights.npy"),
             path_in_work("out_learned"));
    CHECK(run_cli(args, message, sizeof message) == 0, "--noise-weights: %s", message);

    snprintf(args, sizeof args, "--logits %s --mode tokens --out %s", logits,
             path_in_work("out_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "--mode must be"),
          "a bad mode: %s", message);
    snprintf(args, sizeof args, "--logits %s --mode sequence --out %s", logits,
             path_in_work("out_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "--sequence-length"),
          "sequence without a length: %s", message);
    snprintf(args, sizeof args, "--logits %s --noise gaussian:1 --noise-std %s --out %s", logits,
             path_in_work("token_loss.npy"), path_in_work("out_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "noise std"),
          "a std of the wrong shape: %s", message);
}

/* moevk train-demo --layer: a whole MoE layer trained on the device; the loss falls and each
 * cluster's tokens end up on experts of their own; the history and the chart are written. */
static void test_train_demo_layer_trains_and_specialises(void) {
    char command[2048];
    snprintf(command, sizeof command,
             "%s train-demo --layer --steps 150 --every 50 --out %s > %s 2>&1", cli_path,
             path_in_work("train_layer"), path_in_work("train_layer.txt"));
    int status = shell_run(command);
    char text[8192];
    read_text_file(path_in_work("train_layer.txt"), text, sizeof text);
    CHECK(status == 0, "train-demo --layer exits %d: %s", status, text);
    const char *final = strstr(text, "final: loss ");
    float last = 0.0f, first = 0.0f;
    int distinct = 0;
    CHECK(final &&
              sscanf(final, "final: loss %f from %f; %d distinct", &last, &first, &distinct) == 3,
          "no final line: %s", text);
    CHECK(last < 0.05f * first, "the loss fell only from %g to %g", first, last);
    CHECK(distinct >= 6, "only %d distinct experts lead the 8 clusters: %s", distinct, text);
    const char *files[] = {"train_layer/history.csv", "train_layer/history.json",
                           "train_layer/layer.svg"};
    for (int i = 0; i < 3; ++i) CHECK(file_exists(path_in_work(files[i])), "%s missing", files[i]);
}

/* Every command answers --help and -h with its usage on stdout and exit 0 (tried as a new user
 * would: `moevk route --help` once said "--help needs a value"); an unknown option is one line
 * on stderr and exit 2, and so is a value that does not fit. */
static void test_every_command_answers_help(void) {
    const char *commands[] = {"", "route ", "layer ", "demo ", "train-demo ", "devices "};
    const char *asks[] = {"--help", "-h"};
    static char out[1 << 14], err[1 << 12];
    char command[1024];
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; ++c)
        for (size_t a = 0; a < 2; ++a) {
            snprintf(command, sizeof command, "%s %s%s >%s 2>%s", cli_path, commands[c], asks[a],
                     path_in_work("help_out.txt"), path_in_work("help_err.txt"));
            int status = shell_run(command);
            read_text_file(path_in_work("help_out.txt"), out, sizeof out);
            read_text_file(path_in_work("help_err.txt"), err, sizeof err);
            CHECK(status == 0, "'moevk %s%s' exits %d: %s", commands[c], asks[a], status, err);
            CHECK(strncmp(out, "usage: moevk", 12) == 0 && !err[0], "'moevk %s%s' printed: %s%s",
                  commands[c], asks[a], out, err);
        }
    const char *wrong[] = {
        "route --bogus", "layer --bogus",   "demo --bogus", "train-demo --steps 0",
        "demo --tokens", "devices --bogus", "bogus"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; ++i) {
        snprintf(command, sizeof command, "%s %s >%s 2>%s", cli_path, wrong[i],
                 path_in_work("help_out.txt"), path_in_work("help_err.txt"));
        int status = shell_run(command);
        read_text_file(path_in_work("help_err.txt"), err, sizeof err);
        CHECK(status == 2, "'moevk %s' exits %d", wrong[i], status);
        CHECK(err[0] && (strchr(err, '\n') == err + strlen(err) - 1 || strstr(err, "usage")),
              "'moevk %s' said: %s", wrong[i], err);
    }
}

/* Issue 12's reproduction: standard-normal logits of 4099 x 256, k = 6, Sinkhorn to a cap of
 * 10000, dropless. stats.json must report a run that converged (an error below 1e-4 before the
 * cap); the single-workgroup iteration stopped after 2 with an error near 50. */
static void test_sinkhorn_at_4099_by_256_converges(void) {
    enum { T = 4099, E = 256 };
    float *data = malloc((size_t)T * E * 4);
    CHECK(data, "out of memory");
    for (size_t i = 0; i < (size_t)T * E; ++i) data[i] = rng_normal();
    uint64_t shape[2] = {T, E};
    npy_write(path_in_work("sinkhorn_large.npy"), "<f4", 2, shape, data, 4);
    free(data);
    char args[1024], message[1024];
    static char text[1 << 16];
    snprintf(args, sizeof args,
             "--logits %s --k 6 --mode sinkhorn --sinkhorn-iterations 10000 --dropless --out %s",
             path_in_work("sinkhorn_large.npy"), path_in_work("out_sinkhorn_large"));
    CHECK(run_cli(args, message, sizeof message) == 0, "sinkhorn: %s", message);
    read_text_file(path_in_work("out_sinkhorn_large/stats.json"), text, sizeof text);
    unsigned iterations = 0;
    double error = -1.0;
    const char *at = strstr(text, "\"sinkhorn_iterations\": ");
    if (at) sscanf(at + strlen("\"sinkhorn_iterations\": "), "%u", &iterations);
    at = strstr(text, "\"sinkhorn_error\": ");
    if (at) sscanf(at + strlen("\"sinkhorn_error\": "), "%lf", &error);
    CHECK(iterations >= 2 && iterations < 10000 && error >= 0.0 && error < 1e-4,
          "%u iterations, error %g: %s", iterations, error, text);
}

/* --router-weights W [E, d] with --hidden routes as --logits of the reference's projection. */
static void test_router_weights_route_as_their_logits(void) {
    enum { T = 200, E = 8, D = 16 };
    float *hidden = malloc(sizeof(float) * T * D), *w = malloc(sizeof(float) * E * D),
          *logits = malloc(sizeof(float) * T * E);
    CHECK(hidden && w && logits, "out of memory");
    for (int i = 0; i < T * D; ++i) hidden[i] = rng_normal();
    for (int i = 0; i < E * D; ++i) w[i] = rng_normal() * 0.25f;
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.hidden_size = D;
    ref_router_projection(&info, T, hidden, w, logits);
    uint64_t hidden_shape[2] = {T, D}, w_shape[2] = {E, D}, logits_shape[2] = {T, E};
    npy_write(path_in_work("proj_hidden.npy"), "<f4", 2, hidden_shape, hidden, 4);
    npy_write(path_in_work("proj_w.npy"), "<f4", 2, w_shape, w, 4);
    npy_write(path_in_work("proj_logits.npy"), "<f4", 2, logits_shape, logits, 4);
    free(hidden), free(w), free(logits);
    char args[2048], message[1024];
    snprintf(args, sizeof args, "--router-weights %s --hidden %s --k 2 --out %s",
             path_in_work("proj_w.npy"), path_in_work("proj_hidden.npy"),
             path_in_work("proj_out_w"));
    CHECK(run_cli(args, message, sizeof message) == 0, "--router-weights: %s", message);
    snprintf(args, sizeof args, "--logits %s --hidden %s --k 2 --out %s",
             path_in_work("proj_logits.npy"), path_in_work("proj_hidden.npy"),
             path_in_work("proj_out_l"));
    CHECK(run_cli(args, message, sizeof message) == 0, "--logits: %s", message);
    const char *outputs[] = {"expert_ids.npy", "weights.npy", "slots.npy", "dispatched.npy"};
    for (int i = 0; i < 4; ++i) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/%s", path_in_work("proj_out_w"), outputs[i]);
        snprintf(b, sizeof b, "%s/%s", path_in_work("proj_out_l"), outputs[i]);
        CHECK(same_file_bytes(a, b), "%s differs between --router-weights and --logits",
              outputs[i]);
    }
    snprintf(args, sizeof args, "--router-weights %s --out %s", path_in_work("proj_w.npy"),
             path_in_work("proj_out_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "--hidden"),
          "--router-weights without --hidden: %s", message);
    snprintf(args, sizeof args, "--router-weights %s --hidden %s --out %s",
             path_in_work("proj_w.npy"), path_in_work("proj_logits.npy"),
             path_in_work("proj_out_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "W_router's d"),
          "hidden states of the wrong d: %s", message);
}

/* --token-scores: token_scores.npy [T, 3] float32, each token's energy, entropy and top-1
 * probability as the reference gives them for the route's logits. */
static void test_token_scores_file(void) {
    enum { T = 150, E = 8 };
    float *logits = malloc(sizeof(float) * T * E);
    CHECK(logits, "out of memory");
    for (int i = 0; i < T * E; ++i) logits[i] = 2.0f * rng_normal();
    uint64_t shape[2] = {T, E};
    npy_write(path_in_work("scores_logits.npy"), "<f4", 2, shape, logits, 4);
    char args[2048], message[1024], error[256], path[600];
    snprintf(args, sizeof args, "--logits %s --k 2 --token-scores --out %s",
             path_in_work("scores_logits.npy"), path_in_work("scores_out"));
    int status = run_cli(args, message, sizeof message);
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E, info.top_k = 2, info.max_tokens = T;
    int32_t ids[T * 2];
    float weights[T * 2], want[T * 3];
    ref_row_stats rows[T];
    ref_scores_topk(&info, NULL, T, logits, NULL, ids, weights, rows);
    ref_token_scores(&info, NULL, T, logits, rows, want);
    free(logits);
    CHECK(status == 0, "--token-scores: %s", message);
    npy_array scores;
    snprintf(path, sizeof path, "%s/token_scores.npy", path_in_work("scores_out"));
    CHECK(npy_read(path, &scores, error, sizeof error), "%s", error);
    int shape_ok =
        scores.type == NPY_F32 && scores.ndim == 2 && scores.shape[0] == T && scores.shape[1] == 3;
    int close = shape_ok;
    for (int i = 0; close && i < T * 3; ++i)
        close = fabs(((const float *)scores.data)[i] - want[i]) <= 1e-5 * fmax(1.0, fabs(want[i]));
    npy_free(&scores);
    CHECK(shape_ok, "token_scores.npy: float32 [%d, 3] expected", T);
    CHECK(close, "token_scores.npy differs from the reference");
    snprintf(args, sizeof args, "--logits %s --k 2 --mode batch --token-scores --out %s",
             path_in_work("scores_logits.npy"), path_in_work("scores_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "token_scores need"),
          "--token-scores in batch mode: %s", message);
}

static void write_scaled_logits(const char *name, uint32_t T, uint32_t E, float scale,
                                float *keep) {
    float *data = keep ? keep : malloc((size_t)T * E * 4);
    for (size_t i = 0; i < (size_t)T * E; ++i) data[i] = scale * rng_normal();
    uint64_t shape[2] = {T, E};
    npy_write(path_in_work(name), "<f4", 2, shape, data, 4);
    if (!keep) free(data);
}

/* --profile-out over several --logits files writes the profile the library makes of the same
 * batches, byte for byte; --profile writes drift.json, false for a batch like them and true for
 * a sharper one; --drift-thresholds moves the line; mismatched and broken profiles exit 2. */
static void test_profile_and_drift_files(void) {
    enum { T = 400, E = 16, BATCHES = 3 };
    static float batches[BATCHES][T * E];
    char names[BATCHES][32], args[4096], message[1024];
    for (int b = 0; b < BATCHES; ++b) {
        snprintf(names[b], sizeof names[b], "calibration%d.npy", b);
        write_scaled_logits(names[b], T, E, 1.5f, batches[b]);
    }
    write_scaled_logits("like_them.npy", T, E, 1.5f, NULL);
    write_scaled_logits("sharper.npy", T, E, 4.0f, NULL);
    snprintf(args, sizeof args,
             "--logits %s --logits %s --logits %s --k 2 --out %s --profile-out %s",
             path_in_work(names[0]), path_in_work(names[1]), path_in_work(names[2]),
             path_in_work("profile_out"), path_in_work("profile.json"));
    CHECK(run_cli(args, message, sizeof message) == 0, "--profile-out: %s", message);
    /* The library's profile of the same batches. */
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E, info.top_k = 2, info.max_tokens = T;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_profile_info profile_info;
    moevk_profile_info_for_router(router, &profile_info);
    moevk_profile *profile = NULL;
    CHECK_OK(moevk_profile_create(&profile_info, &profile));
    for (int b = 0; b < BATCHES; ++b) {
        moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(batches[b])};
        moevk_route_output output;
        moevk_route_output_init(&output);
        output.profile = profile;
        CHECK_OK(moevk_route(router, &input, &output));
    }
    CHECK_OK(moevk_profile_save(profile, path_in_work("library_profile.json")));
    moevk_profile_destroy(profile);
    moevk_router_destroy(router);
    CHECK(same_file_bytes(path_in_work("profile.json"), path_in_work("library_profile.json")),
          "the command's profile differs from the library's");
    static char text[8192];
    const struct {
        const char *logits, *extra, *want;
    } JUDGED[] = {
        {"like_them.npy", "--token-scores", "\"drift\": false"},
        {"sharper.npy", "", "\"drift\": true"},
        {"sharper.npy", "--drift-thresholds jsd=10,psi=100,tail=1", "\"drift\": false"},
    };
    for (size_t i = 0; i < sizeof JUDGED / sizeof JUDGED[0]; ++i) {
        snprintf(args, sizeof args, "--logits %s --k 2 --out %s --profile %s %s",
                 path_in_work(JUDGED[i].logits), path_in_work("judged"),
                 path_in_work("profile.json"), JUDGED[i].extra);
        CHECK(run_cli(args, message, sizeof message) == 0, "--profile: %s", message);
        char path[600];
        snprintf(path, sizeof path, "%s/drift.json", path_in_work("judged"));
        read_text_file(path, text, sizeof text);
        CHECK(strstr(text, JUDGED[i].want) && strstr(text, "\"psi_energy\"") &&
                  strstr(text, "\"usage_jsd\"") && strstr(text, "\"judged\": true"),
              "%s %s: drift.json: %s", JUDGED[i].logits, JUDGED[i].extra, text);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/token_scores.npy", path_in_work("judged"));
    CHECK(read_text_file(path, text, sizeof text) > 0, "--token-scores beside --profile");
    const struct {
        const char *args, *problem;
    } REFUSED[] = {
        {"--logits %s --k 3 --out %s --profile %s", "E = 16, k = 2"},
        {"--logits %s --k 2 --out %s --profile %s --profile-out x.json", "not both"},
        {"--logits %s --logits %s --out %s", "need --profile-out"},
        {"--logits %s --k 2 --out %s --profile %s --drift-thresholds psi=-1", "drift-thresholds"},
    };
    for (size_t i = 0; i < sizeof REFUSED / sizeof REFUSED[0]; ++i) {
        snprintf(args, sizeof args, REFUSED[i].args, path_in_work("sharper.npy"),
                 path_in_work("judged"), path_in_work("profile.json"));
        CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, REFUSED[i].problem),
              "%s: %s", args, message);
    }
    const char *broken = "{\"format\": \"moevk-routing-profile\"}";
    write_raw("broken_profile.json", broken, strlen(broken));
    snprintf(args, sizeof args, "--logits %s --k 2 --out %s --profile %s",
             path_in_work("sharper.npy"), path_in_work("judged"),
             path_in_work("broken_profile.json"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "routing profile:") &&
              strstr(message, "\"version\" is missing"),
          "a broken profile: %s", message);
}

static const test_case TESTS[] = {
    TEST(profile_and_drift_files),
    TEST(token_scores_file),
    TEST(modes_and_diagnostics_options),
    TEST(sinkhorn_at_4099_by_256_converges),
    TEST(every_command_answers_help),
    TEST(train_demo_learns_and_writes_history),
    TEST(losses_and_gradient_files),
    TEST(noise_options_replay_by_seed),
    TEST(no_vulkan_device_is_a_clear_error),
    TEST(route_writes_every_output),
    TEST(train_demo_layer_trains_and_specialises),
    TEST(dropless_writes_offsets_and_compact_rows),
    TEST(nonfinite_rows_warn_and_exit_3),
    TEST(bad_files_get_one_line_and_exit_2),
    TEST(npy_parser_survives_random_bytes),
    TEST(router_weights_route_as_their_logits),
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_cli PATH_TO_MOEVK [filter]\n0 passed, 1 failed\n");
        return 1;
    }
    cli_path = argv[1];
    if (make_work_folder(work_dir, sizeof work_dir, "moevk-test-cli")) return 1;
    int status = test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc - 1, argv + 1);
    if (remove_work_folder(work_dir)) return 1;
    return status;
}
