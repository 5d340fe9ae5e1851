/* The GGUF reader (cli/gguf.c) and its metadata as a model config (cli/gguf_config.c): a
 * valid file's pairs of every type and its tensors by name, type, shape and bytes, versions 2
 * and 3, from memory and from disk; each way a file can be wrong refused with one line naming
 * the key or tensor and the problem; random damage never read past the bytes (the sanitizer
 * pass runs this too; tests/fuzz/fuzz_gguf.c goes further); each architecture's keys mapped
 * as the same model's config.json is. Host only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_config.h"
#include "gguf_write.h"
#include "harness.h"

#define GGML_F32 0
#define GGML_F16 1
#define GGML_Q8_0 8
#define GGML_Q4_K 12
#define GGML_BF16 30

static float matrix[6 * 4];
static uint16_t halves[10];
static unsigned char q8[2 * 34], q4k[144], iq4[18];

/* A file with a pair of each type and five tensors of five types. */
static void build_valid(gguf_builder *b, uint32_t version) {
    gguf_build_begin(b);
    b->version = version;
    gguf_build_string(b, "general.architecture", "llama");
    gguf_build_u32(b, "llama.block_count", 2);
    gguf_build_i32(b, "signed", -5);
    gguf_build_f32(b, "llama.rope.freq_base", 10000.0f);
    gguf_build_bool(b, "flag", 1);
    uint32_t list[3] = {7, 8, 9};
    gguf_build_u32_array(b, "numbers", list, 3);
    const char *words[2] = {"a", "bc"};
    gguf_build_string_array(b, "tokenizer.ggml.tokens", words, 2);
    for (int i = 0; i < 24; ++i) matrix[i] = (float)i;
    for (int i = 0; i < 10; ++i) halves[i] = (uint16_t)(0x3c00 + i);
    uint64_t ne_matrix[2] = {4, 6}, ne_halves[1] = {10}, ne_q8[2] = {32, 2}, ne_q4k[1] = {256};
    gguf_build_tensor(b, "blk.0.w", GGML_F32, 2, ne_matrix, matrix, sizeof matrix);
    gguf_build_tensor(b, "v", GGML_BF16, 1, ne_halves, halves, sizeof halves);
    gguf_build_tensor(b, "q", GGML_Q8_0, 2, ne_q8, q8, sizeof q8);
    uint64_t ne_iq4[1] = {32};
    gguf_build_tensor(b, "n", 20, 1, ne_iq4, iq4, sizeof iq4); /* IQ4_NL: read, not computed with */
    gguf_build_tensor(b, "k", GGML_Q4_K, 1, ne_q4k, q4k, sizeof q4k);
}

