// The GLSL declaration of each of the router's named buffers (BINDING_* in moevk_shared.h), as
// BUFFER_<NAME>. A stage declares only the buffers its header lists (<STAGE>_BUFFERS), through
// DECLARE_BUFFER in common.glsl: a shader that touches any other buffer does not compile, and
// the engine binds exactly the listed ones (engine/stage.c).
// The logits are read by every stage but the router projection, which writes them.
#ifdef STAGE_WRITES_LOGITS
#define LOGITS_ACCESS
#else
#define LOGITS_ACCESS readonly
#endif
#define BUFFER_LOGITS layout(std430, binding = BINDING_LOGITS) LOGITS_ACCESS buffer Logits { uint logits_words[]; };
#define BUFFER_BIAS layout(std430, binding = BINDING_BIAS) readonly buffer Bias { float bias[]; };
#define BUFFER_EXPERT_IDS layout(std430, binding = BINDING_EXPERT_IDS) buffer ExpertIds { int expert_ids[]; };
#define BUFFER_WEIGHTS layout(std430, binding = BINDING_WEIGHTS) buffer Weights { float weights[]; };
#define BUFFER_ROW_STATS layout(std430, binding = BINDING_ROW_STATS) buffer RowStats { vec4 row_stats[]; };
#define BUFFER_ROW_FLAGS layout(std430, binding = BINDING_ROW_FLAGS) buffer RowFlags { uint row_flags[]; };
#define BUFFER_BLOCK_COUNTS layout(std430, binding = BINDING_BLOCK_COUNTS) buffer BlockCounts { uint block_counts[]; };
#define BUFFER_EXPERT_INFO layout(std430, binding = BINDING_EXPERT_INFO) buffer ExpertInfo { uint expert_info[]; };
#define BUFFER_SLOTS layout(std430, binding = BINDING_SLOTS) buffer Slots { int slots[]; };
#define BUFFER_ROWS layout(std430, binding = BINDING_ROWS) buffer Rows { int rows[]; };
#define BUFFER_COMPACT_ROWS layout(std430, binding = BINDING_COMPACT_ROWS) buffer CompactRows { int compact_rows[]; };
#define BUFFER_ROW_TOKEN layout(std430, binding = BINDING_ROW_TOKEN) buffer RowToken { int row_token[]; };
#define BUFFER_ORDER layout(std430, binding = BINDING_ORDER) buffer Order { uint order[]; };
#define BUFFER_HIDDEN                                                                              \
    layout(std430, binding = BINDING_HIDDEN) readonly buffer Hidden { uint hidden_words[]; };      \
    layout(std430, binding = BINDING_HIDDEN) readonly buffer HiddenVec4 { uvec4 hidden_vec4[]; };
#define BUFFER_DISPATCHED                                                                          \
    layout(std430, binding = BINDING_DISPATCHED) buffer Dispatched { uint dispatched_words[]; };   \
    layout(std430, binding = BINDING_DISPATCHED) buffer DispatchedVec4 { uvec4 dispatched_vec4[]; };
// Written by the layer's down projection (expert_down.comp), f32 there; read by the combines.
#ifdef STAGE_WRITES_EXPERT_OUT
#define EXPERT_OUT_ACCESS
#else
#define EXPERT_OUT_ACCESS readonly
#endif
#define BUFFER_EXPERT_OUT                                                                          \
    layout(std430, binding = BINDING_EXPERT_OUT) EXPERT_OUT_ACCESS buffer ExpertOut { uint expert_out_words[]; }; \
    layout(std430, binding = BINDING_EXPERT_OUT) EXPERT_OUT_ACCESS buffer ExpertOutVec4 { uvec4 expert_out_vec4[]; };
#define BUFFER_COMBINED                                                                            \
    layout(std430, binding = BINDING_COMBINED) buffer Combined { uint combined_words[]; };         \
    layout(std430, binding = BINDING_COMBINED) buffer CombinedVec4 { uvec4 combined_vec4[]; };
