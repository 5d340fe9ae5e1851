/* The demo's GGUF model: a toy two-layer Mixtral-like model (llama architecture, E = 8, top-2,
 * Q8_0 experts quantized here from random weights, an f32 router) written as a GGUF file, its
 * layer 1 run through `moevk layer` exactly as a user would run it, and the output held to the
 * CPU reference of the same quantized weights. The files stay for the user to run again. */
#include "demo_gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gguf_write.h"
#include "make_folder.h"
#include "moevk_reference.h"
#include "npy.h"

#define TOY_E 8u
#define TOY_K 2u
#define TOY_D 256u
#define TOY_F 512u
#define TOY_T 48u
#define Q8_0_BLOCK 32u
#define Q8_0_BYTES 34u

static float toy_uniform(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f - 0.5f;
}

/* count random weights of size scale, quantized to Q8_0 as ggml quantizes: per 32 weights,
 * d = max |w| / 127 and q = round(w / d). */
static unsigned char *toy_q8_0(uint64_t count, float scale, uint32_t *state) {
    unsigned char *blocks = malloc(count / Q8_0_BLOCK * Q8_0_BYTES + 1);
    for (uint64_t b = 0; blocks && b < count / Q8_0_BLOCK; ++b) {
        float w[Q8_0_BLOCK], amax = 0;
        for (uint32_t j = 0; j < Q8_0_BLOCK; ++j) {
            w[j] = 2 * scale * toy_uniform(state);
            amax = fabsf(w[j]) > amax ? fabsf(w[j]) : amax;
        }
        float d = amax / 127.0f, inverse = d ? 1.0f / d : 0.0f;
        unsigned char *at = blocks + b * Q8_0_BYTES;
        uint16_t half = ref_float_to_half(d);
        at[0] = (unsigned char)half, at[1] = (unsigned char)(half >> 8);
        for (uint32_t j = 0; j < Q8_0_BLOCK; ++j)
            at[2 + j] = (unsigned char)(int8_t)roundf(w[j] * inverse);
    }
    return blocks;
}

typedef struct toy_model {
    float *router;         /* [E, d] */
    unsigned char *ffn[3]; /* gate, up [E, f, d], down [E, d, f]: Q8_0 */
} toy_model;

static int write_toy(const char *path, toy_model *m) {
    uint32_t state = 2024u;
    uint64_t E = TOY_E, d = TOY_D, f = TOY_F;
    m->router = malloc(E * d * sizeof *m->router);
    for (uint64_t i = 0; m->router && i < E * d; ++i) m->router[i] = 0.2f * toy_uniform(&state);
    for (int j = 0; j < 3; ++j)
        m->ffn[j] = toy_q8_0(E * f * d, 1.0f / sqrtf(j == 2 ? (float)f : (float)d), &state);
    if (!m->router || !m->ffn[0] || !m->ffn[1] || !m->ffn[2]) return 0;
    gguf_builder b;
    gguf_build_begin(&b);
    gguf_build_string(&b, "general.architecture", "llama");
    gguf_build_string(&b, "general.name", "moevk demo toy MoE");
    gguf_build_u32(&b, "llama.block_count", 2);
    gguf_build_u32(&b, "llama.embedding_length", TOY_D);
    gguf_build_u32(&b, "llama.feed_forward_length", TOY_F);
    gguf_build_u32(&b, "llama.expert_count", TOY_E);
    gguf_build_u32(&b, "llama.expert_used_count", TOY_K);
    uint64_t router_ne[2] = {d, E}, up_ne[3] = {d, f, E}, down_ne[3] = {f, d, E};
    uint64_t bytes = E * f * d / Q8_0_BLOCK * Q8_0_BYTES;
    static const char *const NAMES[3] = {"gate", "up", "down"};
    char name[64];
    for (uint32_t layer = 0; layer < 2; ++layer) { /* both blocks the same weights: a toy */
        snprintf(name, sizeof name, "blk.%u.ffn_gate_inp.weight", layer);
        gguf_build_tensor(&b, name, 0, 2, router_ne, m->router, E * d * 4);
        for (int j = 0; j < 3; ++j) {
            snprintf(name, sizeof name, "blk.%u.ffn_%s_exps.weight", layer, NAMES[j]);
            gguf_build_tensor(&b, name, 8, 3, j == 2 ? down_ne : up_ne, m->ffn[j], bytes);
        }
    }
    return gguf_build_write(&b, path);
}

/* The output's largest difference from the reference for the route the command wrote,
 * relative to each output's magnitude. */