static void check_valid(const gguf_file *file, const unsigned char *bytes, size_t data_start) {
    const model_tensor *w = gguf_find_tensor(file, "blk.0.w");
    const model_tensor *v = gguf_find_tensor(file, "v");
    const model_tensor *q = gguf_find_tensor(file, "q");
    const model_tensor *k = gguf_find_tensor(file, "k");
    const model_tensor *n = gguf_find_tensor(file, "n");
    CHECK(w && v && q && k && n && !gguf_find_tensor(file, "blk.0") && file->tensor_count == 5,
          "tensors found by name");
    CHECK(n->dtype == MODEL_OTHER && !strcmp(n->type_name, "IQ4_NL") && n->bytes == 18,
          "IQ4_NL: a type moevk reads past but does not compute with");
    CHECK(w->dtype == MODEL_F32 && w->ndim == 2 && w->shape[0] == 6 && w->shape[1] == 4 &&
              w->count == 24 && w->bytes == 96 && w->data == bytes + data_start &&
              !memcmp(w->data, matrix, sizeof matrix),
          "the f32 matrix: shape [6, 4] from ne [4, 6], its bytes at the data's start");
    CHECK(v->dtype == MODEL_BF16 && v->bytes == 20 && v->data == bytes + data_start + 96,
          "the bf16 vector at the next aligned offset");
    CHECK(q->dtype == MODEL_Q8_0 && !strcmp(q->type_name, "Q8_0") && q->bytes == 68 &&
              q->shape[0] == 2 && q->shape[1] == 32,
          "Q8_0: two blocks of 34 bytes");
    CHECK(k->dtype == MODEL_Q4_K && !strcmp(k->type_name, "Q4_K") && k->bytes == 144,
          "Q4_K: one block of 144 bytes");
    char text[64];
    uint64_t u = 0;
    double f = 0;
    int flag = 0;
    const gguf_kv *arch = gguf_find_key(file, "general.architecture");
    CHECK(arch && gguf_kv_string(arch, text, sizeof text) && !strcmp(text, "llama"), "a string");
    CHECK(gguf_kv_uint(gguf_find_key(file, "llama.block_count"), &u) && u == 2, "a uint32");
    CHECK(!gguf_kv_uint(gguf_find_key(file, "signed"), &u), "a negative int32 is no uint");
    CHECK(gguf_kv_float(gguf_find_key(file, "llama.rope.freq_base"), &f) && f == 10000.0,
          "a float");
    CHECK(gguf_kv_bool(gguf_find_key(file, "flag"), &flag) && flag == 1, "a bool");
    const gguf_kv *numbers = gguf_find_key(file, "numbers");
    CHECK(numbers && numbers->type == GGUF_ARRAY && numbers->element == GGUF_UINT32 &&
              numbers->length == 3,
          "an array of uint32");
    const gguf_kv *tokens = gguf_find_key(file, "tokenizer.ggml.tokens");
    CHECK(tokens && tokens->element == GGUF_STRING && tokens->length == 2, "an array of strings");
    CHECK(file->alignment == 32 && !gguf_find_key(file, "missing"), "alignment 32 by default");
}

static void test_a_valid_file_is_read(void) {
    for (uint32_t version = 2; version <= 3; ++version) {
        gguf_builder b;
        build_valid(&b, version);
        size_t size, data_start;
        unsigned char *bytes = gguf_build_finish(&b, &size, &data_start);
        gguf_file file;
        char error[256] = "";
        int ok = gguf_parse(bytes, size, &file, error, sizeof error);
        CHECK(ok, "version %u refused: %s", version, error);
        check_valid(&file, bytes, data_start);
        CHECK(file.version == version, "the version");
        gguf_close(&file);
        free(bytes);
    }
}

