// The lanes that work on one token: a subgroup of LANES invocations (compiled with
// MOEVK_SUBGROUPS, LANES a specialization constant the engine sets to the subgroup size it
// requires), or one invocation (LANES 1, where these reductions do nothing). For the maxima and
// the top-k, lane LANE takes experts LANE, LANE + LANES, ...; for the sums, the blocks below. The
// reductions then give every lane the token's result.
// Maxima, top-two and top-k lists are exact whatever the order; sums go through a fixed order
// that no subgroup size changes (below), so both kernels give the same bits.
#ifdef MOEVK_SUBGROUPS
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
layout(constant_id = SPEC_SUBGROUP_LANES) const uint LANES = 1;
#define LANE gl_SubgroupInvocationID
#else
const uint LANES = 1u;
#define LANE 0u
#endif

// A sum's order: the E experts in 32 blocks of B = ceil(E / 32) consecutive experts (the last
// ones shorter or empty), each block summed in ascending order, then the pairwise tree over the
// blocks (block v with v + 1 for even v, those pairs likewise, ...), empty blocks adding zero.
// An invocation per token walks the experts once, pushing each block's sum into the tree
// (TREE_PUSH). A subgroup's lanes hold the blocks in slots of SUM_LANES blocks, block v in lane
// v % SUM_LANES (past 32 lanes, lanes repeat the first 32's blocks), slot v / SUM_LANES: the
// tree's lower levels are lanes_low_sum over the lanes, its upper ones the slots' pushed sums.
const uint SUM_WIDTH = 32u;
const uint SUM_LANES = LANES < SUM_WIDTH ? LANES : SUM_WIDTH;

uint sum_block_size(uint num_experts) { return (num_experts + SUM_WIDTH - 1u) / SUM_WIDTH; }
// The blocks that hold any expert (at most 32): past them every block is empty.
uint sum_blocks_used(uint num_experts) {
    uint size = sum_block_size(num_experts);
    return size == 0u ? 0u : (num_experts + size - 1u) / size;
}
// A subgroup's slots that hold any expert, and the block of this lane in one.
uint sum_slots_used(uint num_experts) {
    return (sum_blocks_used(num_experts) + SUM_LANES - 1u) / SUM_LANES;
}
uint slot_block(uint slot) { return (LANE % SUM_LANES) + slot * SUM_LANES; }

// The pairwise tree of the slots' sums, kept as a binary counter: levels[l] holds the finished
// node of 2^l slots waiting for its right neighbour. Push the slots in order, then TREE_RESULT
// after `count` of them (the rest taken as zeros, which change no sum). Constant indices: the
// levels stay in registers. `type` is float, or a vector of sums added component by component
// (one counter for several sums).
#define TREE_LEVELS 6u
#define TREE_PUSH(type, levels, slot, value)                                                       \
    {                                                                                              \
        type carry_ = (value);                                                                     \
        bool placed_ = false;                                                                      \
        for (uint level_ = 0u; level_ < TREE_LEVELS; ++level_) {                                   \
            if (placed_) continue;                                                                 \
            if ((((slot) >> level_) & 1u) != 0u) {                                                 \
                precise type sum_ = levels[level_] + carry_;                                       \
                carry_ = sum_;                                                                     \
            } else {                                                                               \
                levels[level_] = carry_;                                                           \
                placed_ = true;                                                                    \
            }                                                                                      \
        }                                                                                          \
    }
// The tree's sum after `count` slots, the rest taken as zeros: each waiting node adds what is
// to its right (zero for the lowest). The same bits as pushing the zeros: once a sum has had a
// zero added it is no -0, and x + 0 is then x.
#define TREE_RESULT(type, levels, count, result)                                                   \
    {                                                                                              \
        type carry_ = type(0.0);                                                                   \
        for (uint level_ = 0u; level_ < TREE_LEVELS; ++level_)                                     \
            if ((((count) >> level_) & 1u) != 0u) {                                                \
                precise type sum_ = levels[level_] + carry_;                                       \
                carry_ = sum_;                                                                     \
            }                                                                                      \
        result = carry_;                                                                           \
    }

#ifdef MOEVK_SUBGROUPS
float lanes_max(float value) {
    for (uint offset = LANES / 2u; offset > 0u; offset >>= 1)
        value = max(value, subgroupShuffleXor(value, offset));
    return value;
}

bool lanes_any(bool value) {
    uint bits = value ? 1u : 0u;
    for (uint offset = LANES / 2u; offset > 0u; offset >>= 1)
        bits |= subgroupShuffleXor(bits, offset);
    return bits != 0u;
}

// The sum of the SUM_LANES lanes' values by the tree's lower levels: lane l adds lane l ^ 1's
// value, then l ^ 2's, ..., which for the lower lane of each pair is its right neighbour's.
// Component by component for a vector of sums.
vec4 lanes_low_sum(vec4 value) {
    for (uint offset = 1u; offset < SUM_LANES; offset <<= 1) {
        precise vec4 sum = value + subgroupShuffleXor(value, offset);
        value = sum;
    }
    return value;
}
float lanes_low_sum(float value) { return lanes_low_sum(vec4(value, 0.0, 0.0, 0.0)).x; }

