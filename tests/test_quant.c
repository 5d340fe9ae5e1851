/* ggml's block formats in the reference (reference/quant.c) against blocks made by hand: each
 * block is packed here the way ggml's quantize_row_*_ref packs its integers (written out
 * below), from values chosen to reach every nibble and sign position and both halves of the K
 * formats' 6-bit scale and min packing, and every weight must come back as the value worked out
 * from the format's description: d q (Q8_0), d (q - 8) (Q4_0), d (q - 16) (Q5_0),
 * d sc q - dmin m (Q4_K, Q5_K), d sc (q - 32) (Q6_K). The shaders are held to this reference by
 * test_layer. Host only. */
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"

static void put_half(uint8_t *at, uint16_t bits) {
    at[0] = (uint8_t)bits;
    at[1] = (uint8_t)(bits >> 8);
}

#define HALF_0_5 0x3800   /* 0.5 */
#define HALF_1 0x3C00     /* 1.0 */
#define HALF_2 0x4000     /* 2.0 */
#define HALF_0_25 0x3400  /* 0.25 */
#define HALF_NEG_3 0xC200 /* -3.0 */

static void test_q8_0_is_d_times_each_signed_byte(void) {
    uint8_t block[2 * 34];
    int8_t q[64];
    for (int j = 0; j < 64; ++j) q[j] = (int8_t)(uint8_t)((j * 37 + 11) & 0xFF);
    q[0] = -128, q[1] = 127;
    put_half(block, HALF_0_5);
    put_half(block + 34, HALF_NEG_3);
    for (int j = 0; j < 32; ++j) block[2 + j] = (uint8_t)q[j], block[36 + j] = (uint8_t)q[32 + j];
    int bad = -1;
    for (int j = 0; j < 64 && bad < 0; ++j) {
        float want = (j < 32 ? 0.5f : -3.0f) * (float)q[j];
        if (ref_quant_weight(block, (uint64_t)j, MOEVK_DTYPE_Q8_0) != want) bad = j;
    }
    CHECK(bad < 0, "Q8_0 weight %d", bad);
    CHECK(ref_quant_weight(block, 0, MOEVK_DTYPE_Q8_0) == -64.0f &&
              ref_quant_weight(block, 1, MOEVK_DTYPE_Q8_0) == 63.5f,
          "Q8_0: -128 and 127 at d = 0.5 are -64 and 63.5");
    CHECK(ref_block_weights(MOEVK_DTYPE_Q8_0) == 32 &&
              ref_matrix_bytes(MOEVK_DTYPE_Q8_0, 3, 64) == 3 * 2 * 34,
          "Q8_0's block: 32 weights in 34 bytes");
}

/* ggml packs Q4_0's weight j in byte j's low nibble and weight j + 16 in its high one. */
static void test_q4_0_nibbles(void) {
    uint8_t block[18];
    put_half(block, HALF_2);
    uint8_t L[32]; /* the stored 4-bit values, q + 8 */
    for (int j = 0; j < 32; ++j) L[j] = (uint8_t)((j * 5 + 3) % 16);
    L[0] = 0, L[15] = 15, L[16] = 15, L[31] = 0;
    for (int j = 0; j < 16; ++j) block[2 + j] = (uint8_t)(L[j] | L[j + 16] << 4);
    int bad = -1;
    for (int j = 0; j < 32 && bad < 0; ++j)
        if (ref_quant_weight(block, (uint64_t)j, MOEVK_DTYPE_Q4_0) != 2.0f * (float)(L[j] - 8))
            bad = j;
    CHECK(bad < 0, "Q4_0 weight %d", bad);
    CHECK(ref_quant_weight(block, 0, MOEVK_DTYPE_Q4_0) == -16.0f &&
              ref_quant_weight(block, 16, MOEVK_DTYPE_Q4_0) == 14.0f,
          "Q4_0: nibble 0 is -8 d, nibble 15 is 7 d");
}

/* The K formats' 8 6-bit scales and mins in their 12 bytes, as ggml's quantize_row_q4_K_ref
 * and q5_K_ref pack them: sub-blocks 0..3 in the low 6 bits of bytes 0..7, sub-blocks 4..7 in
 * the nibbles of bytes 8..11 and the high 2 bits of bytes 0..7. */
static void pack_k_scales(uint8_t *scales, const uint8_t *scale, const uint8_t *min) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            scales[j] = scale[j];
            scales[j + 4] = min[j];
        } else {
            scales[j + 4] = (uint8_t)((scale[j] & 0xF) | (min[j] & 0xF) << 4);
            scales[j - 4] |= (uint8_t)((scale[j] >> 4) << 6);
            scales[j] |= (uint8_t)((min[j] >> 4) << 6);
        }
    }
}

/* Q4_K: 8 sub-blocks of 32, each with a 6-bit scale and min packed into 12 bytes the way
 * ggml's quantize_row_q4_K_ref packs them (sub-blocks 4..7 split over the high bits of bytes
 * 0..7 and the nibbles of bytes 8..11); each 64 weights take 32 bytes, low nibbles first. */