static void test_a_file_on_disk_is_mapped_and_its_alignment_kept(void) {
    gguf_builder b;
    build_valid(&b, 3);
    b.alignment = 64;
    gguf_build_u32(&b, "general.alignment", 64);
    char path[512];
    snprintf(path, sizeof path, "%s/moevk_test_%u.gguf",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", rng_u32());
    CHECK(gguf_build_write(&b, path), "could not write %s", path);
    gguf_file file;
    char error[600] = "";
    int ok = gguf_open(path, &file, error, sizeof error);
    remove(path);
    CHECK(ok, "refused: %s", error);
    const model_tensor *v = gguf_find_tensor(&file, "v");
    CHECK(file.alignment == 64 && v &&
              ((const unsigned char *)v->data - (const unsigned char *)file.mapping) % 64 == 0,
          "general.alignment 64 kept");
    gguf_close(&file);
    CHECK(!gguf_open(path, &file, error, sizeof error) && strstr(error, path),
          "a missing file names its path: %s", error);
}

/* A broken variant of the valid file: the builder after `edit`, or the bytes after `poke`. */
typedef struct broken {
    const char *name, *message;
} broken;

static int refused_with(unsigned char *bytes, size_t size, const char *message, char *error,
                        size_t error_size) {
    gguf_file file;
    error[0] = 0;
    if (gguf_parse(bytes, size, &file, error, error_size)) {
        gguf_close(&file);
        snprintf(error, error_size, "(taken)");
        return 0;
    }
    return strstr(error, message) != NULL && !strchr(error, '\n');
}

static void test_bad_metadata_is_refused_by_key(void) {
    static const uint64_t huge = (uint64_t)1 << 40;
    char error[256];
    size_t size, data_start;
    unsigned char *bytes;
    gguf_builder b;

    build_valid(&b, 3);
    gguf_build_u32(&b, "llama.block_count", 3);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "key 'llama.block_count' is given twice", error, sizeof error),
          "a key twice: %s", error);
    free(bytes);

    build_valid(&b, 3);
    gguf_build_raw(&b, "odd", 13, "", 0);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "key 'odd': value type 13", error, sizeof error),
          "a value type past FLOAT64: %s", error);
    free(bytes);

    build_valid(&b, 3);
    unsigned char nested[12] = {9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    gguf_build_raw(&b, "nested", 9, nested, sizeof nested);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "key 'nested': arrays of type 9", error, sizeof error),
          "an array of arrays: %s", error);
    free(bytes);

    build_valid(&b, 3);
    unsigned char long_array[12] = {4, 0, 0, 0};
    memcpy(long_array + 4, &huge, 8);
    gguf_build_raw(&b, "long", 9, long_array, sizeof long_array);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "key 'long': 1099511627776 elements", error, sizeof error),
          "an array longer than the file: %s", error);
    free(bytes);

    build_valid(&b, 3);
    gguf_build_raw(&b, "long_string", 8, &huge, 8);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "long_string: a string of 1099511627776 bytes", error,
                       sizeof error),
          "a string longer than the file: %s", error);
    free(bytes);

    build_valid(&b, 3);
    unsigned char two = 2;
    gguf_build_raw(&b, "maybe", 7, &two, 1);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "key 'maybe': a bool of 2", error, sizeof error),
          "a bool of 2: %s", error);
    free(bytes);

    build_valid(&b, 3);
    gguf_build_u32(&b, "general.alignment", 48);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "general.alignment must be a uint32 power of two", error,
                       sizeof error),
          "an alignment of 48: %s", error);
    free(bytes);

    /* The header's counts and the version. */
    build_valid(&b, 3);
    bytes = gguf_build_finish(&b, &size, &data_start);
    memcpy(bytes + 16, &huge, 8);
    CHECK(refused_with(bytes, size, "1099511627776 metadata pairs", error, sizeof error),
          "a metadata count past the file: %s", error);
    uint64_t seven = 7;
    memcpy(bytes + 16, &seven, 8);
    memcpy(bytes + 8, &huge, 8);
    CHECK(refused_with(bytes, size, "", error, sizeof error) && error[0],
          "a tensor count past the file: %s", error);
    uint32_t version = 1;
    memcpy(bytes + 4, &version, 4);
    CHECK(refused_with(bytes, size, "GGUF version 1", error, sizeof error), "version 1: %s", error);
    version = 0x03000000u;
    memcpy(bytes + 4, &version, 4);
    CHECK(refused_with(bytes, size, "version 50331648", error, sizeof error),
          "a big-endian file: %s", error);
    bytes[0] = 'X';
    CHECK(refused_with(bytes, size, "not a GGUF file", error, sizeof error), "no magic: %s", error);
    CHECK(refused_with(bytes, 3, "truncated", error, sizeof error), "3 bytes: %s", error);
    free(bytes);
}

static unsigned char *find_bytes(unsigned char *bytes, size_t size, const char *pattern,
                                 size_t length) {
    for (size_t i = 0; i + length <= size; ++i)
        if (!memcmp(bytes + i, pattern, length)) return bytes + i;
    return NULL;
}