#define BUFFER_STAT_PARTIALS layout(std430, binding = BINDING_STAT_PARTIALS) buffer StatPartials { float stat_partials[]; };
#define BUFFER_STAT_TOTALS layout(std430, binding = BINDING_STAT_TOTALS) buffer StatTotals { float stat_totals[]; };
#define BUFFER_LOSS_ROWS layout(std430, binding = BINDING_LOSS_ROWS) buffer LossRows { vec4 loss_rows[]; };
#define BUFFER_LOSS_PARTIALS layout(std430, binding = BINDING_LOSS_PARTIALS) buffer LossPartials { float loss_partials[]; };
#define BUFFER_LOSS_TOTALS layout(std430, binding = BINDING_LOSS_TOTALS) buffer LossTotals { float loss_totals[]; };
#define BUFFER_SEQ_COUNTS layout(std430, binding = BINDING_SEQ_COUNTS) buffer SeqCounts { uint seq_counts[]; };
#define BUFFER_GRAD_WEIGHTS layout(std430, binding = BINDING_GRAD_WEIGHTS) buffer GradWeights { float grad_weights[]; };
#define BUFFER_GRAD_LOGITS layout(std430, binding = BINDING_GRAD_LOGITS) buffer GradLogits { float grad_logits[]; };
// Coherent: the Sinkhorn and sequence stages read, within a workgroup, what its other
// invocations wrote. The same binding as 32-bit words holds the counts and dispatch arguments.
#define BUFFER_DECISIONS                                                                           \
    layout(std430, binding = BINDING_DECISIONS) coherent buffer Decisions { float decisions[]; };  \
    layout(std430, binding = BINDING_DECISIONS) coherent buffer DecisionWords { uint decision_words[]; };
#define BUFFER_NOISE_STD layout(std430, binding = BINDING_NOISE_STD) buffer NoiseStd { float noise_std_values[]; };
#define BUFFER_NOISE_STATE layout(std430, binding = BINDING_NOISE_STATE) readonly buffer NoiseState { uint noise_state[]; };
#define BUFFER_NOISE_WEIGHTS layout(std430, binding = BINDING_NOISE_WEIGHTS) readonly buffer NoiseWeights { float noise_weights[]; };
#define BUFFER_EXPERT_LOSS layout(std430, binding = BINDING_EXPERT_LOSS) buffer ExpertLoss { float expert_loss_values[]; };
// The parameters are written by the optimizer's step alone (optimizer.comp).
#ifdef STAGE_WRITES_WEIGHTS
#define WEIGHTS_ACCESS
#else
#define WEIGHTS_ACCESS readonly
#endif
#define BUFFER_ROUTER_WEIGHTS layout(std430, binding = BINDING_ROUTER_WEIGHTS) WEIGHTS_ACCESS buffer RouterWeights { float router_weights[]; };
#define BUFFER_GRAD_COMBINED layout(std430, binding = BINDING_GRAD_COMBINED) readonly buffer GradCombined { uint grad_combined_words[]; };
#define BUFFER_GRAD_NOISE layout(std430, binding = BINDING_GRAD_NOISE) buffer GradNoise { float grad_noise[]; };

// The layer's FFN weights (words of the layer's weight type), biases and scratch.
#define BUFFER_EXPERT_GATE layout(std430, binding = BINDING_EXPERT_GATE) WEIGHTS_ACCESS buffer ExpertGate { uint expert_gate_words[]; };
#define BUFFER_EXPERT_UP layout(std430, binding = BINDING_EXPERT_UP) WEIGHTS_ACCESS buffer ExpertUp { uint expert_up_words[]; };
#define BUFFER_EXPERT_DOWN layout(std430, binding = BINDING_EXPERT_DOWN) WEIGHTS_ACCESS buffer ExpertDown { uint expert_down_words[]; };
#define BUFFER_EXPERT_BIAS layout(std430, binding = BINDING_EXPERT_BIAS) WEIGHTS_ACCESS buffer ExpertBias { float expert_bias[]; };
#define BUFFER_INTERMEDIATE layout(std430, binding = BINDING_INTERMEDIATE) buffer Intermediate { float intermediate[]; };
#define BUFFER_TILES                                                                               \
    layout(std430, binding = BINDING_TILES) buffer Tiles { uint tile_words[]; };                   \
    layout(std430, binding = BINDING_TILES) buffer TileEntries { uvec4 tile_entries[]; };
#define BUFFER_SHARED_GATE layout(std430, binding = BINDING_SHARED_GATE) WEIGHTS_ACCESS buffer SharedGate { uint shared_gate_words[]; };
#define BUFFER_SHARED_UP layout(std430, binding = BINDING_SHARED_UP) WEIGHTS_ACCESS buffer SharedUp { uint shared_up_words[]; };
#define BUFFER_SHARED_DOWN layout(std430, binding = BINDING_SHARED_DOWN) WEIGHTS_ACCESS buffer SharedDown { uint shared_down_words[]; };
#define BUFFER_SHARED_BIAS layout(std430, binding = BINDING_SHARED_BIAS) WEIGHTS_ACCESS buffer SharedBias { float shared_bias[]; };
#define BUFFER_SHARED_INTERMEDIATE layout(std430, binding = BINDING_SHARED_INTERMEDIATE) buffer SharedIntermediate { float shared_intermediate[]; };
#define BUFFER_SHARED_OUT layout(std430, binding = BINDING_SHARED_OUT) buffer SharedOut { float shared_out[]; };
#define BUFFER_SHARED_GATE_WEIGHTS layout(std430, binding = BINDING_SHARED_GATE_WEIGHTS) WEIGHTS_ACCESS buffer SharedGateWeights { float shared_gate_weights[]; };
#define BUFFER_SHARED_SCALE layout(std430, binding = BINDING_SHARED_SCALE) buffer SharedScale { float shared_scale[]; };

