#version 450
// The device's compute ceiling: eight independent chains of fused multiply-adds per invocation
// (enough to hide their latency), ITERATIONS steps each, the result stored so that nothing is
// optimised away. 2 * 8 * ITERATIONS FLOP per invocation.
layout(local_size_x = 256) in;
layout(std430, binding = 0) writeonly buffer Sink { float sink[]; };
layout(push_constant) uniform Params { uint iterations; float seed; } P;
void main() {
    float a = P.seed + float(gl_LocalInvocationID.x) * 1e-7, b = 0.999999;
    float c0 = a, c1 = a + 1.0, c2 = a + 2.0, c3 = a + 3.0, c4 = a + 4.0, c5 = a + 5.0,
          c6 = a + 6.0, c7 = a + 7.0;
    for (uint i = 0u; i < P.iterations; ++i) {
        c0 = fma(c0, b, a); c1 = fma(c1, b, a); c2 = fma(c2, b, a); c3 = fma(c3, b, a);
        c4 = fma(c4, b, a); c5 = fma(c5, b, a); c6 = fma(c6, b, a); c7 = fma(c7, b, a);
    }
    sink[gl_GlobalInvocationID.x] = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7;
}