static void test_bad_tensors_are_refused_by_name(void) {
    char error[256];
    size_t size, data_start;
    unsigned char *bytes;
    gguf_builder b;
    static float data[64];

    build_valid(&b, 3);
    uint64_t absurd[2] = {(uint64_t)1 << 40, (uint64_t)1 << 40};
    gguf_build_tensor(&b, "absurd", GGML_F32, 2, absurd, data, 4);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "tensor 'absurd': dimension 1", error, sizeof error),
          "an absurd dimension: %s", error);
    free(bytes);

    build_valid(&b, 3);
    uint64_t ne[1] = {4};
    gguf_build_tensor(&b, "odd_type", 31, 1, ne, data, 16);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "tensor 'odd_type': ggml type 31", error, sizeof error),
          "a wrong type: %s", error);
    free(bytes);

    build_valid(&b, 3);
    uint64_t part_block[1] = {40};
    gguf_build_tensor(&b, "part", GGML_Q8_0, 1, part_block, data, 68);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "tensor 'part': its rows of 40 are not whole Q8_0 blocks",
                       error, sizeof error),
          "rows of part blocks: %s", error);
    free(bytes);

    build_valid(&b, 3);
    uint64_t five[5] = {1, 1, 1, 1, 1};
    gguf_build_tensor(&b, "five", GGML_F32, 5, five, data, 4);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "tensor 'five': 5 dimensions", error, sizeof error),
          "five dimensions: %s", error);
    free(bytes);

    build_valid(&b, 3);
    gguf_build_tensor(&b, "v", GGML_F32, 1, ne, data, 16);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size, "tensor 'v' is named twice", error, sizeof error),
          "a name twice: %s", error);
    free(bytes);

    /* The last tensor's data cut off: a truncated download. */
    build_valid(&b, 3);
    bytes = gguf_build_finish(&b, &size, &data_start);
    CHECK(refused_with(bytes, size - 150, "tensor 'k': 144 bytes at offset", error, sizeof error),
          "a truncated tensor: %s", error);
    free(bytes);

    /* Offsets patched in place: the second tensor's onto the first's, then misaligned. */
    build_valid(&b, 3);
    bytes = gguf_build_finish(&b, &size, &data_start);
    unsigned char *v_name = find_bytes(bytes, data_start, "\x01\0\0\0\0\0\0\0v", 9);
    CHECK(v_name, "the tensor info of 'v' is in the file");
    unsigned char *v_offset = v_name + 9 + 4 + 8 + 4;
    uint64_t offset = 64;
    memcpy(v_offset, &offset, 8);
    CHECK(refused_with(bytes, size, "tensors 'blk.0.w' and 'v' overlap", error, sizeof error),
          "overlapping tensors: %s", error);
    offset = 100;
    memcpy(v_offset, &offset, 8);
    CHECK(refused_with(bytes, size, "tensor 'v': offset 100 is not a multiple of 32", error,
                       sizeof error),
          "a misaligned offset: %s", error);
    free(bytes);
}

/* Random damage to a valid file: taken or refused with a message, never read past the bytes. */
static void test_damaged_files_are_refused_cleanly(void) {
    gguf_builder b;
    build_valid(&b, 3);
    size_t size, data_start;
    unsigned char *valid = gguf_build_finish(&b, &size, &data_start);
    int refused = 0, silent = 0;
    for (int round = 0; round < 5000; ++round) {
        size_t cut = size - rng_u32() % 64;
        unsigned char *bytes = malloc(cut);
        if (!bytes) break;
        memcpy(bytes, valid, cut);
        for (int flips = 1 + (int)(rng_u32() % 4); flips > 0; --flips)
            bytes[rng_u32() % data_start] = (unsigned char)rng_u32(); /* the header's bytes */
        gguf_file file;
        char error[256] = "";
        if (gguf_parse(bytes, cut, &file, error, sizeof error)) {
            for (size_t i = 0; i < file.tensor_count; ++i) /* every byte handed out is there */
                if (file.tensors[i].bytes)
                    error[0] ^=
                        ((const unsigned char *)file.tensors[i].data)[file.tensors[i].bytes - 1];
            gguf_close(&file);
        } else if (error[0]) {
            ++refused;
        } else {
            ++silent;
        }
        free(bytes);
    }
    free(valid);
    CHECK(silent == 0, "%d damaged files refused without a message", silent);
    CHECK(refused > 0, "no damaged file was refused");
}

