/* Constants that the C host and the GLSL shaders must agree on. Included by both. */
#ifndef MOEVK_SHARED_H
#define MOEVK_SHARED_H

/* The router's named buffers, by binding number. Each kernel's descriptor set binds the ones its
 * stage header lists (<KERNEL>_BUFFERS), at these numbers, and no others. [T, k] arrays have E
 * columns instead of k in EXPERT_CHOICE mode (the push constants' `choices` says which). */
#define BINDING_LOGITS 0        /* [T, E] f32, or f16 pairs in 32-bit words */
#define BINDING_BIAS 1          /* [E] f32 */
#define BINDING_EXPERT_IDS 2    /* [T, k] int: selected experts, -1 none */
#define BINDING_WEIGHTS 3       /* [T, k] float: combine weights, 0 where none */
#define BINDING_ROW_STATS 4     /* [T] vec4: largest logit, 1/normaliser, raw logsumexp, entropy */
#define BINDING_ROW_FLAGS 5     /* [T] uint: ROW_VALID, ROW_NONFINITE, ROW_MASKED */
#define BINDING_BLOCK_COUNTS 6  /* [blocks, E] uint: per-block counts, then exclusive offsets */
#define BINDING_EXPERT_INFO 7   /* uint: totals [E], kept [E], offsets [E + 1] */
#define BINDING_SLOTS 8         /* [T, k] int: slot within expert, -1 dropped */
#define BINDING_ROWS 9          /* [T, k] int: row of the expert buffer, -1 dropped */
#define BINDING_ROW_TOKEN 10    /* [rows] int: token gathered into each expert-buffer row, -1 */
#define BINDING_ORDER 11        /* [T * k] uint: assignments grouped by expert (score policy) */
#define BINDING_HIDDEN 12       /* [T, d] hidden_type words */
#define BINDING_DISPATCHED 13   /* [rows, d] hidden_type words */
#define BINDING_EXPERT_OUT 14   /* [rows, d] hidden_type words */
#define BINDING_COMBINED 15     /* [T, d] hidden_type words */
#define BINDING_STAT_PARTIALS 16 /* [stat_blocks, E + STAT_SCALARS] float */
#define BINDING_STAT_TOTALS 17  /* [E + STAT_SCALARS] float */
/* The losses' buffers (moevk_router_losses), sized only for routers created with losses. */
#define BINDING_LOSS_ROWS 18     /* [T] vec4: load thresholds (k+1-th, k-th key) and their experts */
#define BINDING_LOSS_PARTIALS 19 /* [stat_blocks, 2E] float: importance, load */
#define BINDING_LOSS_TOTALS 20   /* [4E + 2T] float: importance, load, their CV^2 slopes;
                                    per-sequence sums, per-token sequence terms */
#define BINDING_SEQ_COUNTS 21    /* [T / S, E] uint: selections per sequence and expert */
#define BINDING_GRAD_WEIGHTS 22  /* [T, k] float: dL/dweights */
#define BINDING_GRAD_LOGITS 23   /* [T, E] float: dL/dlogits */
/* The routing modes' scratch: DECISION_HEADER scalars, then SEQUENCE and BATCH: mean logits
 * [sequences, E] (and running counts); SINKHORN: see SINKHORN_SCRATCH_FLOATS; EXPERT_CHOICE:
 * each expert's ranking key of each token [T, E], then CHOICE_SCRATCH_WORDS. */
#define BINDING_DECISIONS 24
#define BINDING_NOISE_STD 25     /* [E] or (learned) [T, E] float: the Gaussian noise's std */
#define BINDING_NOISE_WEIGHTS 26 /* [d, E] float: W_noise of the learned std */
#define BINDING_EXPERT_LOSS 27   /* [T] float: a caller's per-token loss; then [E] sums per
                                    expert; then [stat_blocks, E] partial sums */
#define BINDING_GRAD_NOISE 28    /* losses: dL/dnoise_std [E] or dL/dW_noise [d, E], then the
                                    per-(token, expert) dL/dstd [T, E] */
/* EXPERT_CHOICE: [T, E] int, the rows of the experts that took each token, ascending expert,
 * then -1, so that combine reads a token's few rows instead of E columns. */