static void test_q4_k_scales_mins_and_nibbles(void) {
    static const uint8_t SCALE[8] = {1, 2, 63, 0, 17, 34, 51, 63};
    static const uint8_t MIN[8] = {0, 5, 10, 63, 16, 33, 48, 1};
    uint8_t block[144] = {0};
    put_half(block, HALF_1);       /* d */
    put_half(block + 2, HALF_0_5); /* dmin */
    uint8_t *scales = block + 4, *qs = block + 16;
    pack_k_scales(scales, SCALE, MIN);
    uint8_t L[256];
    for (int j = 0; j < 256; ++j) L[j] = (uint8_t)((j * 7 + j / 32) % 16);
    for (int chunk = 0; chunk < 4; ++chunk)
        for (int l = 0; l < 32; ++l)
            qs[chunk * 32 + l] = (uint8_t)(L[chunk * 64 + l] | L[chunk * 64 + l + 32] << 4);
    int bad = -1;
    for (int j = 0; j < 256 && bad < 0; ++j) {
        int sub = j / 32;
        float want = 1.0f * (float)SCALE[sub] * (float)L[j] - 0.5f * (float)MIN[sub];
        if (ref_quant_weight(block, (uint64_t)j, MOEVK_DTYPE_Q4_K) != want) bad = j;
    }
    CHECK(bad < 0, "Q4_K weight %d (sub-block %d)", bad, bad / 32);
    /* Weight 200: sub-block 6 (scale 51, min 48), stored value (200 * 7 + 6) % 16 = 14. */
    CHECK(ref_quant_weight(block, 200, MOEVK_DTYPE_Q4_K) == 51.0f * 14.0f - 24.0f,
          "Q4_K weight 200 by hand");
}

/* Q6_K: 16 sub-blocks of 16 with int8 scales; each 128 weights take 64 bytes of low 4 bits and
 * 32 of high 2 bits, packed the way ggml's quantize_row_q6_K_ref packs them. */
static void test_q6_k_low_and_high_bits_and_signed_scales(void) {
    uint8_t block[210] = {0};
    uint8_t *ql = block, *qh = block + 128;
    int8_t *scales = (int8_t *)(block + 192);
    put_half(block + 208, HALF_0_25);
    for (int i = 0; i < 16; ++i) scales[i] = (int8_t)(i * 9 - 70); /* -70 .. 65 */
    scales[3] = -128, scales[12] = 127;
    uint8_t L[256]; /* the stored 6-bit values, q + 32 */
    for (int j = 0; j < 256; ++j) L[j] = (uint8_t)((j * 11 + 5) % 64);
    L[0] = 0, L[255] = 63;
    for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 32; ++l) {
            const uint8_t *v = L + half * 128;
            ql[half * 64 + l] = (uint8_t)((v[l] & 0xF) | (v[l + 64] & 0xF) << 4);
            ql[half * 64 + l + 32] = (uint8_t)((v[l + 32] & 0xF) | (v[l + 96] & 0xF) << 4);
            qh[half * 32 + l] = (uint8_t)((v[l] >> 4) | (v[l + 32] >> 4) << 2 |
                                          (v[l + 64] >> 4) << 4 | (v[l + 96] >> 4) << 6);
        }
    int bad = -1;
    for (int j = 0; j < 256 && bad < 0; ++j) {
        int sub = j / 16;
        float want = 0.25f * (float)scales[sub] * (float)(L[j] - 32);
        if (ref_quant_weight(block, (uint64_t)j, MOEVK_DTYPE_Q6_K) != want) bad = j;
    }
    CHECK(bad < 0, "Q6_K weight %d (sub-block %d)", bad, bad / 16);
    CHECK(ref_quant_weight(block, 0, MOEVK_DTYPE_Q6_K) == 0.25f * -70.0f * -32.0f &&
              ref_quant_weight(block, 255, MOEVK_DTYPE_Q6_K) == 0.25f * 65.0f * 31.0f,
          "Q6_K's first and last weights by hand");
    CHECK(ref_matrix_bytes(MOEVK_DTYPE_Q6_K, 2, 512) == 2 * 2 * 210 &&
              ref_matrix_bytes(MOEVK_DTYPE_Q4_K, 2, 512) == 2 * 2 * 144,
          "the K formats' blocks: 256 weights in 210 and 144 bytes");
}

/* Q5_0: Q4_0's nibbles plus a fifth bit per weight, weight j's at bit j of the 32-bit word after
 * d, packed as ggml's quantize_row_q5_0_ref packs it. */