/* ---- The metadata as a config ---- */
static int config_of(void (*fill)(gguf_builder *), model_config *c, char *error, size_t size) {
    gguf_builder b;
    gguf_build_begin(&b);
    fill(&b);
    size_t bytes_size, data_start;
    unsigned char *bytes = gguf_build_finish(&b, &bytes_size, &data_start);
    gguf_file file;
    int ok = gguf_parse(bytes, bytes_size, &file, error, size);
    if (ok) {
        ok = gguf_model_config(&file, c, error, size);
        gguf_close(&file);
    }
    free(bytes);
    return ok;
}

static void mixtral(gguf_builder *b) {
    gguf_build_string(b, "general.architecture", "llama");
    gguf_build_u32(b, "llama.block_count", 32);
    gguf_build_u32(b, "llama.embedding_length", 4096);
    gguf_build_u32(b, "llama.feed_forward_length", 14336);
    gguf_build_u32(b, "llama.expert_count", 8);
    gguf_build_u32(b, "llama.expert_used_count", 2);
}

static void qwen2moe(gguf_builder *b) {
    gguf_build_string(b, "general.architecture", "qwen2moe");
    gguf_build_u32(b, "qwen2moe.block_count", 24);
    gguf_build_u32(b, "qwen2moe.embedding_length", 2048);
    gguf_build_u32(b, "qwen2moe.expert_feed_forward_length", 1408);
    gguf_build_u32(b, "qwen2moe.expert_shared_feed_forward_length", 5632);
    gguf_build_u32(b, "qwen2moe.expert_count", 60);
    gguf_build_u32(b, "qwen2moe.expert_used_count", 4);
}

static void qwen3moe_without_norm(gguf_builder *b) {
    gguf_build_string(b, "general.architecture", "qwen3moe");
    gguf_build_u32(b, "qwen3moe.block_count", 48);
    gguf_build_u32(b, "qwen3moe.embedding_length", 2048);
    gguf_build_u32(b, "qwen3moe.expert_feed_forward_length", 768);
    gguf_build_u32(b, "qwen3moe.expert_count", 128);
    gguf_build_u32(b, "qwen3moe.expert_used_count", 8);
    gguf_build_bool(b, "qwen3moe.expert_weights_norm", 0);
}

static void deepseek_v3(gguf_builder *b) {
    gguf_build_string(b, "general.architecture", "deepseek2");
    gguf_build_u32(b, "deepseek2.block_count", 61);
    gguf_build_u32(b, "deepseek2.embedding_length", 7168);
    gguf_build_u32(b, "deepseek2.expert_feed_forward_length", 2048);
    gguf_build_u32(b, "deepseek2.expert_count", 256);
    gguf_build_u32(b, "deepseek2.expert_used_count", 8);
    gguf_build_u32(b, "deepseek2.expert_shared_count", 1);
    gguf_build_u32(b, "deepseek2.leading_dense_block_count", 3);
    gguf_build_f32(b, "deepseek2.expert_weights_scale", 2.5f);
    gguf_build_bool(b, "deepseek2.expert_weights_norm", 1);
    gguf_build_u32(b, "deepseek2.expert_gating_func", 2);
    gguf_build_u32(b, "deepseek2.expert_group_count", 8);
    gguf_build_u32(b, "deepseek2.expert_group_used_count", 4);
}

static void deepseek_v2_groups(gguf_builder *b) {
    gguf_build_string(b, "general.architecture", "deepseek2");
    gguf_build_u32(b, "deepseek2.block_count", 60);
    gguf_build_u32(b, "deepseek2.embedding_length", 5120);
    gguf_build_u32(b, "deepseek2.expert_feed_forward_length", 1536);
    gguf_build_u32(b, "deepseek2.expert_count", 160);
    gguf_build_u32(b, "deepseek2.expert_used_count", 6);
    gguf_build_u32(b, "deepseek2.expert_group_count", 8);
    gguf_build_u32(b, "deepseek2.expert_group_used_count", 3);
}