#define BINDING_COMPACT_ROWS 29
#define BINDING_ROUTER_WEIGHTS 30 /* [E, d] f32: W_router of the router projection */
#define BINDING_GRAD_COMBINED 31  /* [T, d] hidden_type words: the losses' dL/dcombined */
/* The layer's experts (moevk_layer): weights in the layer's weight_type (f32 words, or 16-bit
 * pairs in 32-bit words), biases f32, and the f32 scratch between their stages. */
#define BINDING_EXPERT_GATE 32    /* [E, f, d]: SwiGLU's gate projection */
#define BINDING_EXPERT_UP 33      /* [E, f, d]: the up projection (an MLP's first) */
#define BINDING_EXPERT_DOWN 34    /* [E, d, f]: the down projection */
#define BINDING_EXPERT_BIAS 35    /* f32: gate [E, f], up [E, f], down [E, d] */
#define BINDING_INTERMEDIATE 36   /* [rows, f] f32: each dispatched row's activation */
#define BINDING_TILES 37          /* the tile map (see TILE_*) */
#define BINDING_SHARED_GATE 38    /* [fs, d]: the shared experts' FFN, as the experts' */
#define BINDING_SHARED_UP 39      /* [fs, d] */
#define BINDING_SHARED_DOWN 40    /* [d, fs] */
#define BINDING_SHARED_BIAS 41    /* f32: gate [fs], up [fs], down [d] */
#define BINDING_SHARED_INTERMEDIATE 42 /* [T, fs] f32 */
#define BINDING_SHARED_OUT 43     /* [T, d] f32: the shared experts' output, gated */
#define BINDING_SHARED_GATE_WEIGHTS 44 /* [d] f32: Qwen2-MoE's shared_expert_gate */
#define BINDING_SHARED_SCALE 45   /* [T] f32: sigmoid(x . shared_expert_gate) per token */
#define BINDING_TOKEN_SCORES 46   /* [T, 3] f32: each token's energy, entropy, top-1 probability */
/* The routing profile (profile.comp): each valid token's five measures [T, PROFILE_MEASURES]
 * f32, then the header, histograms and co-selection counts the host reads (PROFILE_*). */
#define BINDING_PROFILE_MEASURES 47
#define BINDING_PROFILE 48
/* [T] vec4, for the token scores and the profile (FLAG_TOKEN_SCORES, FLAG_PROFILE): each valid
 * token's two largest routing probabilities and its energy, from scores_topk's pass over it. */
#define BINDING_ROW_MEASURES 49
/* The layer's backward (moevk_layer_backward), all f32: dL/doutput [T, d] as given; each
 * dispatched row's share of it, w * dL/doutput [rows, d]; the up projection's pre-activations
 * [rows, f] and SwiGLU's gate's (grad_pre_stride floats on), kept by the forward, then their
 * gradients (2 grad_pre_stride on); dL/d(dispatched rows) [rows, d]; dL/dx [T, d]; and the
 * parameters' gradients in the layouts of the weights (and biases) they belong to. */
#define BINDING_GRAD_OUTPUT 50
#define BINDING_GRAD_EXPERT_OUT 51
#define BINDING_GRAD_PRE 52
#define BINDING_GRAD_ROWS 53
#define BINDING_GRAD_HIDDEN 54
#define BINDING_GRAD_EXPERT_GATE 55 /* [E, f, d] */
#define BINDING_GRAD_EXPERT_UP 56   /* [E, f, d] */
#define BINDING_GRAD_EXPERT_DOWN 57 /* [E, d, f] */
#define BINDING_GRAD_EXPERT_BIAS 58 /* gate [E, f], up [E, f], down [E, d] */
#define BINDING_GRAD_ROUTER 59      /* [E, d]: dL/dW_g */
/* The optimizer (moevk_layer_optimizer_step): f32 master weights, AdamW's first and second
 * moments, every parameter one after another (OPT_PARAM_* order), and the gradients' squares'
 * partial sums, one per block of OPT_BLOCK entries. */
#define BINDING_OPT_MASTER 60
#define BINDING_OPT_M 61
#define BINDING_OPT_V 62
#define BINDING_OPT_PARTIALS 63
/* The shared experts' backward: their pre-activations and gradients [2, T, fs] (as
 * BINDING_GRAD_PRE for the routed rows), their parameters' gradients in the layouts of their
 * weights, the gate's gradient [d] and each token's dL/dz of the gate [T]. */
