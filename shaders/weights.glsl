// The FFN's weights as f32, whatever the layer's weight type (DTYPE): f32, f16 and bf16 words,
// or ggml's block formats read in place (moevk.h's moevk_dtype says each block's bytes). GLSL
// passes no buffer to a function, so DEFINE_WEIGHT_READER(NAME, WORDS) defines float NAME(i),
// weight i of the array WORDS (a matrix's rows are whole blocks, so weight i of the flattened
// matrix sits in block i / B). The block formats' steps follow ggml's dequantize_row_* in
// order, each rounded (precise): the same bits as reference/quant.c.

// Byte j, and the f16 at bytes j and j + 1, of a word array (blocks need not be word-aligned).
#define WORDS_BYTE(WORDS, j) ((WORDS[(j) >> 2u] >> (((j) & 3u) * 8u)) & 0xFFu)
#define WORDS_HALF(WORDS, j) unpackHalf2x16(WORDS_BYTE(WORDS, j) | (WORDS_BYTE(WORDS, (j) + 1u) << 8u)).x

// Q4_K's 6-bit scale and min of sub-block s (0..7) of the block at byte b: its 12 scale bytes
// (at b + 4) hold sub-blocks 0..3 in their low 6 bits, 4..7 split over the high 2 bits of bytes
// 0..7 and the nibbles of bytes 8..11.
#define Q4_K_SCALE_MIN(WORDS, b, s, scale, least)                                                  \
    {                                                                                              \
        uint packed_ = WORDS_BYTE(WORDS, (b) + 8u + (s)); /* scales byte s + 4 */                  \
        scale = (s) < 4u ? WORDS_BYTE(WORDS, (b) + 4u + (s)) & 63u                                 \
                         : (packed_ & 0xFu) | ((WORDS_BYTE(WORDS, (b) + (s)) >> 6u) << 4u);        \
        least = (s) < 4u ? packed_ & 63u                                                           \
                         : (packed_ >> 4u) | ((WORDS_BYTE(WORDS, (b) + 4u + (s)) >> 6u) << 4u);    \
    }

// The signed value of a byte.
int signed_byte(uint b) { return int(b << 24u) >> 24; }

