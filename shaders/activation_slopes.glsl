// The activation's partial derivatives at (gate, up), for the backward: dh/dgate (SwiGLU only;
// else 0) and dh/dup, of the forms ffn.glsl's ffn_activate computes (needs ffn.glsl).
vec2 activation_slopes(float gate, float up) {
    if (ACTIVATION == ACTIVATION_SWIGLU) {
        float sigma = 1.0 / (1.0 + exp(-gate));
        return vec2(sigma * (1.0 + gate * (1.0 - sigma)) * up, gate * sigma);
    }
    if (ACTIVATION == ACTIVATION_GELU) {
        float cdf = 0.5 * (1.0 + erf_approx(up * 0.70710678118654752));
        return vec2(0.0, cdf + up * exp(-0.5 * up * up) * 0.39894228040143267794);
    }
    if (ACTIVATION == ACTIVATION_GELU_TANH) {
        // The forward's clamp: past it tanh is +-1 in f32 and its slope 0.
        float inner = 0.79788456080286536 * (up + 0.044715 * up * up * up);
        float th = tanh(clamp(inner, -10.0, 10.0));
        float slope = abs(inner) < 10.0 ? (1.0 - th * th) * 0.79788456080286536 * (1.0 + 0.134145 * up * up) : 0.0;
        return vec2(0.0, 0.5 * (1.0 + th) + 0.5 * up * slope);
    }
    return vec2(0.0, up > 0.0 ? 1.0 : 0.0); // ReLU: slope 0 at 0, as PyTorch's
}
