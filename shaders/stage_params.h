/* How a stage's header describes its interface, for C and GLSL alike:
 *   <KERNEL>_BUFFERS(X)       the router's named buffers (BINDING_<NAME>) the shader declares,
 *                             as X(NAME) ...: its descriptor set binds these and no others;
 *   <KERNEL>_PARAMS(U, F, A)  its push constants, as U(name) for a uint, F(name) for a float,
 *                             A(name) for a device address (uvec2 in GLSL, an 8-byte aligned
 *                             uint64_t in C: both pad alike; addresses first wastes nothing).
 * Field names are those of the router's per-call plan (route_plan in engine/internal.h), from which the engine
 * fills them. The groups below are shared by the stages that include the same GLSL helpers. */
#ifndef MOEVK_STAGE_PARAMS_H
#define MOEVK_STAGE_PARAMS_H

/* noise.glsl (which also reads flags and num_experts, and the noise's step, seed and amount
 * from BINDING_NOISE_STATE: they change from call to call without a new recording). */
// clang-format off
#define NOISE_PARAMS(U, F, A) U(noise_kind)

/* scores.glsl: the decision rows and the probabilities (with num_experts, flags and noise). */
#define SCORE_PARAMS(U, F, A) U(mode_param) F(temperature)
// clang-format on

#endif
