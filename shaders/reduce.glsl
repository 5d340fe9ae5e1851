// Workgroup-wide sums (or maxima) by a shared-memory tree in a fixed order, so that the result
// never depends on the subgroup size. Every invocation of the workgroup must call them. A
// caller that reduces again must put a barrier() between the two calls: the next call
// overwrites the lanes the result is read from. A stage that sums several values at once
// defines REDUCE_ROWS (default 1) before including this file.
#ifndef REDUCE_ROWS
#define REDUCE_ROWS 1
#endif
shared float reduce_lanes[REDUCE_ROWS][gl_WorkGroupSize.x];

// The tree over the first `rows` rows of reduce_lanes, which each lane has filled at its own
// index: afterwards reduce_lanes[r][0] holds row r's sum (or maximum).
void workgroup_tree_rows(uint rows, bool maximum) {
    uint lane = gl_LocalInvocationID.x;
    barrier();
    for (uint half_width = gl_WorkGroupSize.x / 2u; half_width > 0u; half_width >>= 1) {
        if (lane < half_width)
            for (uint r = 0u; r < rows; ++r) {
                float other = reduce_lanes[r][lane + half_width];
                reduce_lanes[r][lane] =
                    maximum ? max(reduce_lanes[r][lane], other) : reduce_lanes[r][lane] + other;
            }
        barrier();
    }
}

// One value per invocation; every invocation gets the result.
float workgroup_tree_reduce(float value, bool maximum) {
    reduce_lanes[0][gl_LocalInvocationID.x] = value;
    workgroup_tree_rows(1u, maximum);
    return reduce_lanes[0][0];
}

float workgroup_tree_sum(float value) { return workgroup_tree_reduce(value, false); }