#define BINDING_GRAD_SHARED_PRE 64
#define BINDING_GRAD_SHARED_GATE 65 /* [fs, d] */
#define BINDING_GRAD_SHARED_UP 66   /* [fs, d] */
#define BINDING_GRAD_SHARED_DOWN 67 /* [d, fs] */
#define BINDING_GRAD_SHARED_BIAS 68 /* gate [fs], up [fs], down [d] */
#define BINDING_GRAD_SHARED_EXPERT_GATE 69
#define BINDING_GRAD_SHARED_DZ 70
/* The route's noise: Philox's counter words and key, and the amount (NOISE_STATE_*), written
 * by the host before each route (or recorded with it into an application's command buffer),
 * so that a recorded route serves every training step. */
#define BINDING_NOISE_STATE 71
#define BINDING_COUNT 72
#define NOISE_STATE_ROW_OFFSET 0u
#define NOISE_STATE_STEP 1u
#define NOISE_STATE_LAYER 2u
#define NOISE_STATE_SEED_LOW 3u
#define NOISE_STATE_SEED_HIGH 4u
#define NOISE_STATE_AMOUNT 5u /* float bits: the std, jitter's epsilon, Gumbel's scale */
#define NOISE_STATE_WORDS 8u
#define OPT_PARAM_ROUTER 0u
#define OPT_PARAM_GATE 1u
#define OPT_PARAM_UP 2u
#define OPT_PARAM_DOWN 3u
#define OPT_PARAM_BIAS 4u
#define OPT_PARAM_SHARED_GATE 5u
#define OPT_PARAM_SHARED_UP 6u
#define OPT_PARAM_SHARED_DOWN 7u
#define OPT_PARAM_SHARED_BIAS 8u
#define OPT_PARAM_SHARED_EXPERT_GATE 9u
#define OPT_PARAMS 10u
#define OPT_BLOCK 4096u
#define OPT_PHASE_WIDEN 0u  /* master = the stored weights, widened */
#define OPT_PHASE_NORM 1u   /* the gradient's squares, summed per block */
#define OPT_PHASE_UPDATE 2u /* the step: master, moments, and the stored weights from master */
/* grad_expert_weights.comp's two products: dW_down, and dW_up with dW_gate; grad_router.comp's:
 * dW_g, and the projection's share of dL/dx. */
#define GRAD_MATRIX_DOWN 0u
#define GRAD_MATRIX_GATE_UP 1u
#define GRAD_MATRIX_ROUTER 2u
#define GRAD_MATRIX_ROUTER_HIDDEN 3u

/* The routing profile's measures of each token (moevk_profile_measure in moevk.h) and their
 * histograms: PROFILE_HISTOGRAM_WORDS(bins) uint counts per measure (below the lower bound,
 * bins equal bins, at or above the upper bound). BINDING_PROFILE's uint words: the header
 * (bounds given by the host, the energy threshold and count of the drift's tail, the measures'
 * extremes as order-preserving uints, the bounds the histograms used), from PROFILE_HISTOGRAMS
 * the histograms of the five measures, each PROFILE_HISTOGRAM_WORDS(PROFILE_MAX_BINS) apart,
 * then from PROFILE_PAIRS the co-selection counts [E, E] (TOKEN mode, k >= 2). */
#define PROFILE_MEASURES 5
#define PROFILE_MAX_BINS 256u
#define PROFILE_HISTOGRAM_WORDS(bins) ((bins) + 2u)
#define PROFILE_GIVEN_LOWER 0u   /* [5] float: FLAG_PROFILE_BOUNDS */
#define PROFILE_GIVEN_UPPER 5u   /* [5] float */
#define PROFILE_TAIL_THRESHOLD 10u /* float: FLAG_PROFILE_TAIL counts energies above it */
#define PROFILE_TAIL_COUNT 11u   /* uint */
#define PROFILE_LEAST 12u        /* [5] uint: each measure's least value, order-preserving */
#define PROFILE_GREATEST 17u     /* [5] uint: its greatest */
#define PROFILE_USED_LOWER 22u   /* [5] float: the bounds the histograms used */
#define PROFILE_USED_UPPER 27u   /* [5] float */
#define PROFILE_HEADER_WORDS 32u
#define PROFILE_HISTOGRAMS PROFILE_HEADER_WORDS
#define PROFILE_PAIRS (PROFILE_HISTOGRAMS + PROFILE_MEASURES * PROFILE_HISTOGRAM_WORDS(PROFILE_MAX_BINS))
/* Phases of the profile stage: each valid token's measures (and their extremes, the tail count
 * and the co-selection pairs), then their histograms. */