static double toy_worst(const toy_model *m, const float *x, const char *out, char *why,
                        size_t why_size) {
    const char *names[4] = {"output.npy", "expert_ids.npy", "weights.npy", "slots.npy"};
    npy_array arrays[4] = {0};
    char path[4200];
    double worst = -1;
    int read = 1;
    for (int i = 0; i < 4 && read; ++i) {
        snprintf(path, sizeof path, "%s/%s", out, names[i]);
        read = npy_read(path, &arrays[i], why, why_size);
    }
    double *want = malloc(sizeof(double) * TOY_T * TOY_D),
           *size = malloc(sizeof(double) * TOY_T * TOY_D);
    if (read && want && size) {
        moevk_router_info info;
        moevk_router_info_init(&info);
        info.num_experts = TOY_E, info.top_k = TOY_K, info.hidden_size = TOY_D;
        ref_layer layer = {.router = &info,
                           .router_weights = m->router,
                           .experts = {TOY_D, TOY_F, MOEVK_ACTIVATION_SWIGLU, MOEVK_DTYPE_Q8_0,
                                       m->ffn[0], m->ffn[1], m->ffn[2], NULL, NULL, NULL, 0,
                                       MOEVK_DTYPE_F32}};
        ref_layer_output(&layer, TOY_T, x, arrays[1].data, arrays[2].data, arrays[3].data, want,
                         size);
        const float *got = arrays[0].data;
        worst = 0;
        for (uint32_t i = 0; i < TOY_T * TOY_D; ++i) {
            double diff = fabs(got[i] - want[i]) / (size[i] + 1e-30);
            if (diff > worst) worst = diff;
        }
    }
    free(want), free(size);
    for (int i = 0; i < 4; ++i) npy_free(&arrays[i]);
    return worst;
}

int demo_gguf(const char *device) {
    const char *tmp = temporary_folder();
    char dir[512], model[600], hidden[600], out[600], device_text[256];
    snprintf(dir, sizeof dir, "%s/moevk-demo-gguf", tmp); /* the same folder every run */
    toy_model m = {0};
    float *x = malloc(sizeof(float) * TOY_T * TOY_D);
    uint32_t state = 77u;
    for (uint32_t i = 0; x && i < TOY_T * TOY_D; ++i) x[i] = 2.0f * toy_uniform(&state);
    if (!x || !make_folder(dir)) {
        fprintf(stderr, "moevk demo: cannot make a folder for the GGUF demo under %s\n", tmp);
        free(x);
        return 1;
    }
    snprintf(model, sizeof model, "%s/toy-moe-q8_0.gguf", dir);
    snprintf(hidden, sizeof hidden, "%s/hidden.npy", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    uint64_t shape[2] = {TOY_T, TOY_D};
    int status = 1;
    if (!write_toy(model, &m) || !npy_write(hidden, "<f4", 2, shape, x, 4)) {
        fprintf(stderr, "moevk demo: cannot write the toy GGUF model in %s\n", dir);
        goto done;
    }
    char *argv[10] = {"--weights", model, "--layer", "1", "--hidden", hidden, "--out", out};
    int argc = 8;
    if (device) {
        snprintf(device_text, sizeof device_text, "%s", device);
        argv[argc++] = "--device";
        argv[argc++] = device_text;
    }
    printf("a GGUF model file: a toy two-layer Mixtral-like MoE (llama architecture, E=%u, top-%u, "
           "d=%u, f=%u,\nQ8_0 experts, %.1f MB), layer 1 through the command line:\n",
           TOY_E, TOY_K, TOY_D, TOY_F,
           2.0 * 3 * TOY_E * TOY_F * TOY_D / Q8_0_BLOCK * Q8_0_BYTES / 1e6);
    printf("  moevk layer --weights %s --layer 1 --hidden %s --out %s\n", model, hidden, out);
    fflush(stdout);
    if (command_layer(argc, argv) != 0) goto done;
    npy_array counts = {0};
    char path[4200], why[512];
    snprintf(path, sizeof path, "%s/counts.npy", out);
    if (!npy_read(path, &counts, why, sizeof why)) {
        fprintf(stderr, "moevk demo: %s\n", why);
        goto done;
    }
    printf("  tokens per expert:");
    for (uint32_t e = 0; e < TOY_E; ++e) printf(" %d", ((const int32_t *)counts.data)[e]);
    npy_free(&counts);
    npy_array output = {0};
    snprintf(path, sizeof path, "%s/output.npy", out);
    double checksum = 0;
    if (npy_read(path, &output, why, sizeof why)) {
        for (uint32_t i = 0; i < TOY_T * TOY_D; ++i) checksum += ((const float *)output.data)[i];
        npy_free(&output);
    }
    double worst = toy_worst(&m, x, out, why, sizeof why);
    printf("\n  output checksum %.6f; vs the CPU reference of the same Q8_0 blocks: worst "
           "difference %.2e of the magnitude\n  (the files stay in %s)\n",
           checksum, worst, dir);
    status = worst >= 0 && worst < 1e-5 ? 0 : 1;
done:
    free(m.router);
    for (int j = 0; j < 3; ++j) free(m.ffn[j]);
    free(x);
    return status;
}