#define DEFINE_WEIGHT_READER(NAME, WORDS)                                                          \
    float NAME(uint i) {                                                                           \
        if (DTYPE == DTYPE_F32) return uintBitsToFloat(WORDS[i]);                                  \
        if (DTYPE == DTYPE_F16 || DTYPE == DTYPE_BF16) return decode_element(WORDS[i >> 1u], i, DTYPE); \
        if (DTYPE == DTYPE_Q8_0) {                                                                 \
            uint b = (i / 32u) * 34u;                                                              \
            precise float w = float(signed_byte(WORDS_BYTE(WORDS, b + 2u + i % 32u))) * WORDS_HALF(WORDS, b); \
            return w;                                                                              \
        }                                                                                          \
        if (DTYPE == DTYPE_Q4_0) {                                                                 \
            uint b = (i / 32u) * 18u, j = i % 32u, q = WORDS_BYTE(WORDS, b + 2u + j % 16u);        \
            int value = int(j < 16u ? q & 0xFu : q >> 4u) - 8;                                     \
            precise float w = float(value) * WORDS_HALF(WORDS, b);                                 \
            return w;                                                                              \
        }                                                                                          \
        if (DTYPE == DTYPE_Q4_K) {                                                                 \
            /* Each 64 weights: 32 bytes of q (low nibbles, then high), sub-blocks 2c, 2c + 1. */  \
            uint b = (i / 256u) * 144u, j = i % 256u, chunk = j / 64u, high = (j % 64u) / 32u;     \
            uint q = WORDS_BYTE(WORDS, b + 16u + chunk * 32u + j % 32u), s = 2u * chunk + high;   \
            uint scale, least;                                                                     \
            Q4_K_SCALE_MIN(WORDS, b, s, scale, least);                                             \
            precise float d = WORDS_HALF(WORDS, b) * float(scale);                                 \
            precise float m = WORDS_HALF(WORDS, b + 2u) * float(least);                            \
            precise float w = d * float(high != 0u ? q >> 4u : q & 0xFu) - m;                      \
            return w;                                                                              \
        }                                                                                          \
        if (DTYPE == DTYPE_Q5_0) {                                                                 \
            /* The fifth bit of weight j: bit j of the 32-bit word after d. */                    \
            uint b = (i / 32u) * 22u, j = i % 32u, q = WORDS_BYTE(WORDS, b + 6u + j % 16u);        \
            uint fifth = (WORDS_AT(WORDS, b + 2u) >> j) & 1u;                                     \
            int value = int((j < 16u ? q & 0xFu : q >> 4u) | (fifth << 4u)) - 16;                 \
            precise float w = float(value) * WORDS_HALF(WORDS, b);                                 \
            return w;                                                                              \
        }                                                                                          \
        if (DTYPE == DTYPE_Q5_K) {                                                                 \
            /* Q4_K's layout with the quants at byte 48 and the fifth bits at 16: bit s of byte  \
             * l for sub-block s's weight l. */                                                    \
            uint b = (i / 256u) * 176u, j = i % 256u, chunk = j / 64u, high = (j % 64u) / 32u;     \
            uint l = j % 32u, q = WORDS_BYTE(WORDS, b + 48u + chunk * 32u + l), s = 2u * chunk + high; \
            uint fifth = (WORDS_BYTE(WORDS, b + 16u + l) >> s) & 1u;                              \
            uint scale, least;                                                                     \
            Q4_K_SCALE_MIN(WORDS, b, s, scale, least);                                             \
            precise float d = WORDS_HALF(WORDS, b) * float(scale);                                 \
            precise float m = WORDS_HALF(WORDS, b + 2u) * float(least);                            \
            precise float w = d * float((high != 0u ? q >> 4u : q & 0xFu) + 16u * fifth) - m;     \
            return w;                                                                              \
        }                                                                                          \
        /* Q6_K: each 128 weights: 64 bytes of low bits, 32 of high, 8 scales; quarter r of 32   \
         * takes the low (r < 2) or high nibbles of the first or second 32 bytes (r even, odd)    \
         * and bits 2r, 2r + 1 of the high bytes. */                                               \
        uint b = (i / 256u) * 210u, j = i % 256u, half_ = j / 128u, r = (j % 128u) / 32u, l = j % 32u; \
        uint low = WORDS_BYTE(WORDS, b + half_ * 64u + l + (r & 1u) * 32u);                        \
        uint high_bits = (WORDS_BYTE(WORDS, b + 128u + half_ * 32u + l) >> (2u * r)) & 3u;         \
        int q = int((r >= 2u ? low >> 4u : low & 0xFu) | (high_bits << 4u)) - 32;                 \
        int scale = signed_byte(WORDS_BYTE(WORDS, b + 192u + half_ * 8u + l / 16u + 2u * r));     \
        precise float ds = WORDS_HALF(WORDS, b + 208u) * float(scale);                             \
        precise float w = ds * float(q);                                                           \
        return w;                                                                                  \
    }

// Decode reads a block format's weights a chunk of WEIGHT_CHUNK at a time: 32 consecutive
// weights (i0 a multiple of 32) that share their block's scales, read once for the chunk, and
// their quants as whole words. The same steps per weight as DEFINE_WEIGHT_READER's.
#define WEIGHT_CHUNK 32u

// The 32-bit word at byte o of a word array (o need not be aligned).
#define WORDS_AT(WORDS, o)                                                                         \
    (((o) & 3u) == 0u ? WORDS[(o) >> 2u]                                                           \
                      : (WORDS[(o) >> 2u] >> (((o) & 3u) * 8u)) | (WORDS[((o) >> 2u) + 1u] << (32u - ((o) & 3u) * 8u)))