#define PROFILE_PHASE_MEASURES 0u
#define PROFILE_PHASE_HISTOGRAMS 1u

/* The expert FFN's tiles (shaders/ffn.glsl): TILE_ROWS dispatched rows of one expert by
 * TILE_COLUMNS outputs each, TILE_DEPTH deep per step through shared memory, computed by
 * FFN_WORKGROUP_SIZE invocations (FFN_THREAD_ROWS x FFN_THREAD_COLUMNS outputs each). The tile
 * map (expert_tiles.comp) holds the up projection's indirect dispatch arguments (x, y, z) at
 * word TILE_ARGS_UP, the down projection's at TILE_ARGS_DOWN, then from word TILE_ENTRIES one
 * uvec4 per tile: expert, first row, end row, 0. */
#define TILE_ROWS 64u
#define TILE_COLUMNS 64u
#define TILE_DEPTH 16u
#define FFN_WORKGROUP_SIZE 256u
#define FFN_THREAD_ROWS 4u
#define FFN_THREAD_COLUMNS 4u
#define TILE_ARGS_UP 0u
#define TILE_ARGS_DOWN 4u
#define TILE_ENTRIES 8u
/* Decode (a call of at most MATVEC_ROWS tokens, FLAG_FFN_MATVEC): tiles of MATVEC_ROWS rows,
 * each workgroup MATVEC_COLUMNS outputs of every row, MATVEC_LANES invocations sharing each
 * output's dot product (shaders/ffn_matvec.glsl), so that each weight is read once. */
#define MATVEC_ROWS 8u
#define MATVEC_COLUMNS 16u
#define MATVEC_LANES 16u
/* Dispatches are at most this many tiles high or wide (Vulkan promises 65535 workgroups). */
#define MAX_TILES 65535u

/* Activations (moevk_activation in moevk.h). */
#define ACTIVATION_SWIGLU 0u
#define ACTIVATION_GELU 1u
#define ACTIVATION_GELU_TANH 2u
#define ACTIVATION_RELU 3u

/* The decisions' header: Sinkhorn's shift of the logits, iterations run, last mean change,
 * whether the iteration has stopped (1.0) or goes on (0.0), the valid rows (T') and live
 * experts (E') the factors are normalised by, and from word DECISION_ARGS the indirect dispatch
 * arguments (uint x, y, z) of the next iteration's three phases: zero groups once it stopped. */
#define DECISION_SHIFT 0
#define DECISION_ITERATIONS 1
#define DECISION_ERROR 2
#define DECISION_DONE 3
#define DECISION_ROWS 4
#define DECISION_COLUMNS 5
#define DECISION_ARGS 8
#define DECISION_HEADER 20

/* SINKHORN's scratch after the header, in floats (T tokens, E experts, B = ceil(T / 64) blocks
 * of 64 rows): d1 [E], d0 [T], the last change of each d1 [E], each expert's liveness [E], each
 * block's largest logit and valid rows [B, 2], and the blocks' column sums [B, E]. */
#define SINKHORN_BLOCK_ROWS WORKGROUP_SIZE /* one row per invocation of a block's workgroup */
#define SINKHORN_SCRATCH_FLOATS(T, E, B) (3u * (E) + (T) + 2u * (B) + (B) * (E))

/* Phases of the Sinkhorn stage (shaders/sinkhorn.comp): three to start, then three per
 * iteration, each in a dispatch of its own, so that no invocation loops over all T * E kernel
 * entries (see LOOP_BUDGET) and the sums use the whole device. */
