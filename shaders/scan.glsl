// Workgroup-wide inclusive prefix sum through shared memory (Hillis-Steele), in a fixed order so
// that it never depends on the subgroup size. Every invocation of the workgroup must call it.
shared uint scan_lanes[gl_WorkGroupSize.x];

// `total` receives the sum over the whole workgroup.
uint workgroup_inclusive_scan(uint value, out uint total) {
    uint lane = gl_LocalInvocationID.x;
    scan_lanes[lane] = value;
    barrier();
    for (uint step = 1u; step < gl_WorkGroupSize.x; step <<= 1) {
        uint add = lane >= step ? scan_lanes[lane - step] : 0u;
        barrier();
        scan_lanes[lane] += add;
        barrier();
    }
    uint result = scan_lanes[lane];
    total = scan_lanes[gl_WorkGroupSize.x - 1u];
    barrier(); // the array may be reused at once
    return result;
}