static void test_q5_0_fifth_bits(void) {
    uint8_t block[22] = {0};
    put_half(block, HALF_0_5);
    uint8_t L[32]; /* the stored 5-bit values, q + 16 */
    for (int j = 0; j < 32; ++j) L[j] = (uint8_t)((j * 13 + 7) % 32);
    L[0] = 0, L[15] = 31, L[16] = 16, L[31] = 15;
    uint32_t fifths = 0;
    for (int j = 0; j < 16; ++j) {
        block[6 + j] = (uint8_t)((L[j] & 0xF) | (L[j + 16] & 0xF) << 4);
        fifths |= (uint32_t)(L[j] >> 4) << j;
        fifths |= (uint32_t)(L[j + 16] >> 4) << (j + 16);
    }
    for (int i = 0; i < 4; ++i) block[2 + i] = (uint8_t)(fifths >> (8 * i));
    int bad = -1;
    for (int j = 0; j < 32 && bad < 0; ++j)
        if (ref_quant_weight(block, (uint64_t)j, MOEVK_DTYPE_Q5_0) != 0.5f * (float)(L[j] - 16))
            bad = j;
    CHECK(bad < 0, "Q5_0 weight %d", bad);
    CHECK(ref_quant_weight(block, 0, MOEVK_DTYPE_Q5_0) == -8.0f &&
              ref_quant_weight(block, 15, MOEVK_DTYPE_Q5_0) == 7.5f &&
              ref_quant_weight(block, 16, MOEVK_DTYPE_Q5_0) == 0.0f,
          "Q5_0: 0 is -16 d, 31 is 15 d, 16 is 0");
}

/* Q5_K: Q4_K's scales and nibbles (at byte 48) with each weight's fifth bit in 32 bytes at 16:
 * bit 2c of byte l for 64-weight chunk c's weight l, bit 2c + 1 for its weight l + 32, packed
 * as ggml's quantize_row_q5_K_ref packs them. */
static void test_q5_k_fifth_bits_over_the_chunks(void) {
    static const uint8_t SCALE[8] = {3, 60, 1, 63, 20, 40, 63, 9};
    static const uint8_t MIN[8] = {1, 0, 63, 7, 31, 2, 50, 17};
    uint8_t block[176] = {0};
    put_half(block, HALF_0_5);   /* d */
    put_half(block + 2, HALF_1); /* dmin */
    uint8_t *scales = block + 4, *qh = block + 16, *qs = block + 48;
    pack_k_scales(scales, SCALE, MIN);
    uint8_t L[256];
    for (int j = 0; j < 256; ++j) L[j] = (uint8_t)((j * 29 + j / 64) % 32);
    for (int chunk = 0; chunk < 4; ++chunk)
        for (int l = 0; l < 32; ++l) {
            uint8_t low = L[chunk * 64 + l], high = L[chunk * 64 + l + 32];
            qs[chunk * 32 + l] = (uint8_t)((low & 0xF) | (high & 0xF) << 4);
            qh[l] |= (uint8_t)((low >> 4) << (2 * chunk) | (high >> 4) << (2 * chunk + 1));
        }
    int bad = -1;
    for (int j = 0; j < 256 && bad < 0; ++j) {
        int sub = j / 32;
        float want = 0.5f * (float)SCALE[sub] * (float)L[j] - 1.0f * (float)MIN[sub];
        if (ref_quant_weight(block, (uint64_t)j, MOEVK_DTYPE_Q5_K) != want) bad = j;
    }
    CHECK(bad < 0, "Q5_K weight %d (sub-block %d)", bad, bad / 32);
    /* Weight 230: sub-block 7 (scale 9, min 17), stored (230 * 29 + 3) % 32 = 17, past 15. */
    CHECK(ref_quant_weight(block, 230, MOEVK_DTYPE_Q5_K) == 0.5f * 9.0f * 17.0f - 17.0f,
          "Q5_K weight 230 by hand");
    CHECK(ref_matrix_bytes(MOEVK_DTYPE_Q5_K, 1, 256) == 176 &&
              ref_matrix_bytes(MOEVK_DTYPE_Q5_0, 1, 64) == 44,
          "Q5_K 176 bytes a block, Q5_0 22");
}

/* ref_load reads block formats too: weight i of the flattened matrix is in block i / B. */
static void test_ref_load_reads_the_next_block(void) {
    uint8_t blocks[2 * 18] = {0};
    put_half(blocks, HALF_1);
    put_half(blocks + 18, HALF_2);
    blocks[2] = 0x9A;  /* weights 0 and 16: 10 - 8, 9 - 8 */
    blocks[20] = 0x0F; /* weights 32 and 48: (15 - 8) 2, (0 - 8) 2 */
    CHECK(ref_load(blocks, 0, MOEVK_DTYPE_Q4_0) == 2.0f &&
              ref_load(blocks, 16, MOEVK_DTYPE_Q4_0) == 1.0f &&
              ref_load(blocks, 32, MOEVK_DTYPE_Q4_0) == 14.0f &&
              ref_load(blocks, 48, MOEVK_DTYPE_Q4_0) == -16.0f,
          "ref_load of Q4_0 weights 0, 16, 32, 48");
}

static const test_case TESTS[] = {
    TEST(q8_0_is_d_times_each_signed_byte),
    TEST(q4_0_nibbles),
    TEST(q4_k_scales_mins_and_nibbles),
    TEST(q6_k_low_and_high_bits_and_signed_scales),
    TEST(q5_0_fifth_bits),
    TEST(q5_k_fifth_bits_over_the_chunks),
    TEST(ref_load_reads_the_next_block),
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