#define SINKHORN_PHASE_SETUP_ROWS 0u    /* grid: blocks; block maxima, valid rows, liveness */
#define SINKHORN_PHASE_SETUP_COLUMNS 1u /* grid: experts; liveness over blocks, d1 = 1 */
#define SINKHORN_PHASE_SETUP_TOTALS 2u  /* one workgroup: shift, T', E', the header */
#define SINKHORN_PHASE_ROWS 3u          /* grid: blocks; d0, then the blocks' column sums */
#define SINKHORN_PHASE_COLUMNS 4u       /* grid: experts; d1 and its change */
#define SINKHORN_PHASE_CHECK 5u         /* one workgroup: mean change, iterations, stop */
#define SINKHORN_ITERATION_PHASES 3u    /* ROWS, COLUMNS, CHECK: their arguments in this order */

/* EXPERT_CHOICE's scratch after the keys [T, E], in 32-bit words (B = ceil(T /
 * choice_block_tokens) blocks of tokens): the four radix rounds' histograms [4, E, 256], each
 * expert's selection state [E, 4] (CHOICE_STATE_*), and each (expert, block)'s two counts
 * [E, B, 2] (the equal and the taken keys; after the scan, those before the block). */
#define CHOICE_GPU_BLOCK_TOKENS 1024u  /* moevk_router_info.choice_block_tokens 0 on a GPU */
#define CHOICE_CPU_BLOCK_TOKENS 16384u /* and on a CPU */
#define CHOICE_MAX_BLOCK_TOKENS 262144u
#define CHOICE_DIGITS 256u
#define CHOICE_ROUNDS 4u
#define CHOICE_STATE_WORDS 4u
/* Each expert's histograms and state, which the first phase clears. */
#define CHOICE_EXPERT_WORDS (CHOICE_ROUNDS * CHOICE_DIGITS + CHOICE_STATE_WORDS)
#define CHOICE_SCRATCH_WORDS(E, B) (CHOICE_EXPERT_WORDS * (E) + 2u * (E) * (B))
#define CHOICE_STATE_PREFIX 0u /* the threshold's bits found so far */
#define CHOICE_STATE_MASK 1u   /* which bits those are */
#define CHOICE_STATE_NEEDED 2u /* keys equal to the threshold still to take, in token order */
#define CHOICE_STATE_RULE 3u   /* CHOICE_SELECT, CHOICE_TAKE_ALL or CHOICE_TAKE_NONE */
#define CHOICE_SELECT 0u
#define CHOICE_TAKE_ALL 1u  /* no more eligible keys than the capacity */
#define CHOICE_TAKE_NONE 2u /* capacity 0, or no eligible key */

/* Phases of the expert choice stage (shaders/expert_choice.comp), each a dispatch of its own so
 * that the tokens spread over the device: the scratch zeroed; then for each of the four 8-bit
 * digits of the threshold from the top, a histogram over (block, expert) workgroups and a
 * select over the experts; each (block, expert)'s equal and taken keys; a scan of those over
 * each expert's blocks; the taken tokens written; each token's rows. */
#define CHOICE_PHASE_CLEAR 0u
#define CHOICE_PHASE_HISTOGRAM 1u /* + round (0 to 3): grid over (block, expert) */
#define CHOICE_PHASE_SELECT 5u    /* + round: grid over the experts */
#define CHOICE_PHASE_COUNT 9u     /* grid over (block, expert) */
#define CHOICE_PHASE_SCAN 10u     /* grid: experts */
#define CHOICE_PHASE_TAKE 11u     /* grid over (block, expert) */
#define CHOICE_PHASE_ROWS 12u     /* grid over the tokens */

/* The most workgroups moevk puts in a dispatch's x (Vulkan promises 65535); loops over more
 * blocks or experts stride by the grid. */
#define MAX_GROUPS_X 65535u

/* Noise kinds and element types as the shaders see them: the values of moevk_noise_kind and
 * moevk_dtype in moevk.h (engine/pipelines.c asserts that they agree). */
#define NOISE_NONE 0u
#define NOISE_JITTER 1u
#define NOISE_GAUSSIAN 2u
#define NOISE_GUMBEL 3u
#define DTYPE_F32 0u
#define DTYPE_F16 1u
#define DTYPE_BF16 2u
#define DTYPE_Q8_0 3u
#define DTYPE_Q4_0 4u
#define DTYPE_Q4_K 5u
#define DTYPE_Q6_K 6u
#define DTYPE_Q5_0 7u
#define DTYPE_Q5_K 8u

