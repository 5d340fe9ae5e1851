// Workgroup-wide sum (or maximum) of one float per invocation, by a shared-memory tree in a
// fixed order, so that the result never depends on the subgroup size. Every invocation of the
// workgroup must call it, and every one gets the result. A caller that reduces again must put a
// barrier() between the two calls: the next call overwrites the lanes the result is read from.
shared float reduce_lanes[gl_WorkGroupSize.x];

float workgroup_tree_reduce(float value, bool maximum) {
    uint lane = gl_LocalInvocationID.x;
    reduce_lanes[lane] = value;
    barrier();
    for (uint half_width = gl_WorkGroupSize.x / 2u; half_width > 0u; half_width >>= 1) {
        if (lane < half_width) {
            float other = reduce_lanes[lane + half_width];
            reduce_lanes[lane] = maximum ? max(reduce_lanes[lane], other) : reduce_lanes[lane] + other;
        }
        barrier();
    }
    return reduce_lanes[0];
}

float workgroup_tree_sum(float value) { return workgroup_tree_reduce(value, false); }