#define DEFINE_WEIGHT_CHUNK_READER(NAME, WORDS)                                                    \
    void NAME(uint i0, out float w[WEIGHT_CHUNK]) {                                                \
        if (DTYPE == DTYPE_Q8_0) {                                                                 \
            uint b = (i0 / 32u) * 34u;                                                             \
            float d = WORDS_HALF(WORDS, b);                                                        \
            for (uint g = 0u; g < 8u; ++g) {                                                       \
                uint q4 = WORDS_AT(WORDS, b + 2u + 4u * g);                                        \
                for (uint t = 0u; t < 4u; ++t) {                                                   \
                    precise float v = float(int(q4 << (24u - 8u * t)) >> 24) * d;                  \
                    w[4u * g + t] = v;                                                             \
                }                                                                                  \
            }                                                                                      \
        } else if (DTYPE == DTYPE_Q4_0) {                                                          \
            uint b = (i0 / 32u) * 18u;                                                             \
            float d = WORDS_HALF(WORDS, b);                                                        \
            for (uint g = 0u; g < 4u; ++g) {                                                       \
                uint q4 = WORDS_AT(WORDS, b + 2u + 4u * g);                                        \
                for (uint t = 0u; t < 4u; ++t) {                                                   \
                    uint q = (q4 >> (8u * t)) & 0xFFu;                                             \
                    precise float low = float(int(q & 0xFu) - 8) * d;                              \
                    precise float high = float(int(q >> 4u) - 8) * d;                              \
                    w[4u * g + t] = low;                                                           \
                    w[16u + 4u * g + t] = high;                                                    \
                }                                                                                  \
            }                                                                                      \
        } else if (DTYPE == DTYPE_Q4_K) {                                                          \
            uint b = (i0 / 256u) * 144u, j = i0 % 256u, chunk = j / 64u, high = (j % 64u) / 32u;   \
            uint s = 2u * chunk + high, scale, least;                                              \
            Q4_K_SCALE_MIN(WORDS, b, s, scale, least);                                             \
            precise float d = WORDS_HALF(WORDS, b) * float(scale);                                 \
            precise float m = WORDS_HALF(WORDS, b + 2u) * float(least);                            \
            uint q_at = (b + 16u + chunk * 32u) >> 2u; /* 144-byte blocks: word-aligned */         \
            for (uint g = 0u; g < 8u; ++g) {                                                       \
                uint q4 = WORDS[q_at + g];                                                         \
                for (uint t = 0u; t < 4u; ++t) {                                                   \
                    uint q = (q4 >> (8u * t + 4u * high)) & 0xFu;                                  \
                    precise float v = d * float(q) - m;                                            \
                    w[4u * g + t] = v;                                                             \
                }                                                                                  \
            }                                                                                      \
        } else if (DTYPE == DTYPE_Q5_0) {                                                          \
            uint b = (i0 / 32u) * 22u, fifths = WORDS_AT(WORDS, b + 2u);                            \
            float d = WORDS_HALF(WORDS, b);                                                        \
            for (uint g = 0u; g < 4u; ++g) {                                                       \
                uint q4 = WORDS_AT(WORDS, b + 6u + 4u * g);                                        \
                for (uint t = 0u; t < 4u; ++t) {                                                   \
                    uint q = (q4 >> (8u * t)) & 0xFu, h = (q4 >> (8u * t + 4u)) & 0xFu, j = 4u * g + t; \
                    precise float low = float(int(q | (((fifths >> j) & 1u) << 4u)) - 16) * d;   \
                    precise float high = float(int(h | (((fifths >> (j + 16u)) & 1u) << 4u)) - 16) * d; \
                    w[j] = low;                                                                    \
                    w[16u + j] = high;                                                             \
                }                                                                                  \
            }                                                                                      \
        } else if (DTYPE == DTYPE_Q5_K) {                                                          \
            uint b = (i0 / 256u) * 176u, j = i0 % 256u, chunk = j / 64u, high = (j % 64u) / 32u;   \
            uint s = 2u * chunk + high, scale, least;                                              \
            Q4_K_SCALE_MIN(WORDS, b, s, scale, least);                                             \
            precise float d = WORDS_HALF(WORDS, b) * float(scale);                                 \
            precise float m = WORDS_HALF(WORDS, b + 2u) * float(least);                            \
            uint q_at = (b + 48u + chunk * 32u) >> 2u, h_at = (b + 16u) >> 2u; /* word-aligned */ \
            for (uint g = 0u; g < 8u; ++g) {                                                       \
                uint q4 = WORDS[q_at + g], h4 = WORDS[h_at + g];                                   \
                for (uint t = 0u; t < 4u; ++t) {                                                   \
                    uint q = (q4 >> (8u * t + 4u * high)) & 0xFu, fifth = (h4 >> (8u * t + s)) & 1u; \
                    precise float v = d * float(q + 16u * fifth) - m;                              \
                    w[4u * g + t] = v;                                                             \
                }                                                                                  \
            }                                                                                      \
        } else {                                                                                   \
            /* Q6_K: quarter r of a 128-weight half; scales of 16 weights each. */                \
            uint b = (i0 / 256u) * 210u, j = i0 % 256u, half_ = j / 128u, r = (j % 128u) / 32u;   \
            float d = WORDS_HALF(WORDS, b + 208u);                                                 \
            uint sc_at = b + 192u + half_ * 8u + 2u * r;                                           \
            precise float ds0 = d * float(signed_byte(WORDS_BYTE(WORDS, sc_at)));                  \
            precise float ds1 = d * float(signed_byte(WORDS_BYTE(WORDS, sc_at + 1u)));             \
            uint low_at = b + half_ * 64u + (r & 1u) * 32u, high_at = b + 128u + half_ * 32u;      \
            for (uint g = 0u; g < 8u; ++g) {                                                       \
                uint low4 = WORDS_AT(WORDS, low_at + 4u * g), high4 = WORDS_AT(WORDS, high_at + 4u * g); \
                for (uint t = 0u; t < 4u; ++t) {                                                   \
                    uint low = (low4 >> (8u * t + (r >= 2u ? 4u : 0u))) & 0xFu;                    \
                    uint high_bits = (high4 >> (8u * t + 2u * r)) & 3u;                            \
                    int q = int(low | (high_bits << 4u)) - 32;                                     \
                    precise float v = (g < 4u ? ds0 : ds1) * float(q);                             \
                    w[4u * g + t] = v;                                                             \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

// Prefill's tiles read a block format's weights four at a time: i0 a multiple of 4, so that the
// four share one block and one sub-block, whose scales are read once for them.
#define DEFINE_WEIGHT_QUAD_READER(NAME, WORDS)                                                     \
    void NAME(uint i0, out float w[4]) {                                                           \
        if (DTYPE == DTYPE_Q8_0) {                                                                 \
            uint b = (i0 / 32u) * 34u, q4 = WORDS_AT(WORDS, b + 2u + i0 % 32u);                   \
            float d = WORDS_HALF(WORDS, b);                                                        \
            for (uint t = 0u; t < 4u; ++t) {                                                       \
                precise float v = float(int(q4 << (24u - 8u * t)) >> 24) * d;                      \
                w[t] = v;                                                                          \
            }                                                                                      \
        } else if (DTYPE == DTYPE_Q4_0 || DTYPE == DTYPE_Q5_0) {                                   \
            bool five = DTYPE == DTYPE_Q5_0;                                                       \
            uint bytes = five ? 22u : 18u, b = (i0 / 32u) * bytes, j0 = i0 % 32u;                  \
            uint q4 = WORDS_AT(WORDS, b + (five ? 6u : 2u) + j0 % 16u);                            \
            uint fifths = five ? WORDS_AT(WORDS, b + 2u) : 0u, shift = j0 < 16u ? 0u : 4u;         \
            float d = WORDS_HALF(WORDS, b);                                                        \
            for (uint t = 0u; t < 4u; ++t) {                                                       \
                uint q = (q4 >> (8u * t + shift)) & 0xFu;                                          \
                int value = five ? int(q | (((fifths >> (j0 + t)) & 1u) << 4u)) - 16 : int(q) - 8; \
                precise float v = float(value) * d;                                                \
                w[t] = v;                                                                          \
            }                                                                                      \
        } else if (DTYPE == DTYPE_Q4_K || DTYPE == DTYPE_Q5_K) {                                   \
            bool five = DTYPE == DTYPE_Q5_K;                                                       \
            uint b = (i0 / 256u) * (five ? 176u : 144u), j = i0 % 256u, chunk = j / 64u;           \
            uint high = (j % 64u) / 32u, l0 = j % 32u, s = 2u * chunk + high, scale, least;        \
            Q4_K_SCALE_MIN(WORDS, b, s, scale, least);                                             \
            precise float d = WORDS_HALF(WORDS, b) * float(scale);                                 \
            precise float m = WORDS_HALF(WORDS, b + 2u) * float(least);                            \
            uint q4 = WORDS[(b + (five ? 48u : 16u) + chunk * 32u + l0) >> 2u];                    \
            uint h4 = five ? WORDS[(b + 16u + l0) >> 2u] : 0u;                                     \
            for (uint t = 0u; t < 4u; ++t) {                                                       \
                uint q = ((q4 >> (8u * t + 4u * high)) & 0xFu) + 16u * ((h4 >> (8u * t + s)) & 1u); \
                precise float v = d * float(q) - m;                                                \
                w[t] = v;                                                                          \
            }                                                                                      \
        } else {                                                                                   \
            uint b = (i0 / 256u) * 210u, j = i0 % 256u, half_ = j / 128u, r = (j % 128u) / 32u;   \
            uint l0 = j % 32u;                                                                     \
            float d = WORDS_HALF(WORDS, b + 208u);                                                 \
            precise float ds = d * float(signed_byte(WORDS_BYTE(WORDS, b + 192u + half_ * 8u + l0 / 16u + 2u * r))); \
            uint low4 = WORDS_AT(WORDS, b + half_ * 64u + (r & 1u) * 32u + l0);                    \
            uint high4 = WORDS_AT(WORDS, b + 128u + half_ * 32u + l0);                             \
            for (uint t = 0u; t < 4u; ++t) {                                                       \
                uint low = (low4 >> (8u * t + (r >= 2u ? 4u : 0u))) & 0xFu;                        \
                int q = int(low | (((high4 >> (8u * t + 2u * r)) & 3u) << 4u)) - 32;               \
                precise float v = ds * float(q);                                                   \
                w[t] = v;                                                                          \
            }                                                                                      \
        }                                                                                          \
    }