/* Row flags written by scores_topk. */
#define ROW_VALID 0u
#define ROW_NONFINITE 1u
#define ROW_MASKED 2u

/* Scalars after the E per-expert probability sums in the stats buffers. */
#define STAT_LSE_SQUARED 0
#define STAT_ENTROPY 1
#define STAT_NONFINITE 2
#define STAT_MASKED 3
#define STAT_UNROUTED 4 /* valid rows with no kept choice */
#define STAT_LSE 5      /* sum of the raw logsumexp */
#define STAT_SCALARS 6

/* Bits of the push-constant `flags`. */
#define FLAG_HAS_BIAS 1u
#define FLAG_RENORMALIZE 2u
#define FLAG_SIGMOID 4u
#define FLAG_DROPLESS 8u
#define FLAG_DROP_BY_SCORE 16u
#define FLAG_NOISY_SCORES 32u /* weights and statistics from the noisy logits, not the clean */
#define FLAG_GRAD_WEIGHTS 64u  /* losses: the caller gave dL/dweights */
#define FLAG_GRAD_COMBINED 128u /* losses: the caller gave dL/dcombined (adds to dL/dweights) */
#define FLAG_SEQUENCE_DECISIONS 256u /* SEQUENCE, BATCH: tokens take their sequence's decision */
#define FLAG_SINKHORN 512u /* selection by the Sinkhorn-balanced scores */
#define FLAG_EXPERT_CHOICE 1024u /* experts choose tokens (expert_choice.comp) */
#define FLAG_NOISE_STD_PER_EXPERT 2048u /* Gaussian std from noise_std [E] */
#define FLAG_NOISE_STD_LEARNED 4096u    /* Gaussian std from noise_std [T, E] (noise_std.comp) */
#define FLAG_GRAD_NOISE 8192u /* losses: the gradient with respect to the Gaussian noise's std */
#define FLAG_PROJECT_LOGITS 16384u /* the route computes its logits (router_projection.comp) */
#define FLAG_COUNTS_ON_DEVICE 32768u /* losses: the valid rows and assignments from the device */
#define FLAG_FFN_BIASES 65536u /* the layer's FFNs have biases */
#define FLAG_SHARED_EXPERT 131072u /* the layer's combine adds the shared experts' output */
#define FLAG_SHARED_GATE 262144u /* the shared output is scaled by sigmoid(x . w) */
#define FLAG_BIAS_ON_SCORES 524288u /* selection keys: sigmoid score + bias (DeepSeek-V3) */
#define FLAG_FFN_MATVEC 1048576u /* the layer's products in decode tiles (MATVEC_ROWS rows) */
#define FLAG_TOKEN_SCORES 2097152u /* the route writes each token's scores (token_scores.comp) */
#define FLAG_PROFILE 4194304u        /* the route measures its batch's profile (profile.comp) */
#define FLAG_PROFILE_BOUNDS 8388608u /* the histograms' bounds are given (else the batch's) */
#define FLAG_PROFILE_TAIL 16777216u  /* count the energies above the header's threshold */
#define FLAG_PROFILE_PAIRS 33554432u /* count the co-selected pairs of experts */
#define FLAG_KEEP_PRE 67108864u /* a trainable layer's forward keeps the pre-activations */
#define FLAG_FUSED_FRONT_END 134217728u /* top-k counts the blocks; the assignment scans them */

/* Phases of the losses stage (shaders/losses.comp), in the order they run. */
#define LOSS_PHASE_THRESHOLDS 0u
#define LOSS_PHASE_PARTIALS 1u
#define LOSS_PHASE_COLUMNS 2u
#define LOSS_PHASE_CV2_SLOPES 3u
#define LOSS_PHASE_SEQUENCES 4u
#define LOSS_PHASE_SEQUENCE_TOKENS 5u
#define LOSS_PHASE_SEQUENCE_TOTALS 6u
#define LOSS_PHASE_WEIGHTS_BACKWARD 7u
#define LOSS_PHASE_LOGITS_BACKWARD 8u
#define LOSS_PHASE_NOISE_SLOPE 9u   /* learned std: dL/dstd times softplus' (x . W_noise) */
#define LOSS_PHASE_NOISE_REDUCE 10u /* dL/dnoise_std [E] or dL/dW_noise [d, E], by TOKEN_CHUNK */
#define LOSS_PHASE_COUNTS 11u /* a recorded route: its valid rows and assignments (first) */
#define LOSS_PHASE_LOAD_TERMS 12u /* each (token, expert)'s load term into grad_logits [T, E] */