static void dense_llama(gguf_builder *b) {
    gguf_build_string(b, "general.architecture", "llama");
    gguf_build_u32(b, "llama.block_count", 32);
    gguf_build_u32(b, "llama.embedding_length", 4096);
    gguf_build_u32(b, "llama.feed_forward_length", 11008);
}

static void gemma(gguf_builder *b) { gguf_build_string(b, "general.architecture", "gemma"); }

static void k_past_e(gguf_builder *b) {
    gguf_build_string(b, "general.architecture", "qwen3moe");
    gguf_build_u32(b, "qwen3moe.block_count", 2);
    gguf_build_u32(b, "qwen3moe.embedding_length", 16);
    gguf_build_u32(b, "qwen3moe.expert_feed_forward_length", 8);
    gguf_build_u32(b, "qwen3moe.expert_count", 4);
    gguf_build_u32(b, "qwen3moe.expert_used_count", 5);
}

static void test_each_architecture_maps_as_its_config_json(void) {
    model_config c;
    char error[256] = "";
    CHECK(config_of(mixtral, &c, error, sizeof error), "mixtral: %s", error);
    CHECK(c.family == MODEL_MIXTRAL && c.num_experts == 8 && c.top_k == 2 &&
              c.hidden_size == 4096 && c.intermediate_size == 14336 && c.renormalize &&
              !c.sigmoid && c.gated && c.num_layers == 32 && c.shared_intermediate_size == 0,
          "llama (Mixtral): the experts' width from feed_forward_length, renormalised");
    CHECK(config_of(qwen2moe, &c, error, sizeof error), "qwen2moe: %s", error);
    CHECK(c.family == MODEL_QWEN2_MOE && c.intermediate_size == 1408 &&
              c.shared_intermediate_size == 5632 && c.shared_gate && !c.renormalize,
          "qwen2moe: a gated shared expert, not renormalised");
    CHECK(config_of(qwen3moe_without_norm, &c, error, sizeof error), "qwen3moe: %s", error);
    CHECK(c.family == MODEL_QWEN3_MOE && c.num_experts == 128 && !c.renormalize,
          "qwen3moe: expert_weights_norm false read over llama.cpp's default");
    CHECK(config_of(deepseek_v3, &c, error, sizeof error), "deepseek2: %s", error);
    CHECK(c.family == MODEL_DEEPSEEK_V3 && c.sigmoid && c.renormalize &&
              c.routed_scaling_factor == 2.5f && c.num_groups == 8 && c.topk_groups == 4 &&
              c.shared_intermediate_size == 2048 && c.first_k_dense == 3,
          "deepseek2 (V3): sigmoid, groups, scale, one shared expert, three dense layers");
    char why[256];
    CHECK(!model_config_moe_layer(&c, 2, why, sizeof why) && strstr(why, "dense layer") &&
              model_config_moe_layer(&c, 3, why, sizeof why),
          "deepseek2's leading dense blocks are dense layers");
    CHECK(!config_of(deepseek_v2_groups, &c, error, sizeof error) &&
              strstr(error, "softmax routing in 8 groups"),
          "DeepSeek-V2's group-limited greedy refused: %s", error);
    CHECK(!config_of(dense_llama, &c, error, sizeof error) && strstr(error, "not an MoE model"),
          "a dense llama refused: %s", error);
    CHECK(!config_of(gemma, &c, error, sizeof error) && strstr(error, "architecture 'gemma'"),
          "another architecture refused: %s", error);
    CHECK(!config_of(k_past_e, &c, error, sizeof error) && strstr(error, "expert_used_count"),
          "k past E refused: %s", error);
}

static const test_case TESTS[] = {
    TEST(a_valid_file_is_read),
    TEST(a_file_on_disk_is_mapped_and_its_alignment_kept),
    TEST(bad_metadata_is_refused_by_key),
    TEST(bad_tensors_are_refused_by_name),
    TEST(damaged_files_are_refused_cleanly),
    TEST(each_architecture_maps_as_its_config_json),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