// The two largest of the values the lanes hold as (first >= second) pairs, counted with
// multiplicity, over `width` lanes (a power of two).
void lanes_top_two(inout float first, inout float second, uint width) {
    for (uint offset = width / 2u; offset > 0u; offset >>= 1) {
        float other_first = subgroupShuffleXor(first, offset);
        float other_second = subgroupShuffleXor(second, offset);
        second = max(min(first, other_first), max(second, other_second));
        first = max(first, other_first);
    }
}

// Whether (key, id) goes before (other_key, other_id) in a descending list: a larger key, an
// equal key of a lower id; an empty place (id -1) goes after everything.
bool ranks_before(float key, int id, float other_key, int other_id) {
    return id >= 0 && (other_id < 0 || key > other_key || (key == other_key && id < other_id));
}
#else
float lanes_max(float value) { return value; }
bool lanes_any(bool value) { return value; }
float lanes_low_sum(float value) { return value; }
vec4 lanes_low_sum(vec4 value) { return value; }
void lanes_top_two(inout float first, inout float second, uint width) {}
#endif

// Runs BODY for each of E experts `e` that this lane sums, adding to `partial` (declared here, of
// `type`), and pushes each block's (or, on a subgroup, each slot's) sum into the counter
// `levels`; `count` is then what TREE_RESULT takes. An invocation per token walks the experts in
// one loop; a subgroup's lanes walk their blocks.
#ifdef MOEVK_SUBGROUPS
#define FOR_EACH_SUM_BLOCK(experts, e, partial, type, levels, count, BODY)                         \
    {                                                                                              \
        uint size_ = sum_block_size(experts);                                                      \
        uint slots_ = sum_slots_used(experts);                                                     \
        for (uint slot_ = 0u; slot_ < slots_; ++slot_) {                                           \
            precise type partial = type(0.0);                                                      \
            uint begin_ = slot_block(slot_) * size_;                                               \
            uint end_ = min(begin_ + size_, (experts));                                            \
            for (uint e = begin_; e < end_; ++e) BODY                                              \
            TREE_PUSH(type, levels, slot_, lanes_low_sum(partial));                                \
        }                                                                                          \
        count = slots_;                                                                            \
    }
#else
#define FOR_EACH_SUM_BLOCK(experts, e, partial, type, levels, count, BODY)                         \
    {                                                                                              \
        uint size_ = sum_block_size(experts);                                                      \
        uint filled_ = 0u;                                                                         \
        precise type partial = type(0.0);                                                          \
        for (uint e = 0u; e < (experts); ++e) {                                                    \
            BODY                                                                                   \
            if (++filled_ == size_ || e + 1u == (experts)) {                                       \
                TREE_PUSH(type, levels, count, partial);                                           \
                partial = type(0.0);                                                               \
                filled_ = 0u;                                                                      \
                ++count;                                                                           \
            }                                                                                      \
        }                                                                                          \
    }
#endif

// Merges the lanes' descending lists of `length` (keys, ids; empty places id -1 at the end, no id
// in two lanes) into the top `length` of them all, in every lane: `length` rounds, each a
// max-with-index over the lanes' first entries, the winning lane dropping its first. Exact on
// every subgroup size. The indices are the loops' own, so the lists stay in registers.
#ifdef MOEVK_SUBGROUPS
#define LANES_MERGE_TOP(keys, ids, length)                                                         \
    {                                                                                              \
        float merged_keys_[length];                                                                \
        int merged_ids_[length];                                                                   \
        for (uint round_ = 0u; round_ < (length); ++round_) {                                      \
            float key_ = keys[0];                                                                  \
            int id_ = ids[0];                                                                      \
            for (uint offset_ = LANES / 2u; offset_ > 0u; offset_ >>= 1) {                         \
                float other_key_ = subgroupShuffleXor(key_, offset_);                              \
                int other_id_ = subgroupShuffleXor(id_, offset_);                                  \
                if (ranks_before(other_key_, other_id_, key_, id_)) {                              \
                    key_ = other_key_;                                                             \
                    id_ = other_id_;                                                               \
                }                                                                                  \
            }                                                                                      \
            merged_keys_[round_] = key_;                                                           \
            merged_ids_[round_] = id_;                                                             \
            bool drop_ = id_ >= 0 && ids[0] == id_;                                                \
            for (uint place_ = 0u; place_ + 1u < (length); ++place_) {                             \
                keys[place_] = drop_ ? keys[place_ + 1u] : keys[place_];                           \
                ids[place_] = drop_ ? ids[place_ + 1u] : ids[place_];                              \
            }                                                                                      \
            if (drop_) {                                                                           \
                keys[(length)-1u] = uintBitsToFloat(0xFF800000u);                                  \
                ids[(length)-1u] = -1;                                                             \
            }                                                                                      \
        }                                                                                          \
        for (uint place_ = 0u; place_ < (length); ++place_) {                                      \
            keys[place_] = merged_keys_[place_];                                                   \
            ids[place_] = merged_ids_[place_];                                                     \
        }                                                                                          \
    }
#else
#define LANES_MERGE_TOP(keys, ids, length)
#endif
