/* `moevk layer` as a user runs it on a Hugging Face checkpoint: safetensors weights (one file,
 * shards with their index, or the folder), config.json, .npy hidden states in; output.npy held
 * to reference/layer.c, the routing held byte for byte to `moevk route` on the layer's own
 * router logits, and one-line errors with exit status 2 for bad files. argv[1]: the binary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_write.h"
#include "cli_shell.h"
#include "harness.h"
#include "moevk_reference.h"
#include "npy.h"
#include "random_weights.h"
#include "route_check.h"
#include "safetensors.h"

static const char *cli_path;
static char work_dir[256];

static const char *in_work(const char *name) {
    static char paths[64][600];
    static int next;
    char *p = paths[next++ % 64];
    snprintf(p, 600, "%s/%s", work_dir, name);
    return p;
}

/* Runs `moevk COMMAND ARGS`; its exit status, stderr in message. */
static int run_cli(const char *command_and_args, char *message, size_t size) {
    char command[8192];
    snprintf(command, sizeof command, "%s %s 2>%s", cli_path, command_and_args,
             in_work("stderr.txt"));
    int status = shell_run(command);
    read_text_file(in_work("stderr.txt"), message, size);
    return status;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* ---- A checkpoint: tensors written as safetensors files ---- */
typedef struct tensor {
    char name[160];
    moevk_dtype dtype;
    uint64_t rows, cols; /* rows 0: a vector */
    const void *data;
    int shard;
} tensor;

typedef struct checkpoint {
    tensor tensors[256];
    int count;
} checkpoint;

static uint64_t tensor_bytes(const tensor *t) {
    return (t->rows ? t->rows : 1) * t->cols * (t->dtype == MOEVK_DTYPE_F32 ? 4 : 2);
}

static void add(checkpoint *c, const char *name, moevk_dtype dtype, uint64_t rows, uint64_t cols,
                const void *data) {
    tensor *t = &c->tensors[c->count++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype, t->rows = rows, t->cols = cols, t->data = data, t->shard = 0;
}

/* The tensors of one shard as a safetensors file. */
static void write_shard(const checkpoint *c, int shard, const char *path) {
    static const char *const DTYPES[] = {"F32", "F16", "BF16"};
    char *header = calloc(1, 65536);
    size_t used = (size_t)snprintf(header, 65536, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t at = 0;
    for (int i = 0; i < c->count; ++i) {
        const tensor *t = &c->tensors[i];
        if (t->shard != shard) continue;
        char shape[64];
        if (t->rows)
            snprintf(shape, sizeof shape, "[%llu,%llu]", (unsigned long long)t->rows,
                     (unsigned long long)t->cols);
        else
            snprintf(shape, sizeof shape, "[%llu]", (unsigned long long)t->cols);
        used +=
            (size_t)snprintf(header + used, 65536 - used,
                             ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                             t->name, DTYPES[t->dtype], shape, (unsigned long long)at,
                             (unsigned long long)(at + tensor_bytes(t)));
        at += tensor_bytes(t);
    }
    used += (size_t)snprintf(header + used, 65536 - used, "}");
    FILE *f = fopen(path, "wb");
    uint64_t length = used;
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = (unsigned char)(length >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, used, f);
    for (int i = 0; i < c->count; ++i)
        if (c->tensors[i].shard == shard)
            fwrite(c->tensors[i].data, 1, tensor_bytes(&c->tensors[i]), f);
    fclose(f);
    free(header);
}

/* The shards' index: which file holds each tensor. */
static void write_index(const checkpoint *c, const char *path, const char *const *shard_names) {
    char *text = calloc(1, 65536);
    size_t used =
        (size_t)snprintf(text, 65536, "{\"metadata\":{\"total_size\":1},\"weight_map\":{");
    for (int i = 0; i < c->count; ++i)
        used += (size_t)snprintf(text + used, 65536 - used, "%s\"%s\":\"%s\"", i ? "," : "",
                                 c->tensors[i].name, shard_names[c->tensors[i].shard]);
    snprintf(text + used, 65536 - used, "}}");
    write_text(path, text);
    free(text);
}

/* ---- One model's layer: its shape, its weights (contiguous, as the reference takes them) ---- */
typedef struct model {
    const char *family; /* the names: "mixtral" or "qwen" */
    uint32_t E, k, d, f, fs;
    moevk_dtype weight_type, router_type;
    int shared_gate;
    void *gate, *up, *down, *shared_gate_w, *shared_up, *shared_down;
    void *router_stored;       /* W_g in router_type, as the file holds it */
    float *router;             /* W_g widened to f32 */
    float *shared_expert_gate; /* [d] */
    float *score_bias;         /* DeepSeek-V3's e_score_correction_bias [E], or NULL */
} model;

static void *random_matrix(uint64_t count, moevk_dtype type, float scale) {
    return random_weights(count, type, scale);
}

static void make_model(model *m) {
    uint64_t E = m->E, d = m->d, f = m->f, fs = m->fs;
    float s = 1.0f / sqrtf((float)d);
    m->gate = random_matrix(E * f * d, m->weight_type, s);
    m->up = random_matrix(E * f * d, m->weight_type, s);
    m->down = random_matrix(E * d * f, m->weight_type, 1.0f / sqrtf((float)f));
    m->router_stored = random_matrix(E * d, m->router_type, s);
    m->router = malloc(E * d * 4);
    for (uint64_t i = 0; i < E * d; ++i)
        m->router[i] = ref_load(m->router_stored, i, m->router_type);
    if (fs) {
        m->shared_gate_w = random_matrix(fs * d, m->weight_type, s);
        m->shared_up = random_matrix(fs * d, m->weight_type, s);
        m->shared_down = random_matrix(d * fs, m->weight_type, 1.0f / sqrtf((float)fs));
    }
    if (m->shared_gate) m->shared_expert_gate = random_matrix(d, MOEVK_DTYPE_F32, s);
}

static void free_model(model *m) {
    free(m->gate), free(m->up), free(m->down), free(m->router_stored), free(m->router);
    free(m->shared_gate_w), free(m->shared_up), free(m->shared_down), free(m->shared_expert_gate);
    free(m->score_bias);
}

/* The layer's tensors under prefix, by the family's names. */
static void add_layer(checkpoint *c, const model *m, const char *prefix) {
    int mixtral = !strcmp(m->family, "mixtral");
    uint64_t fd = (uint64_t)m->f * m->d * (m->weight_type == MOEVK_DTYPE_F32 ? 4 : 2);
    char name[160];
    snprintf(name, sizeof name, "%sgate.weight", prefix);
    add(c, name, m->router_type, m->E, m->d, m->router_stored);
    if (m->score_bias) {
        snprintf(name, sizeof name, "%sgate.e_score_correction_bias", prefix);
        add(c, name, MOEVK_DTYPE_F32, 0, m->E, m->score_bias);
    }
    const char *names[3] = {mixtral ? "w1" : "gate_proj", mixtral ? "w3" : "up_proj",
                            mixtral ? "w2" : "down_proj"};
    for (uint32_t e = 0; e < m->E; ++e) {
        const void *matrices[3] = {(const char *)m->gate + e * fd, (const char *)m->up + e * fd,
                                   (const char *)m->down + e * fd};
        for (int j = 0; j < 3; ++j) {
            snprintf(name, sizeof name, "%sexperts.%u.%s.weight", prefix, e, names[j]);
            add(c, name, m->weight_type, j == 2 ? m->d : m->f, j == 2 ? m->f : m->d, matrices[j]);
        }
    }
    if (!m->fs) return;
    const char *shared[3] = {"gate_proj", "up_proj", "down_proj"};
    const void *matrices[3] = {m->shared_gate_w, m->shared_up, m->shared_down};
    int deepseek = !strcmp(m->family, "deepseek");
    for (int j = 0; j < 3; ++j) {
        snprintf(name, sizeof name, "%s%s.%s.weight", prefix,
                 deepseek ? "shared_experts" : "shared_expert", shared[j]);
        add(c, name, m->weight_type, j == 2 ? m->d : m->fs, j == 2 ? m->fs : m->d, matrices[j]);
    }
    if (m->shared_gate) {
        snprintf(name, sizeof name, "%sshared_expert_gate.weight", prefix);
        add(c, name, MOEVK_DTYPE_F32, 1, m->d, m->shared_expert_gate);
    }
}

/* ---- The same layer as a GGUF file, by llama.cpp's names and ggml's dimension order ---- */
static uint32_t ggml_type_of(moevk_dtype type) {
    static const uint32_t GGML[] = {0, 1, 30, 8, 2, 12, 14, 6, 13}; /* moevk_dtype's order */
    return GGML[type];
}

/* Block `layer`'s MoE tensors into b: the experts stacked ([d, f, E] in ne), or one tensor per
 * expert (`per_expert`, as files converted before stacking hold them). */
static void add_gguf_layer(gguf_builder *b, const model *m, uint32_t layer, int per_expert) {
    uint64_t E = m->E, d = m->d, f = m->f, fs = m->fs;
    uint32_t wt = ggml_type_of(m->weight_type);
    moevk_dtype t = m->weight_type;
    char name[160];
    snprintf(name, sizeof name, "blk.%u.ffn_gate_inp.weight", layer);
    uint64_t router_ne[2] = {d, E};
    gguf_build_tensor(b, name, ggml_type_of(m->router_type), 2, router_ne, m->router_stored,
                      E * d * (m->router_type == MOEVK_DTYPE_F32 ? 4 : 2));
    const char *kinds[3] = {"gate", "up", "down"};
    const void *stacks[3] = {m->gate, m->up, m->down};
    for (int j = 0; j < 3; ++j) {
        uint64_t rows = j == 2 ? d : f, cols = j == 2 ? f : d;
        if (per_expert) {
            for (uint64_t e = 0; e < E; ++e) {
                snprintf(name, sizeof name, "blk.%u.ffn_%s.%llu.weight", layer, kinds[j],
                         (unsigned long long)e);
                uint64_t ne[2] = {cols, rows};
                gguf_build_tensor(b, name, wt, 2, ne,
                                  (const char *)stacks[j] + e * weights_bytes(t, rows * cols),
                                  weights_bytes(t, rows * cols));
            }
            continue;
        }
        snprintf(name, sizeof name, "blk.%u.ffn_%s_exps.weight", layer, kinds[j]);
        uint64_t ne[3] = {cols, rows, E};
        gguf_build_tensor(b, name, wt, 3, ne, stacks[j], weights_bytes(t, E * rows * cols));
    }
    if (m->score_bias) {
        snprintf(name, sizeof name, "blk.%u.exp_probs_b.bias", layer);
        gguf_build_tensor(b, name, 0, 1, &E, m->score_bias, E * 4);
    }
    if (!fs) return;
    const void *shared[3] = {m->shared_gate_w, m->shared_up, m->shared_down};
    for (int j = 0; j < 3; ++j) {
        snprintf(name, sizeof name, "blk.%u.ffn_%s_shexp.weight", layer, kinds[j]);
        uint64_t ne[2] = {j == 2 ? fs : d, j == 2 ? d : fs};
        gguf_build_tensor(b, name, wt, 2, ne, shared[j], weights_bytes(t, fs * d));
    }
    if (m->shared_gate) {
        snprintf(name, sizeof name, "blk.%u.ffn_gate_inp_shexp.weight", layer);
        gguf_build_tensor(b, name, 0, 1, &d, m->shared_expert_gate, d * 4);
    }
}

/* The metadata every family's file has: its architecture, sizes and expert counts. */
static void add_gguf_shape(gguf_builder *b, const char *arch, const model *m, uint32_t layers) {
    char key[128];
    gguf_build_string(b, "general.architecture", arch);
    gguf_build_string(b, "general.name", "moevk test model");
#define KEY(name) (snprintf(key, sizeof key, "%s." name, arch), key)
    gguf_build_u32(b, KEY("block_count"), layers);
    gguf_build_u32(b, KEY("embedding_length"), m->d);
    gguf_build_u32(b, KEY("expert_count"), m->E);
    gguf_build_u32(b, KEY("expert_used_count"), m->k);
    gguf_build_u32(
        b, !strcmp(arch, "llama") ? KEY("feed_forward_length") : KEY("expert_feed_forward_length"),
        m->f);
#undef KEY
}

/* moevk layer on the GGUF file gives the safetensors run's outputs, byte for byte. */
static void check_same_as(const char *gguf_out, const char *safetensors_out, int dropless) {
    const char *files[] = {"output.npy", "router_logits.npy", "expert_ids.npy", "weights.npy",
                           "slots.npy",  "counts.npy",        "offsets.npy"};
    for (int i = 0; i < (dropless ? 7 : 6); ++i) {
        char a[800], b[800];
        snprintf(a, sizeof a, "%s/%s", gguf_out, files[i]);
        snprintf(b, sizeof b, "%s/%s", safetensors_out, files[i]);
        CHECK(same_file_bytes(a, b), "%s from the GGUF file differs from the safetensors run's",
              files[i]);
    }
}

/* Hidden states [T, d] in type, written as .npy (bf16 as uint16 words, as numpy has no bf16). */
static void *write_hidden(const char *name, uint32_t T, uint32_t d, moevk_dtype type) {
    void *x = random_matrix((uint64_t)T * d, type, 1.0f);
    uint64_t shape[2] = {T, d};
    const char *descr = type == MOEVK_DTYPE_F32 ? "<f4" : type == MOEVK_DTYPE_F16 ? "<f2" : "<u2";
    npy_write(in_work(name), descr, 2, shape, x, type == MOEVK_DTYPE_F32 ? 4 : 2);
    return x;
}

/* The layer's outputs in out_dir against the reference for its own routing, and that routing
 * against `moevk route --logits router_logits.npy route_options`, byte for byte. */
static void check_layer_outputs(const model *m, const void *hidden, moevk_dtype hidden_type,
                                uint32_t T, const char *out_dir, const char *route_options,
                                int dropless) {
    char path[700], error[512], message[2048], args[4096];
    npy_array output, logits, ids, weights, slots;
    snprintf(path, sizeof path, "%s/output.npy", out_dir);
    CHECK(npy_read(path, &output, error, sizeof error), "%s", error);
    CHECK(output.type == NPY_F32 && output.ndim == 2 && output.shape[0] == T &&
              output.shape[1] == m->d,
          "output.npy: float32 [%u, %u] expected", T, m->d);
    snprintf(path, sizeof path, "%s/router_logits.npy", out_dir);
    CHECK(npy_read(path, &logits, error, sizeof error), "%s", error);
    CHECK(logits.shape[0] == T && logits.shape[1] == m->E, "router_logits.npy's shape");
    snprintf(path, sizeof path, "%s/expert_ids.npy", out_dir);
    CHECK(npy_read(path, &ids, error, sizeof error), "%s", error);
    snprintf(path, sizeof path, "%s/weights.npy", out_dir);
    CHECK(npy_read(path, &weights, error, sizeof error), "%s", error);
    snprintf(path, sizeof path, "%s/slots.npy", out_dir);
    CHECK(npy_read(path, &slots, error, sizeof error), "%s", error);
    snprintf(path, sizeof path, "%s/offsets.npy", out_dir);
    CHECK(file_exists(path) == dropless, "offsets.npy %s", dropless ? "missing" : "written");

    /* The logits: x W_g^T with W_g widened to f32, as the reference projects. */
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = m->E, info.top_k = m->k, info.hidden_size = m->d;
    info.hidden_type = hidden_type;
    float *want_logits = malloc((size_t)T * m->E * 4 + 4);
    ref_router_projection(&info, T, hidden, m->router, want_logits);
    CHECK(!memcmp(want_logits, logits.data, (size_t)T * m->E * 4),
          "router_logits.npy differs from the reference projection");
    free(want_logits);

    /* The output: the reference layer for the routing the command wrote. */
    double *want = malloc(sizeof(double) * T * m->d + 8),
           *magnitude = malloc(sizeof(double) * T * m->d + 8);
    ref_layer layer = {.router = &info,
                       .router_weights = m->router,
                       .experts = {m->d, m->f, MOEVK_ACTIVATION_SWIGLU, m->weight_type, m->gate,
                                   m->up, m->down, NULL, NULL, NULL},
                       .shared = {m->d, m->fs, MOEVK_ACTIVATION_SWIGLU, m->weight_type,
                                  m->shared_gate_w, m->shared_up, m->shared_down, NULL, NULL, NULL},
                       .shared_expert_gate = m->shared_expert_gate};
    ref_layer_output(&layer, T, hidden, ids.data, weights.data, slots.data, want, magnitude);
    double rounding = hidden_type == MOEVK_DTYPE_BF16  ? 1.0 / 256
                      : hidden_type == MOEVK_DTYPE_F16 ? 1.0 / 2048
                                                       : 0.0;
    int64_t bad = -1;
    const float *got = output.data;
    for (uint64_t i = 0; i < (uint64_t)T * m->d && bad < 0; ++i)
        if (!(fabs(got[i] - want[i]) <= 1e-5 * magnitude[i] + rounding * fabs(want[i]) + 1e-30))
            bad = (int64_t)i;
    CHECK(bad < 0, "output.npy [%lld] is %.9g, the reference %.9g", (long long)bad,
          bad >= 0 ? got[bad] : 0.0, bad >= 0 ? want[bad] : 0.0);
    free(want), free(magnitude);

    /* The routing: as moevk route routes the layer's logits. */
    snprintf(args, sizeof args, "route --logits %s/router_logits.npy %s --out %s/route", out_dir,
             route_options, out_dir);
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk route: %s", message);
    const char *files[] = {"expert_ids.npy", "weights.npy", "slots.npy", "counts.npy",
                           "offsets.npy"};
    for (int i = 0; i < (dropless ? 5 : 4); ++i) {
        char a[800], b[800];
        snprintf(a, sizeof a, "%s/%s", out_dir, files[i]);
        snprintf(b, sizeof b, "%s/route/%s", out_dir, files[i]);
        CHECK(same_file_bytes(a, b), "%s differs from moevk route's on the same logits", files[i]);
    }
    npy_free(&output), npy_free(&logits), npy_free(&ids), npy_free(&weights), npy_free(&slots);
}

static void make_folder(const char *name) { make_one_folder(in_work(name)); }

static const char MIXTRAL_CONFIG[] =
    "{\"architectures\":[\"MixtralForCausalLM\"],\"model_type\":\"mixtral\",\"hidden_size\":24,"
    "\"intermediate_size\":20,\"num_hidden_layers\":2,\"num_local_experts\":4,"
    "\"num_experts_per_tok\":2,\"hidden_act\":\"silu\",\"torch_dtype\":\"float32\"}";

/* Mixtral over two shards and their index, read from the folder: config.json beside them;
 * its top-2 softmax weights renormalised, dropless. */
static void test_mixtral_shards_from_the_folder(void) {
    model m = {.family = "mixtral",
               .E = 4,
               .k = 2,
               .d = 24,
               .f = 20,
               .weight_type = MOEVK_DTYPE_F32,
               .router_type = MOEVK_DTYPE_F32};
    make_model(&m);
    checkpoint c = {0};
    add_layer(&c, &m, "model.layers.1.block_sparse_moe.");
    for (int i = 0; i < c.count; ++i) c.tensors[i].shard = i % 2; /* each expert split over both */
    make_folder("mixtral");
    const char *shards[2] = {"model-00001-of-00002.safetensors",
                             "model-00002-of-00002.safetensors"};
    write_shard(&c, 0, in_work("mixtral/model-00001-of-00002.safetensors"));
    write_shard(&c, 1, in_work("mixtral/model-00002-of-00002.safetensors"));
    write_index(&c, in_work("mixtral/model.safetensors.index.json"), shards);
    write_text(in_work("mixtral/config.json"), MIXTRAL_CONFIG);
    uint32_t T = 37;
    void *x = write_hidden("mixtral_x.npy", T, m.d, MOEVK_DTYPE_F32);
    char args[2048], message[2048];
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
             in_work("mixtral"), in_work("mixtral_x.npy"), in_work("mixtral_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer: %s", message);
    check_layer_outputs(&m, x, MOEVK_DTYPE_F32, T, in_work("mixtral_out"),
                        "--k 2 --renorm --dropless", 1);
    /* The index named directly reads the same; a layer past the model's is refused. */
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
             in_work("mixtral/model.safetensors.index.json"), in_work("mixtral_x.npy"),
             in_work("mixtral_index_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, the index: %s", message);
    CHECK(
        same_file_bytes(in_work("mixtral_out/output.npy"), in_work("mixtral_index_out/output.npy")),
        "the index gave another output than the folder");
    snprintf(args, sizeof args, "layer --weights %s --layer 2 --hidden %s --out %s",
             in_work("mixtral"), in_work("mixtral_x.npy"), in_work("mixtral_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "the model has 2 layers"),
          "layer 2 of 2: %s", message);
    /* The same layer from GGUF files (llama, Mixtral's conversion): experts stacked, and one
     * tensor per expert as older conversions hold them. */
    for (int per_expert = 0; per_expert <= 1; ++per_expert) {
        gguf_builder b;
        gguf_build_begin(&b);
        add_gguf_shape(&b, "llama", &m, 2);
        add_gguf_layer(&b, &m, 1, per_expert);
        const char *file = per_expert ? "mixtral_per_expert.gguf" : "mixtral.gguf";
        CHECK(gguf_build_write(&b, in_work(file)), "could not write %s", file);
        snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
                 in_work(file), in_work("mixtral_x.npy"), in_work("mixtral_gguf_out"));
        CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, %s: %s", file, message);
        check_same_as(in_work("mixtral_gguf_out"), in_work("mixtral_out"), 1);
    }
    /* The experts in host memory (--host-weights, expert offload): the same bytes out. */
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s --host-weights",
             in_work("mixtral.gguf"), in_work("mixtral_x.npy"), in_work("mixtral_host_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer --host-weights: %s", message);
    check_same_as(in_work("mixtral_host_out"), in_work("mixtral_out"), 1);
    /* --token-scores: the scores of the layer's own router logits, as moevk route gives them. */
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s --token-scores",
             in_work("mixtral.gguf"), in_work("mixtral_x.npy"), in_work("mixtral_scores"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer --token-scores: %s", message);
    snprintf(
        args, sizeof args,
        "route --logits %s/router_logits.npy --k 2 --renorm --dropless --token-scores --out %s",
        in_work("mixtral_scores"), in_work("mixtral_scores_route"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk route --token-scores: %s", message);
    char scores_a[800], scores_b[800];
    snprintf(scores_a, sizeof scores_a, "%s/token_scores.npy", in_work("mixtral_scores"));
    snprintf(scores_b, sizeof scores_b, "%s/token_scores.npy", in_work("mixtral_scores_route"));
    CHECK(same_file_bytes(scores_a, scores_b),
          "the layer's token_scores.npy differs from moevk route's on its logits");
    /* Split in two as llama.cpp's gguf-split splits (the metadata in the first), named by
     * either split; a split missing is refused naming it. */
    gguf_builder first, second;
    gguf_build_begin(&first);
    gguf_build_begin(&second);
    add_gguf_shape(&first, "llama", &m, 2);
    add_gguf_layer(&first, &m, 1, 0);
    for (int i = 2; i < first.tensor_count; ++i)
        second.tensors[second.tensor_count++] = first.tensors[i];
    first.tensor_count = 2;
    uint16_t split_count = 2;
    for (uint16_t no = 0; no < 2; ++no) {
        gguf_builder *b = no ? &second : &first;
        gguf_build_raw(b, "split.no", 2, &no, 2);
        gguf_build_raw(b, "split.count", 2, &split_count, 2);
        gguf_build_i32(b, "split.tensors.count", 4);
    }
    CHECK(gguf_build_write(&first, in_work("mixtral-00001-of-00002.gguf")) &&
              gguf_build_write(&second, in_work("mixtral-00002-of-00002.gguf")),
          "could not write the splits");
    for (int no = 1; no <= 2; ++no) {
        char split[64];
        snprintf(split, sizeof split, "mixtral-%05d-of-00002.gguf", no);
        snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
                 in_work(split), in_work("mixtral_x.npy"), in_work("mixtral_split_out"));
        CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, %s: %s", split, message);
        check_same_as(in_work("mixtral_split_out"), in_work("mixtral_out"), 1);
    }
    rename(in_work("mixtral-00002-of-00002.gguf"), in_work("mixtral-00002-of-00002.moved"));
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
             in_work("mixtral-00001-of-00002.gguf"), in_work("mixtral_x.npy"),
             in_work("mixtral_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 &&
              strstr(message, "mixtral-00002-of-00002.gguf: cannot open it"),
          "a split missing: %s", message);
    free(x);
    free_model(&m);
}

/* Qwen2-MoE in one file with bf16 experts, a bf16 router (widened to f32), a gated shared
 * expert, bf16 hidden states; norm_topk_prob false; --config named; the options override the
 * config (a capacity factor: no longer dropless). */
static void test_qwen2_moe_bf16_with_gated_shared_expert(void) {
    model m = {.family = "qwen",
               .E = 6,
               .k = 3,
               .d = 16,
               .f = 12,
               .fs = 20,
               .shared_gate = 1,
               .weight_type = MOEVK_DTYPE_BF16,
               .router_type = MOEVK_DTYPE_BF16};
    make_model(&m);
    checkpoint c = {0};
    add_layer(&c, &m, "model.layers.0.mlp.");
    write_shard(&c, 0, in_work("qwen2.safetensors"));
    write_text(in_work("qwen2_config.json"),
               "{\"model_type\":\"qwen2_moe\",\"hidden_size\":16,\"num_hidden_layers\":4,"
               "\"num_experts\":6,\"num_experts_per_tok\":3,\"moe_intermediate_size\":12,"
               "\"shared_expert_intermediate_size\":20,\"norm_topk_prob\":false,"
               "\"decoder_sparse_step\":1,\"mlp_only_layers\":[2],\"hidden_act\":\"silu\"}");
    uint32_t T = 50;
    void *x = write_hidden("qwen2_x.npy", T, m.d, MOEVK_DTYPE_BF16);
    char args[2048], message[2048];
    snprintf(args, sizeof args, "layer --weights %s --config %s --layer 0 --hidden %s --out %s",
             in_work("qwen2.safetensors"), in_work("qwen2_config.json"), in_work("qwen2_x.npy"),
             in_work("qwen2_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer: %s", message);
    check_layer_outputs(&m, x, MOEVK_DTYPE_BF16, T, in_work("qwen2_out"), "--k 3 --dropless", 1);
    /* As a qwen2moe GGUF file without expert_shared_feed_forward_length (the shared tensors'
     * shape gives it) nor expert_weights_norm (qwen2moe: not renormalised). */
    gguf_builder b;
    gguf_build_begin(&b);
    add_gguf_shape(&b, "qwen2moe", &m, 4);
    add_gguf_layer(&b, &m, 0, 0);
    CHECK(gguf_build_write(&b, in_work("qwen2.gguf")), "could not write qwen2.gguf");
    snprintf(args, sizeof args, "layer --weights %s --layer 0 --hidden %s --out %s",
             in_work("qwen2.gguf"), in_work("qwen2_x.npy"), in_work("qwen2_gguf_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, GGUF: %s", message);
    check_same_as(in_work("qwen2_gguf_out"), in_work("qwen2_out"), 1);
    snprintf(args, sizeof args, "layer --weights %s --config %s --layer 0 --hidden %s --out %s",
             in_work("qwen2.gguf"), in_work("qwen2_config.json"), in_work("qwen2_x.npy"),
             in_work("qwen2_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "--config is not read"),
          "--config with a GGUF file: %s", message);
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
             in_work("qwen2.gguf"), in_work("qwen2_x.npy"), in_work("qwen2_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "no MoE block there"),
          "a layer the file has no MoE block for: %s", message);
    snprintf(args, sizeof args,
             "layer --weights %s --config %s --layer 0 --hidden %s --out %s --k 2 "
             "--capacity-factor 0.5 --renorm",
             in_work("qwen2.safetensors"), in_work("qwen2_config.json"), in_work("qwen2_x.npy"),
             in_work("qwen2_capacity"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer with options: %s", message);
    m.k = 2;
    check_layer_outputs(&m, x, MOEVK_DTYPE_BF16, T, in_work("qwen2_capacity"),
                        "--k 2 --capacity-factor 0.5 --renorm", 0);
    snprintf(args, sizeof args, "layer --weights %s --config %s --layer 2 --hidden %s --out %s",
             in_work("qwen2.safetensors"), in_work("qwen2_config.json"), in_work("qwen2_x.npy"),
             in_work("qwen2_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "dense layer"),
          "a dense layer: %s", message);
    free(x);
    free_model(&m);
}

/* --grad-output: the backward's files, every parameter's gradient under its tensor's name and
 * shape, bit for bit what the library gives in-process for the same layer and route (itself
 * held to the reference by test_layer_train); --loss joins them; a block format is refused. */
static void test_grad_output_writes_every_gradient(void) {
    model m = {.family = "qwen",
               .E = 4,
               .k = 2,
               .d = 16,
               .f = 12,
               .fs = 20,
               .shared_gate = 1,
               .weight_type = MOEVK_DTYPE_F32,
               .router_type = MOEVK_DTYPE_F32};
    make_model(&m);
    checkpoint c = {0};
    add_layer(&c, &m, "model.layers.0.mlp.");
    write_shard(&c, 0, in_work("train.safetensors"));
    write_text(in_work("train_config.json"),
               "{\"model_type\":\"qwen2_moe\",\"hidden_size\":16,\"num_hidden_layers\":1,"
               "\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":12,"
               "\"shared_expert_intermediate_size\":20,\"norm_topk_prob\":false,"
               "\"decoder_sparse_step\":1,\"hidden_act\":\"silu\"}");
    uint32_t T = 30;
    void *x = write_hidden("train_x.npy", T, m.d, MOEVK_DTYPE_F32);
    void *dy = write_hidden("train_dy.npy", T, m.d, MOEVK_DTYPE_F32);
    char args[2048], message[2048], error[512], path[700];
    snprintf(args, sizeof args,
             "layer --weights %s --config %s --layer 0 --hidden %s --out %s --grad-output %s "
             "--loss aux=0.01,z=0.001",
             in_work("train.safetensors"), in_work("train_config.json"), in_work("train_x.npy"),
             in_work("train_out"), in_work("train_dy.npy"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer --grad-output: %s", message);
    /* The same layer in-process: qwen2_moe's routing (softmax, top-2, no renormalisation,
     * dropless), trainable, the same weights, input and losses. */
    moevk_router_info router = route_case_info(MOEVK_MODE_TOKEN, m.E, m.k, T, m.d);
    router.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router;
    info.intermediate_size = m.f;
    info.shared_intermediate_size = m.fs;
    info.shared_gate = 1;
    info.trainable = 1;
    moevk_layer *layer = NULL;
    CHECK_OK(moevk_layer_create(test_context(), &info, &layer));
    const struct {
        moevk_layer_weight which;
        uint32_t experts;
        const void *data;
    } weights[] = {{MOEVK_WEIGHT_ROUTER, 1, m.router},
                   {MOEVK_WEIGHT_GATE, m.E, m.gate},
                   {MOEVK_WEIGHT_UP, m.E, m.up},
                   {MOEVK_WEIGHT_DOWN, m.E, m.down},
                   {MOEVK_WEIGHT_SHARED_GATE, 1, m.shared_gate_w},
                   {MOEVK_WEIGHT_SHARED_UP, 1, m.shared_up},
                   {MOEVK_WEIGHT_SHARED_DOWN, 1, m.shared_down},
                   {MOEVK_WEIGHT_SHARED_EXPERT_GATE, 1, m.shared_expert_gate}};
    for (size_t i = 0; i < sizeof weights / sizeof weights[0]; ++i)
        CHECK_OK(moevk_layer_set_weights(layer, weights[i].which, 0, weights[i].experts,
                                         moevk_host_tensor(weights[i].data)));
    float *out = malloc((size_t)T * m.d * 4), *grad_hidden = malloc((size_t)T * m.d * 4);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.hidden = moevk_host_tensor(x);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    CHECK_OK(moevk_layer_forward(layer, &input, &output));
    moevk_loss_info losses;
    moevk_loss_info_init(&losses);
    losses.aux_coef = 0.01f;
    losses.z_coef = 0.001f;
    moevk_layer_backward_info backward;
    moevk_layer_backward_info_init(&backward);
    backward.grad_output = moevk_host_tensor(dy);
    backward.grad_hidden = moevk_host_tensor(grad_hidden);
    backward.losses = &losses;
    CHECK_OK(moevk_layer_backward(layer, &backward));
    npy_array file;
    snprintf(path, sizeof path, "%s/grad_hidden.npy", in_work("train_out"));
    CHECK(npy_read(path, &file, error, sizeof error), "%s", error);
    CHECK(file.ndim == 2 && file.shape[0] == T && file.shape[1] == m.d &&
              !memcmp(file.data, grad_hidden, (size_t)T * m.d * 4),
          "grad_hidden.npy differs from the library's dL/dx");
    npy_free(&file);
    /* Every parameter's gradient under its tensor's name; grad_router.npy is W_g's. */
    safetensors_file grads;
    snprintf(path, sizeof path, "%s/grad_weights.safetensors", in_work("train_out"));
    CHECK(safetensors_open(path, &grads, error, sizeof error), "%s", error);
    CHECK((int)grads.count == c.count, "%zu gradients for %d parameters", grads.count, c.count);
    float *want = malloc((size_t)m.E * m.f * m.d * 4);
    for (int i = 0; i < c.count; ++i) {
        const tensor *param = &c.tensors[i];
        const model_tensor *g = safetensors_find(&grads, param->name);
        CHECK(g && g->dtype == MODEL_F32 &&
                  g->count == (param->rows ? param->rows : 1) * param->cols,
              "no f32 gradient of %s's shape", param->name);
        /* Which weight and expert the tensor is. */
        moevk_layer_weight which = MOEVK_WEIGHT_ROUTER;
        uint32_t expert = 0;
        const char *at = strstr(param->name, "experts.");
        const char *kinds[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int j = 0; j < 3; ++j)
            if (strstr(param->name, kinds[j]))
                which = (moevk_layer_weight)((strstr(param->name, "shared_expert.")
                                                  ? MOEVK_WEIGHT_SHARED_GATE
                                                  : MOEVK_WEIGHT_GATE) +
                                             j);
        if (at && !strstr(param->name, "shared_expert.")) expert = (uint32_t)atoi(at + 8);
        if (strstr(param->name, "shared_expert_gate")) which = MOEVK_WEIGHT_SHARED_EXPERT_GATE;
        CHECK_OK(moevk_layer_read_gradient(layer, which, expert, 1, moevk_host_tensor(want)));
        CHECK(!memcmp(g->data, want, g->count * 4), "%s's gradient differs from the library's",
              param->name);
    }
    snprintf(path, sizeof path, "%s/grad_router.npy", in_work("train_out"));
    CHECK(npy_read(path, &file, error, sizeof error), "%s", error);
    CHECK_OK(moevk_layer_read_gradient(layer, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(want)));
    CHECK(file.shape[0] == m.E && file.shape[1] == m.d &&
              !memcmp(file.data, want, (size_t)m.E * m.d * 4),
          "grad_router.npy differs from the library's dL/dW_g");
    npy_free(&file);
    /* The same block as a GGUF file: its experts stacked, so their gradients are too, under
     * llama.cpp's names [E, rows, cols], the same values as the checkpoint's per-expert ones. */
    gguf_builder b;
    gguf_build_begin(&b);
    add_gguf_shape(&b, "qwen2moe", &m, 1);
    add_gguf_layer(&b, &m, 0, 0);
    CHECK(gguf_build_write(&b, in_work("train.gguf")), "could not write train.gguf");
    snprintf(args, sizeof args,
             "layer --weights %s --layer 0 --hidden %s --out %s --grad-output %s "
             "--loss aux=0.01,z=0.001",
             in_work("train.gguf"), in_work("train_x.npy"), in_work("train_gguf_out"),
             in_work("train_dy.npy"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, GGUF: %s", message);
    safetensors_file stacked;
    snprintf(path, sizeof path, "%s/grad_weights.safetensors", in_work("train_gguf_out"));
    CHECK(safetensors_open(path, &stacked, error, sizeof error), "%s", error);
    const model_tensor *gate = safetensors_find(&stacked, "blk.0.ffn_gate_exps.weight");
    CHECK(gate && gate->ndim == 3 && gate->shape[0] == m.E && gate->shape[1] == m.f &&
              gate->shape[2] == m.d,
          "no stacked gradient blk.0.ffn_gate_exps.weight [%u, %u, %u]", m.E, m.f, m.d);
    for (uint32_t e = 0; e < m.E; ++e) {
        char name[160];
        snprintf(name, sizeof name, "model.layers.0.mlp.experts.%u.gate_proj.weight", e);
        const model_tensor *one = safetensors_find(&grads, name);
        CHECK(one && !memcmp((const float *)gate->data + (uint64_t)e * m.f * m.d, one->data,
                             one->count * 4),
              "expert %u's stacked gate gradient differs from the checkpoint run's", e);
    }
    safetensors_close(&stacked);
    safetensors_close(&grads);
    free(want), free(out), free(grad_hidden);
    moevk_layer_destroy(layer);
    /* --loss alone, and a DY of another shape, get one line and exit 2. */
    snprintf(args, sizeof args,
             "layer --weights %s --config %s --layer 0 --hidden %s --out %s --loss aux=0.01",
             in_work("train.safetensors"), in_work("train_config.json"), in_work("train_x.npy"),
             in_work("train_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "--grad-output"),
          "--loss without --grad-output: %s", message);
    snprintf(args, sizeof args,
             "layer --weights %s --config %s --layer 0 --hidden %s --out %s --grad-output %s",
             in_work("train.safetensors"), in_work("train_config.json"), in_work("train_x.npy"),
             in_work("train_bad"), in_work("train_x.npy") /* right */);
    CHECK(run_cli(args, message, sizeof message) == 0, "--grad-output of the right shape: %s",
          message);
    void *short_dy = write_hidden("train_short_dy.npy", T - 1, m.d, MOEVK_DTYPE_F32);
    snprintf(args, sizeof args,
             "layer --weights %s --config %s --layer 0 --hidden %s --out %s --grad-output %s",
             in_work("train.safetensors"), in_work("train_config.json"), in_work("train_x.npy"),
             in_work("train_bad"), in_work("train_short_dy.npy"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "float32 [30, 16]"),
          "a DY of another shape: %s", message);
    free(short_dy), free(x), free(dy);
    free_model(&m);
}

/* Qwen3-MoE with f16 experts under names of its own (--prefix), f16 hidden states, one token
 * holding a NaN: exit 3, that token's output row NaN and the others right. */
static void test_qwen3_moe_prefix_and_a_nan_token(void) {
    model m = {.family = "qwen",
               .E = 5,
               .k = 5,
               .d = 70,
               .f = 33,
               .weight_type = MOEVK_DTYPE_F16,
               .router_type = MOEVK_DTYPE_F32};
    make_model(&m);
    checkpoint c = {0};
    add_layer(&c, &m, "blocks.7.moe.");
    make_folder("qwen3");
    write_shard(&c, 0, in_work("qwen3/weights.safetensors"));
    write_text(in_work("qwen3/config.json"),
               "{\"model_type\":\"qwen3_moe\",\"hidden_size\":70,\"num_hidden_layers\":8,"
               "\"num_experts\":5,\"num_experts_per_tok\":5,\"moe_intermediate_size\":33,"
               "\"norm_topk_prob\":true,\"hidden_act\":\"silu\"}");
    uint32_t T = 1;
    void *x = write_hidden("qwen3_x.npy", T, m.d, MOEVK_DTYPE_F16);
    char args[2048], message[2048];
    snprintf(args, sizeof args, "layer --weights %s --prefix blocks.7.moe. --hidden %s --out %s",
             in_work("qwen3"), in_work("qwen3_x.npy"), in_work("qwen3_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer: %s", message);
    check_layer_outputs(&m, x, MOEVK_DTYPE_F16, T, in_work("qwen3_out"),
                        "--k 5 --renorm --dropless", 1);
    /* As a qwen3moe GGUF file (renormalised, as llama.cpp runs qwen3moe), block 7 of 8. */
    gguf_builder b;
    gguf_build_begin(&b);
    add_gguf_shape(&b, "qwen3moe", &m, 8);
    add_gguf_layer(&b, &m, 7, 0);
    CHECK(gguf_build_write(&b, in_work("qwen3.gguf")), "could not write qwen3.gguf");
    snprintf(args, sizeof args, "layer --weights %s --layer 7 --hidden %s --out %s",
             in_work("qwen3.gguf"), in_work("qwen3_x.npy"), in_work("qwen3_gguf_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, GGUF: %s", message);
    check_same_as(in_work("qwen3_gguf_out"), in_work("qwen3_out"), 1);
    free(x);
    T = 9;
    x = write_hidden("qwen3_nan.npy", T, m.d, MOEVK_DTYPE_F32);
    ((float *)x)[4 * m.d + 3] = NAN;
    uint64_t shape[2] = {T, m.d};
    npy_write(in_work("qwen3_nan.npy"), "<f4", 2, shape, x, 4);
    snprintf(args, sizeof args, "layer --weights %s --prefix blocks.7.moe. --hidden %s --out %s",
             in_work("qwen3"), in_work("qwen3_nan.npy"), in_work("qwen3_nan_out"));
    CHECK(run_cli(args, message, sizeof message) == 3 && strstr(message, "1 tokens"),
          "a NaN token: %s", message);
    npy_array output;
    char error[512];
    CHECK(npy_read(in_work("qwen3_nan_out/output.npy"), &output, error, sizeof error), "%s", error);
    const float *y = output.data;
    int rows_right = 1;
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t i = 0; i < m.d; ++i) rows_right &= (t == 4) == isnan(y[t * m.d + i]);
    npy_free(&output);
    CHECK(rows_right, "only token 4's output row is NaN");
    free(x);
    free_model(&m);
}

/* DeepSeek-V3: its selection bias on the sigmoid scores, groups, two shared experts as one FFN
 * of twice the width, routed_scaling_factor; the first layer dense (first_k_dense_replace). */
static void test_deepseek_v3_bias_on_scores_and_shared_experts(void) {
    model m = {.family = "deepseek",
               .E = 16,
               .k = 4,
               .d = 20,
               .f = 12,
               .fs = 24,
               .weight_type = MOEVK_DTYPE_BF16,
               .router_type = MOEVK_DTYPE_BF16};
    make_model(&m);
    m.score_bias = random_matrix(m.E, MOEVK_DTYPE_F32, 0.2f);
    checkpoint c = {0};
    add_layer(&c, &m, "model.layers.1.mlp.");
    make_folder("deepseek");
    write_shard(&c, 0, in_work("deepseek/model.safetensors"));
    write_text(in_work("deepseek/config.json"),
               "{\"model_type\":\"deepseek_v3\",\"hidden_size\":20,\"num_hidden_layers\":3,"
               "\"n_routed_experts\":16,\"num_experts_per_tok\":4,\"moe_intermediate_size\":12,"
               "\"n_shared_experts\":2,\"n_group\":4,\"topk_group\":2,\"norm_topk_prob\":true,"
               "\"routed_scaling_factor\":2.5,\"scoring_func\":\"sigmoid\","
               "\"topk_method\":\"noaux_tc\",\"first_k_dense_replace\":1,"
               "\"moe_layer_freq\":1,\"hidden_act\":\"silu\"}");
    uint64_t bias_shape[1] = {m.E};
    npy_write(in_work("deepseek_bias.npy"), "<f4", 1, bias_shape, m.score_bias, 4);
    uint32_t T = 200;
    void *x = write_hidden("deepseek_x.npy", T, m.d, MOEVK_DTYPE_F32);
    char args[2048], message[2048], route[1024];
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
             in_work("deepseek"), in_work("deepseek_x.npy"), in_work("deepseek_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer: %s", message);
    snprintf(route, sizeof route,
             "--k 4 --score sigmoid --renorm --scale 2.5 --groups 4 --topk-groups 2 --bias %s "
             "--bias-on-scores --dropless",
             in_work("deepseek_bias.npy"));
    check_layer_outputs(&m, x, MOEVK_DTYPE_F32, T, in_work("deepseek_out"), route, 1);
    /* As a deepseek2 GGUF file: sigmoid gating, exp_probs_b.bias, groups, two shared experts. */
    gguf_builder b;
    gguf_build_begin(&b);
    add_gguf_shape(&b, "deepseek2", &m, 3);
    gguf_build_u32(&b, "deepseek2.expert_shared_count", 2);
    gguf_build_u32(&b, "deepseek2.leading_dense_block_count", 1);
    gguf_build_f32(&b, "deepseek2.expert_weights_scale", 2.5f);
    gguf_build_bool(&b, "deepseek2.expert_weights_norm", 1);
    gguf_build_u32(&b, "deepseek2.expert_gating_func", 2);
    gguf_build_u32(&b, "deepseek2.expert_group_count", 4);
    gguf_build_u32(&b, "deepseek2.expert_group_used_count", 2);
    add_gguf_layer(&b, &m, 1, 0);
    CHECK(gguf_build_write(&b, in_work("deepseek.gguf")), "could not write deepseek.gguf");
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --out %s",
             in_work("deepseek.gguf"), in_work("deepseek_x.npy"), in_work("deepseek_gguf_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, GGUF: %s", message);
    check_same_as(in_work("deepseek_gguf_out"), in_work("deepseek_out"), 1);
    snprintf(args, sizeof args, "layer --weights %s --layer 0 --hidden %s --out %s",
             in_work("deepseek.gguf"), in_work("deepseek_x.npy"), in_work("deepseek_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "dense layer"),
          "a leading dense block of the GGUF file: %s", message);
    snprintf(args, sizeof args, "layer --weights %s --layer 0 --hidden %s --out %s",
             in_work("deepseek"), in_work("deepseek_x.npy"), in_work("deepseek_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "first_k_dense_replace 1"),
          "a dense layer: %s", message);
    snprintf(args, sizeof args, "layer --weights %s --layer 1 --hidden %s --bias %s --out %s",
             in_work("deepseek"), in_work("deepseek_x.npy"), in_work("deepseek_bias.npy"),
             in_work("deepseek_bad"));
    CHECK(run_cli(args, message, sizeof message) == 2 && strstr(message, "its own selection bias"),
          "--bias over the checkpoint's: %s", message);
    free(x);
    free_model(&m);
}

/* The model's FFN weights widened to f32, the routed and the shared down projections read as
 * their own types. */
static model widened(const model *m, moevk_dtype down_type, moevk_dtype shared_down_type) {
    model w = *m;
    uint64_t E = m->E, fd = (uint64_t)m->f * m->d, fsd = (uint64_t)m->fs * m->d;
    void **matrices[6] = {&w.gate, &w.up, &w.down, &w.shared_gate_w, &w.shared_up, &w.shared_down};
    uint64_t counts[6] = {E * fd, E * fd, E * fd, fsd, fsd, fsd};
    for (int i = 0; i < 6; ++i) {
        if (!*matrices[i]) continue;
        float *wide = malloc(counts[i] * 4 + 4);
        moevk_dtype type = i == 2 ? down_type : i == 5 ? shared_down_type : m->weight_type;
        for (uint64_t j = 0; j < counts[i]; ++j) wide[j] = ref_load(*matrices[i], j, type);
        *matrices[i] = wide;
    }
    w.weight_type = MOEVK_DTYPE_F32;
    return w;
}

static void free_widened(model *w) {
    free(w->gate), free(w->up), free(w->down), free(w->shared_gate_w), free(w->shared_up),
        free(w->shared_down);
}

/* GGUF files of the block formats, held to the reference: Q8_0 experts (qwen3moe) read as they
 * lie and computed on the device; Q4_K_M-like blocks (qwen2moe, a gated shared expert). */
static void test_gguf_block_formats(void) {
    model q8 = {.family = "qwen",
                .E = 4,
                .k = 2,
                .d = 64,
                .f = 96,
                .weight_type = MOEVK_DTYPE_Q8_0,
                .router_type = MOEVK_DTYPE_F32};
    make_model(&q8);
    gguf_builder b;
    gguf_build_begin(&b);
    add_gguf_shape(&b, "qwen3moe", &q8, 1);
    add_gguf_layer(&b, &q8, 0, 0);
    CHECK(gguf_build_write(&b, in_work("q8.gguf")), "could not write q8.gguf");
    uint32_t T = 45;
    void *x = write_hidden("q8_x.npy", T, q8.d, MOEVK_DTYPE_F32);
    char args[2048], message[2048];
    snprintf(args, sizeof args, "layer --weights %s --layer 0 --hidden %s --out %s",
             in_work("q8.gguf"), in_work("q8_x.npy"), in_work("q8_out"));
    CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, Q8_0: %s", message);
    check_layer_outputs(&q8, x, MOEVK_DTYPE_F32, T, in_work("q8_out"), "--k 2 --renorm --dropless",
                        1);
    free(x);
    free_model(&q8);

    /* Q4_K_M-like blocks: gate and up Q4_K, the routed down Q6_K; the shared down Q6_K too (the
     * down projections in a type of their own, on the device), or Q4_K (more types than that:
     * widened to f32 on the host). */
    for (int mixed_shared = 0; mixed_shared <= 1; ++mixed_shared) {
        model mixed = {.family = "qwen",
                       .E = 3,
                       .k = 2,
                       .d = 256,
                       .f = 256,
                       .fs = 256,
                       .shared_gate = 1,
                       .weight_type = MOEVK_DTYPE_Q4_K,
                       .router_type = MOEVK_DTYPE_F32};
        make_model(&mixed);
        uint64_t down_count = (uint64_t)mixed.E * mixed.d * mixed.f;
        uint64_t shared_count = (uint64_t)mixed.d * mixed.fs;
        moevk_dtype shared_down = mixed_shared ? MOEVK_DTYPE_Q4_K : MOEVK_DTYPE_Q6_K;
        free(mixed.down);
        mixed.down = random_matrix(down_count, MOEVK_DTYPE_Q6_K, 0.06f);
        if (!mixed_shared) {
            free(mixed.shared_down);
            mixed.shared_down = random_matrix(shared_count, MOEVK_DTYPE_Q6_K, 0.06f);
        }
        gguf_builder mb;
        gguf_build_begin(&mb);
        add_gguf_shape(&mb, "qwen2moe", &mixed, 1);
        add_gguf_layer(&mb, &mixed, 0, 0);
        mb.tensors[3].type = 14; /* ffn_down_exps: Q6_K, as Q4_K_M's recipe gives some layers */
        mb.tensors[3].bytes = weights_bytes(MOEVK_DTYPE_Q6_K, down_count);
        if (!mixed_shared) { /* ffn_down_shexp */
            mb.tensors[6].type = 14;
            mb.tensors[6].bytes = weights_bytes(MOEVK_DTYPE_Q6_K, shared_count);
        }
        CHECK(gguf_build_write(&mb, in_work("mixed.gguf")), "could not write mixed.gguf");
        T = 20;
        x = write_hidden("mixed_x.npy", T, mixed.d, MOEVK_DTYPE_F32);
        snprintf(args, sizeof args, "layer --weights %s --layer 0 --hidden %s --out %s",
                 in_work("mixed.gguf"), in_work("mixed_x.npy"), in_work("mixed_out"));
        CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer, Q4_K with Q6_K: %s",
              message);
        model wide = widened(&mixed, MOEVK_DTYPE_Q6_K, shared_down);
        check_layer_outputs(&wide, x, MOEVK_DTYPE_F32, T, in_work("mixed_out"), "--k 2 --dropless",
                            1);
        free_widened(&wide);
        free(x);
        free_model(&mixed);
    }
}

/* Every kind of bad input: one line naming the file, tensor or key, exit status 2. */
static void test_bad_inputs_get_one_line_and_exit_2(void) {
    model m = {.family = "mixtral",
               .E = 4,
               .k = 2,
               .d = 24,
               .f = 20,
               .weight_type = MOEVK_DTYPE_F32,
               .router_type = MOEVK_DTYPE_F32};
    make_model(&m);
    checkpoint c = {0};
    add_layer(&c, &m, "model.layers.0.block_sparse_moe.");
    make_folder("bad");
    write_shard(&c, 0, in_work("bad/model.safetensors"));
    tensor last = c.tensors[--c.count]; /* experts.3.w2 left out */
    write_shard(&c, 0, in_work("bad_short.safetensors"));
    c.tensors[c.count++] = last;
    c.tensors[1].rows = 10, c.tensors[1].cols = 48; /* the same bytes, the wrong shape */
    write_shard(&c, 0, in_work("bad_shape.safetensors"));
    write_text(in_work("bad/config.json"), MIXTRAL_CONFIG);
    write_text(in_work("bad_llama.json"), "{\"model_type\":\"llama\",\"hidden_size\":24}");
    write_text(in_work("bad_deepseek.json"),
               "{\"model_type\":\"deepseek_v3\",\"hidden_size\":24,\"num_hidden_layers\":2,"
               "\"n_routed_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":20,"
               "\"first_k_dense_replace\":0,\"n_group\":1}");
    write_text(in_work("bad_gelu.json"),
               "{\"model_type\":\"mixtral\",\"hidden_size\":24,\"intermediate_size\":20,"
               "\"num_hidden_layers\":2,\"num_local_experts\":4,\"num_experts_per_tok\":2,"
               "\"hidden_act\":\"gelu\"}");
    write_text(in_work("bad_k.json"),
               "{\"model_type\":\"mixtral\",\"hidden_size\":24,\"intermediate_size\":20,"
               "\"num_hidden_layers\":2,\"num_local_experts\":4,\"num_experts_per_tok\":2.5}");
    write_text(in_work("bad_index.json"), "{\"weight_map\":{\"a\":\"../elsewhere.safetensors\"}}");
    write_text(in_work("bad_twice.json"),
               "{\"weight_map\":{\"b\":\"x.safetensors\",\"a\":\"x.safetensors\","
               "\"b\":\"y.safetensors\"}}");
    /* GGUF files gone wrong: the metadata's width not the tensors', a file cut short, and
     * experts in a block format moevk does not compute with (d = 32 makes whole Q4_1 blocks). */
    gguf_builder gb;
    gguf_build_begin(&gb);
    m.f = 21;
    add_gguf_shape(&gb, "llama", &m, 1);
    m.f = 20;
    add_gguf_layer(&gb, &m, 0, 0);
    gguf_build_write(&gb, in_work("bad_width.gguf"));
    gguf_build_begin(&gb);
    add_gguf_shape(&gb, "llama", &m, 1);
    add_gguf_layer(&gb, &m, 0, 0);
    size_t gguf_size, data_start;
    unsigned char *gguf_bytes = gguf_build_finish(&gb, &gguf_size, &data_start);
    FILE *cut = fopen(in_work("bad_cut.gguf"), "wb");
    if (cut) {
        fwrite(gguf_bytes, 1, gguf_size - 100, cut);
        fclose(cut);
    }
    free(gguf_bytes);
    model q = {.family = "mixtral",
               .E = 2,
               .k = 1,
               .d = 32,
               .f = 8,
               .weight_type = MOEVK_DTYPE_F32,
               .router_type = MOEVK_DTYPE_F32};
    make_model(&q);
    gguf_build_begin(&gb);
    add_gguf_shape(&gb, "llama", &q, 1);
    add_gguf_layer(&gb, &q, 0, 0);
    static unsigned char q4_1_blocks[2 * 8 * 20]; /* ne [32, 8, 2]: 16 Q4_1 blocks of 20 bytes */
    gb.tensors[1].type = 3;
    gb.tensors[1].data = q4_1_blocks;
    gb.tensors[1].bytes = sizeof q4_1_blocks;
    gguf_build_write(&gb, in_work("bad_q4_1.gguf"));
    free_model(&q);
    void *x = write_hidden("bad_x.npy", 5, m.d, MOEVK_DTYPE_F32);
    void *x_wrong = write_hidden("bad_x23.npy", 5, 23, MOEVK_DTYPE_F32);
    free(x), free(x_wrong);
    char dir[600], hidden[600], config[600]; /* copies: in_work's buffers are reused */
    snprintf(dir, sizeof dir, "%s", in_work("bad"));
    snprintf(hidden, sizeof hidden, "%s", in_work("bad_x.npy"));
    snprintf(config, sizeof config, "%s", in_work("bad/config.json"));
    struct {
        char args[2048];
        const char *problem;
    } cases[32];
    int n = 0;
#define CASE(problem_, ...)                                                                        \
    do {                                                                                           \
        snprintf(cases[n].args, sizeof cases[n].args, __VA_ARGS__);                                \
        cases[n++].problem = problem_;                                                             \
    } while (0)
    CASE("no tensor 'model.layers.0.block_sparse_moe.experts.3.w2.weight'",
         "--weights %s --config %s --layer 0 --hidden %s", in_work("bad_short.safetensors"), config,
         hidden);
    CASE("'model.layers.0.block_sparse_moe.experts.0.w1.weight' must have shape [20, 24]",
         "--weights %s --config %s --layer 0 --hidden %s", in_work("bad_shape.safetensors"), config,
         hidden);
    CASE("model_type 'llama'", "--weights %s --config %s --layer 0 --hidden %s", dir,
         in_work("bad_llama.json"), hidden);
    CASE("no tensor 'model.layers.0.mlp.gate.weight'",
         "--weights %s --config %s --layer 0 --hidden %s", dir, in_work("bad_deepseek.json"),
         hidden);
    CASE("hidden_act 'gelu'", "--weights %s --config %s --layer 0 --hidden %s", dir,
         in_work("bad_gelu.json"), hidden);
    CASE("\"num_experts_per_tok\" must be a whole number",
         "--weights %s --config %s --layer 0 --hidden %s", dir, in_work("bad_k.json"), hidden);
    CASE("names no plain .safetensors file", "--weights %s --config %s --layer 0 --hidden %s",
         in_work("bad_index.json"), config, hidden);
    CASE("tensor 'b' is named twice", "--weights %s --config %s --layer 0 --hidden %s",
         in_work("bad_twice.json"), config, hidden);
    CASE("[T, 24] (hidden_size)", "--weights %s --layer 0 --hidden %s", dir,
         in_work("bad_x23.npy"));
    CASE("one of them", "--weights %s --layer 0 --prefix p. --hidden %s", dir, hidden);
    CASE("no config.json beside", "--weights %s --layer 0 --hidden %s",
         in_work("bad_short.safetensors"), hidden);
    CASE("no such file or folder", "--weights %s --layer 0 --hidden %s", in_work("nowhere"),
         hidden);
    CASE("--hidden is required", "--weights %s --layer 0", dir);
    CASE("--k must be an integer", "--weights %s --layer 0 --hidden %s --k 0", dir, hidden);
    CASE("--activation must be", "--weights %s --layer 0 --hidden %s --activation tanh", dir,
         hidden);
    CASE("'blk.0.ffn_gate_exps.weight' must have shape [4, 21, 24] (ggml ne [24, 21, 4])",
         "--weights %s --layer 0 --hidden %s", in_work("bad_width.gguf"), hidden);
    CASE("pass the end of the", "--weights %s --layer 0 --hidden %s", in_work("bad_cut.gguf"),
         hidden);
    CASE("'blk.0.ffn_gate_exps.weight' is Q4_1: moevk reads F32, F16, BF16, Q8_0, Q4_0, Q5_0",
         "--weights %s --layer 0 --hidden %s", in_work("bad_q4_1.gguf"), hidden);
    CASE("--exchange-chunks is an option of --expert-parallel",
         "--weights %s --layer 0 --hidden %s --exchange-chunks 2", dir, hidden);
    CASE("--exchange-chunks must be an integer",
         "--weights %s --layer 0 --hidden %s "
         "--expert-parallel --exchange-chunks 17",
         dir, hidden);
#undef CASE
    for (int i = 0; i < n; ++i) {
        char args[4096], message[2048];
        snprintf(args, sizeof args, "layer %.2040s --out %s", cases[i].args, in_work("bad_out"));
        int status = run_cli(args, message, sizeof message);
        char *newline = strchr(message, '\n');
        int one_line = newline && newline[1] == '\0';
        CHECK(status == 2 && one_line && strstr(message, cases[i].problem),
              "case %d (%s): exit %d, '%s'", i, cases[i].problem, status, message);
    }
    free_model(&m);
}

#ifdef MOEVK_TEST_MPI
/* Two stats.json texts line by line: the same, or the same key with numbers within 1e-6 (the
 * float sums, added in another order). */
static int same_stats(const char *a, const char *b) {
    while (*a && *b) {
        const char *end_a = strchr(a, '\n'), *end_b = strchr(b, '\n');
        size_t la = end_a ? (size_t)(end_a - a) : strlen(a),
               lb = end_b ? (size_t)(end_b - b) : strlen(b);
        if (la != lb || memcmp(a, b, la) != 0) {
            const char *colon_a = memchr(a, ':', la), *colon_b = memchr(b, ':', lb);
            if (!colon_a || !colon_b || colon_a - a != colon_b - b ||
                memcmp(a, b, (size_t)(colon_a - a)))
                return 0;
            double x = strtod(colon_a + 1, NULL), y = strtod(colon_b + 1, NULL);
            if (fabs(x - y) > 1e-6 * (1.0 + fabs(y))) return 0;
        }
        a += la + (end_a != NULL);
        b += lb + (end_b != NULL);
    }
    return *a == *b;
}

/* Within the rounding of another order of summation: each value against the largest. */
static int floats_close(const float *a, const float *b, size_t n) {
    float largest = 0;
    for (size_t i = 0; i < n; ++i) largest = fmaxf(largest, fabsf(b[i]));
    for (size_t i = 0; i < n; ++i)
        if (!(fabsf(a[i] - b[i]) <= 1e-5f * (fabsf(b[i]) + largest) + 1e-30f)) return 0;
    return 1;
}

/* The backward's files of `mpirun moevk layer --expert-parallel --grad-output` against one
 * process's: dL/dx and the routed experts' gradients bit for bit, the router's (each rank's
 * tokens' part, summed in rank order) within its rounding. */
static void check_expert_parallel_gradients(const char *one_dir, const char *many_dir) {
    char a[800], b[800], error[512];
    snprintf(a, sizeof a, "%s/grad_hidden.npy", one_dir);
    snprintf(b, sizeof b, "%s/grad_hidden.npy", many_dir);
    CHECK(same_file_bytes(a, b), "grad_hidden.npy differs from one process's");
    npy_array one, many;
    snprintf(a, sizeof a, "%s/grad_router.npy", one_dir);
    snprintf(b, sizeof b, "%s/grad_router.npy", many_dir);
    CHECK(npy_read(a, &one, error, sizeof error) && npy_read(b, &many, error, sizeof error), "%s",
          error);
    CHECK(one.count == many.count && floats_close(many.data, one.data, one.count),
          "grad_router.npy is not one process's within rounding");
    npy_free(&one);
    npy_free(&many);
    safetensors_file g1, g2;
    snprintf(a, sizeof a, "%s/grad_weights.safetensors", one_dir);
    snprintf(b, sizeof b, "%s/grad_weights.safetensors", many_dir);
    CHECK(safetensors_open(a, &g1, error, sizeof error), "%s", error);
    CHECK(safetensors_open(b, &g2, error, sizeof error), "%s", error);
    CHECK(g1.count == g2.count, "%zu gradients, one process %zu", g2.count, g1.count);
    for (size_t i = 0; i < g1.count; ++i) {
        const model_tensor *want = &g1.tensors[i], *got = safetensors_find(&g2, want->name);
        CHECK(got && got->count == want->count, "no gradient of %s", want->name);
        if (strstr(want->name, "experts."))
            CHECK(!memcmp(got->data, want->data, want->count * 4),
                  "%s's gradient differs from one process's", want->name);
        else
            CHECK(floats_close(got->data, want->data, want->count),
                  "%s's gradient is not one process's within rounding", want->name);
    }
    safetensors_close(&g1);
    safetensors_close(&g2);
}

/* `mpirun -np R moevk layer --expert-parallel`: rank 0 writes the files one process writes,
 * byte for byte (stats.json's float sums within 1e-6: summed in rank order), over 2 ranks
 * (the automatic overlap) and 4 (3 chunks), dropless, with a global capacity that drops and with
 * the SCORE policy; at
 * 2 ranks with --grad-output too, the backward's files as one process's. */
static void test_expert_parallel_writes_what_one_process_writes(void) {
    model m = {.family = "mixtral",
               .E = 8,
               .k = 2,
               .d = 24,
               .f = 20,
               .weight_type = MOEVK_DTYPE_F32,
               .router_type = MOEVK_DTYPE_F32};
    make_model(&m);
    checkpoint c = {0};
    add_layer(&c, &m, "model.layers.0.block_sparse_moe.");
    make_folder("ep");
    write_shard(&c, 0, in_work("ep/model.safetensors"));
    write_text(in_work("ep/config.json"),
               "{\"architectures\":[\"MixtralForCausalLM\"],\"model_type\":\"mixtral\","
               "\"hidden_size\":24,\"intermediate_size\":20,\"num_hidden_layers\":1,"
               "\"num_local_experts\":8,\"num_experts_per_tok\":2,\"hidden_act\":\"silu\"}");
    void *x = write_hidden("ep_x.npy", 45, m.d, MOEVK_DTYPE_F32);
    void *dy = write_hidden("ep_dy.npy", 45, m.d, MOEVK_DTYPE_F32);
    char grad[800];
    /* The importance and sequence losses too: the ranks split the tokens at whole sequences of
     * 5. */
    snprintf(grad, sizeof grad,
             "--grad-output %s --loss aux=0.01,z=0.001,importance=0.02,sequence=0.01 "
             "--sequence-length 5",
             in_work("ep_dy.npy"));
    const char *routings[] = {"--dropless", "--capacity-factor 1.0",
                              "--capacity-factor 0.8 --drop-policy score"};
    const char *files[] = {"output.npy", "router_logits.npy", "expert_ids.npy", "weights.npy",
                           "slots.npy",  "counts.npy",        "offsets.npy"};
    char args[2048], message[2048], command[4096];
    for (int i = 0; i < 3; ++i) {
        snprintf(args, sizeof args, "layer --weights %s --layer 0 --hidden %s --out %s %s %s",
                 in_work("ep"), in_work("ep_x.npy"), in_work("ep_one"), routings[i], grad);
        CHECK(run_cli(args, message, sizeof message) == 0, "moevk layer: %s", message);
        for (int ranks = 2; ranks <= 4; ranks += 2) {
            /* Open MPI as root (CI's containers); no leak report from its own allocations. */
            snprintf(command, sizeof command,
                     "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                     "ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 LP_NUM_THREADS=1 "
                     "mpirun --oversubscribe -np %d %s layer --expert-parallel --weights %s "
                     "--layer 0 --hidden %s --out %s %s %s 2>%s",
                     ranks, cli_path, in_work("ep"), in_work("ep_x.npy"), in_work("ep_ranks"),
                     routings[i], ranks == 4 ? "--exchange-chunks 3" : grad, in_work("stderr.txt"));
            int status = shell_run(command);
            read_text_file(in_work("stderr.txt"), message, sizeof message);
            CHECK(status == 0, "%d ranks, %s: %s", ranks, routings[i], message);
            for (int f = 0; f < (i == 0 ? 7 : 6); ++f) {
                char a[800], b[800];
                snprintf(a, sizeof a, "%s/%s", in_work("ep_one"), files[f]);
                snprintf(b, sizeof b, "%s/%s", in_work("ep_ranks"), files[f]);
                CHECK(same_file_bytes(a, b), "%d ranks, %s: %s differs from one process's", ranks,
                      routings[i], files[f]);
            }
            char one[8192], many[8192];
            snprintf(args, sizeof args, "%s/stats.json", in_work("ep_one"));
            read_text_file(args, one, sizeof one);
            snprintf(args, sizeof args, "%s/stats.json", in_work("ep_ranks"));
            read_text_file(args, many, sizeof many);
            CHECK(same_stats(one, many), "%d ranks, %s: stats.json\n%s\none process's:\n%s", ranks,
                  routings[i], many, one);
            if (ranks == 2) check_expert_parallel_gradients(in_work("ep_one"), in_work("ep_ranks"));
        }
    }
    free(x);
    free(dy);
    free_model(&m);
}
#endif

static const test_case TESTS[] = {
    TEST(mixtral_shards_from_the_folder),
    TEST(qwen2_moe_bf16_with_gated_shared_expert),
    TEST(qwen3_moe_prefix_and_a_nan_token),
    TEST(deepseek_v3_bias_on_scores_and_shared_experts),
    TEST(gguf_block_formats),
    TEST(grad_output_writes_every_gradient),
    TEST(bad_inputs_get_one_line_and_exit_2),
#ifdef MOEVK_TEST_MPI
    TEST(expert_parallel_writes_what_one_process_writes),
#endif
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_layer_cli PATH_TO_MOEVK [filter]\n0 passed, 1 failed\n");
        return 1;
    }
    cli_path = argv[1];
    if (make_work_folder(work_dir, sizeof work_dir, "moevk-test-layer-cli")) return 1;
    int status = test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc - 1, argv + 1);
    if (remove_work_folder(work_dir)) return 1;
    return status;
}