/* Offsets in the losses' totals (BINDING_LOSS_TOTALS), in units of E floats; then the
 * sequences' totals [T / S] from LOSS_TOTAL_SEQUENCES * E, each token's sequence-loss term
 * [T] from LOSS_TOTAL_SEQUENCES * E + T, and from LOSS_TOTAL_SEQUENCES * E + 2T a recorded
 * route's valid rows (float) and assignments (uint bits) (LOSS_PHASE_COUNTS). */
#define LOSS_TOTAL_IMPORTANCE 0u
#define LOSS_TOTAL_LOAD 1u
#define LOSS_TOTAL_IMPORTANCE_SLOPE 2u
#define LOSS_TOTAL_LOAD_SLOPE 3u
#define LOSS_TOTAL_SEQUENCES 4u

/* Specialization constant ids. */
#define SPEC_WORKGROUP_SIZE 0
#define SPEC_CHOICES 1 /* columns of the per-token arrays: k, or E in EXPERT_CHOICE */
#define SPEC_NUM_EXPERTS 2
#define SPEC_DTYPE 3 /* 0 f32, 1 f16, 2 bf16 (hidden states or logits, per stage) */
#define SPEC_HIDDEN_DTYPE 4 /* the hidden states' type, for stages whose DTYPE is the logits' */
#define SPEC_GROUPS 5      /* group-limited routing: expert groups (1: off) */
#define SPEC_TOPK_GROUPS 6 /* groups kept per token */
#define SPEC_SELECTION_K 7 /* experts scores_topk selects per token: k (1 in EXPERT_CHOICE,
                              where it selects none) */
#define SPEC_ACTIVATION 8  /* the layer's FFN activation (ACTIVATION_*) */
#define SPEC_SUBGROUP_LANES 9 /* a kernel's subgroup variant: the subgroup size it runs at */
#define MAX_GROUPS 32      /* the kept groups of a token fit one 32-bit mask */

/* Workgroup size of every stage: shared-memory reductions, no subgroup assumptions (but in the
 * subgroup variants, whose subgroup size the engine sets: shaders/lanes.glsl). On
 * lavapipe the score policy's select widens to at most
 * WIDE_WORKGROUP_SIZE when max_tokens needs it (engine/loop_budget.c: stage_workgroup_size). */
#define WORKGROUP_SIZE 64
#define WIDE_WORKGROUP_SIZE 256

/* The fused front end (FLAG_FUSED_FRONT_END: scores + top-k count each choice into the block
 * counts, and every workgroup of the assignment sums the [blocks, E] table itself) saves two
 * dispatches and barriers, but repeats the scan in each of the blocks' workgroups: blocks^2 * E
 * additions in all. Routes whose scan is at most this much work take it; larger ones count and
 * scan in dispatches of their own (bucket_count.comp, bucket_scan.comp). Measured on lavapipe,
 * where the fused bucketing was faster up to 32 blocks of E = 256 and slower from 64. */
#define FUSED_FRONT_END_WORK 262144u

/* The most loop iterations one invocation may run in one dispatch, all its loops together.
 * lavapipe (Mesa's gallivm) ends every loop of an invocation once its loops have run 65535
 * iterations in all (LP_MAX_TGSI_LOOP_ITERATIONS, shared by every loop of a shader), and the
 * shader then carries on with wrong values; stages whose work per invocation grows with T split
 * it over workgroups or over dispatches so that it stays below this, with room to spare. */
#define LOOP_BUDGET 32768u

/* Tokens that one dispatch of a sequential sum over tokens walks (sequence means, the noise
 * std's gradient): longer sums carry their running value into the next dispatch, so that the
 * order (token order) and so the bits stay the same. */
#define TOKEN_CHUNK 16384u

#endif