// Each token's out-of-distribution scores (token_scores.comp).
#define BUFFER_TOKEN_SCORES layout(std430, binding = BINDING_TOKEN_SCORES) buffer TokenScores { float token_scores[]; };
#define BUFFER_PROFILE_MEASURES layout(std430, binding = BINDING_PROFILE_MEASURES) buffer ProfileMeasures { float profile_measures[]; };
#define BUFFER_ROW_MEASURES layout(std430, binding = BINDING_ROW_MEASURES) buffer RowMeasures { vec4 row_measures[]; };
#define BUFFER_PROFILE layout(std430, binding = BINDING_PROFILE) buffer Profile { uint profile[]; };

// The layer's backward: its gradients and scratch, f32.
#define BUFFER_GRAD_OUTPUT layout(std430, binding = BINDING_GRAD_OUTPUT) readonly buffer GradOutput { float grad_output[]; };
#define BUFFER_GRAD_EXPERT_OUT layout(std430, binding = BINDING_GRAD_EXPERT_OUT) buffer GradExpertOut { float grad_expert_out[]; };
#define BUFFER_GRAD_PRE layout(std430, binding = BINDING_GRAD_PRE) buffer GradPre { float grad_pre[]; };
#define BUFFER_GRAD_ROWS layout(std430, binding = BINDING_GRAD_ROWS) buffer GradRows { float grad_rows[]; };
#define BUFFER_GRAD_HIDDEN layout(std430, binding = BINDING_GRAD_HIDDEN) buffer GradHidden { float grad_hidden[]; };
#define BUFFER_GRAD_EXPERT_GATE layout(std430, binding = BINDING_GRAD_EXPERT_GATE) buffer GradExpertGate { float grad_expert_gate[]; };
#define BUFFER_GRAD_EXPERT_UP layout(std430, binding = BINDING_GRAD_EXPERT_UP) buffer GradExpertUp { float grad_expert_up[]; };
#define BUFFER_GRAD_EXPERT_DOWN layout(std430, binding = BINDING_GRAD_EXPERT_DOWN) buffer GradExpertDown { float grad_expert_down[]; };
#define BUFFER_GRAD_ROUTER layout(std430, binding = BINDING_GRAD_ROUTER) buffer GradRouter { float grad_router[]; };
#define BUFFER_OPT_MASTER layout(std430, binding = BINDING_OPT_MASTER) buffer OptMaster { float opt_master[]; };
#define BUFFER_OPT_M layout(std430, binding = BINDING_OPT_M) buffer OptM { float opt_m[]; };
#define BUFFER_OPT_V layout(std430, binding = BINDING_OPT_V) buffer OptV { float opt_v[]; };
#define BUFFER_OPT_PARTIALS layout(std430, binding = BINDING_OPT_PARTIALS) buffer OptPartials { float opt_partials[]; };
#define BUFFER_GRAD_SHARED_PRE layout(std430, binding = BINDING_GRAD_SHARED_PRE) buffer GradSharedPre { float grad_shared_pre[]; };
#define BUFFER_GRAD_SHARED_GATE layout(std430, binding = BINDING_GRAD_SHARED_GATE) buffer GradSharedGate { float grad_shared_gate[]; };
#define BUFFER_GRAD_SHARED_UP layout(std430, binding = BINDING_GRAD_SHARED_UP) buffer GradSharedUp { float grad_shared_up[]; };
#define BUFFER_GRAD_SHARED_DOWN layout(std430, binding = BINDING_GRAD_SHARED_DOWN) buffer GradSharedDown { float grad_shared_down[]; };
#define BUFFER_GRAD_SHARED_BIAS layout(std430, binding = BINDING_GRAD_SHARED_BIAS) buffer GradSharedBias { float grad_shared_bias[]; };
#define BUFFER_GRAD_SHARED_EXPERT_GATE layout(std430, binding = BINDING_GRAD_SHARED_EXPERT_GATE) buffer GradSharedExpertGate { float grad_shared_expert_gate[]; };
#define BUFFER_GRAD_SHARED_DZ layout(std430, binding = BINDING_GRAD_SHARED_DZ) buffer GradSharedDz { float grad_shared_dz[]; };
#define BUFFER_GRAD_EXPERT_BIAS layout(std430, binding = BINDING_GRAD_EXPERT_BIAS) buffer GradExpertBias { float grad_expert_bias[]; };

#define DECLARE_BUFFER(name) BUFFER_##name
