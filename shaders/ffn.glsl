// The expert FFN's matrix product, shared by the routed and the shared experts' kernels. The
// kernel defines FFN_DUAL (if it has two matrices, SwiGLU's gate and up) before including this,
// and the operand functions declared below after. It provides ffn_tile(expert, row_begin,
// row_end, col_begin, columns, depth, acc, acc2) over a workgroup of FFN_ROWS rows and
// FFN_COLUMNS outputs, and FFN_OUTPUTS accumulators per invocation at ffn_out_row/ffn_out_col
// (rows past row_end are not the invocation's); the same bits every run. Prefill builds use
// tiles through shared memory (ffn_tile.glsl); decode builds (FFN_MATVEC: a call of at most
// MATVEC_ROWS tokens) share each output's dot product among MATVEC_LANES invocations
// (ffn_matvec.glsl).
#ifdef FFN_DUAL
const bool FFN_TWO_MATRICES = ACTIVATION == ACTIVATION_SWIGLU;
#else
const bool FFN_TWO_MATRICES = false;
#endif

// The kernel's operands, as f32: its input element (row, k) and its weights' (expert, n, k).
float ffn_input(uint row, uint k);
float ffn_weight(uint expert, uint n, uint k);
#ifdef FFN_DUAL
float ffn_weight2(uint expert, uint n, uint k);
#endif

#include "weights.glsl"
// Block formats: WEIGHT_CHUNK consecutive weights (expert, n, k0 ..), k0 a multiple of it.
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]);
#ifdef FFN_DUAL
void ffn_weight2_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]);
#endif
// Block formats: 4 consecutive weights (expert, n, k0 ..), k0 a multiple of 4 (prefill's tiles).
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]);
#ifdef FFN_DUAL
void ffn_weight2_quad(uint expert, uint n, uint k0, out float w[4]);
#endif

#ifdef FFN_MATVEC
#include "ffn_matvec.glsl"
#else
#include "ffn_tile.glsl"
#endif

// The activation of the up projections' results (gate: SwiGLU's gate projection).
float erf_approx(float z) {
    // Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7); GLSL has no erf.
    float t = 1.0 / (1.0 + 0.3275911 * abs(z));
    float poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    float value = 1.0 - poly * exp(-z * z);
    return z < 0.0 ? -value : value;
}

float ffn_activate(float gate, float up) {
    if (ACTIVATION == ACTIVATION_SWIGLU) return gate / (1.0 + exp(-gate)) * up;
    if (ACTIVATION == ACTIVATION_GELU) return 0.5 * up * (1.0 + erf_approx(up * 0.70710678118654752));
    if (ACTIVATION == ACTIVATION_GELU_TANH) {
        // tanh's argument clamped where tanh is +-1 in f32 anyway: no inf/inf.
        float inner = clamp(0.79788456080286536 * (up + 0.044715 * up * up * up), -10.0, 10.0);
        return 0.5 * up * (1.0 + tanh(inner));
    }
    return up < 0.0 ? 0.0 : up; // ReLU; NaN stays NaN
}
