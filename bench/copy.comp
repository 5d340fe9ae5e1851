#version 450
// A plain copy in 16-byte units, grid-stride: what a well-behaved gather can hope for.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer Source { uvec4 source[]; };
layout(std430, binding = 1) writeonly buffer Destination { uvec4 destination[]; };
layout(push_constant) uniform Params { uint units; } P;
void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < P.units; i += stride) destination[i] = source[i];
}
