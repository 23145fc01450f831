/*
 * Optimizers (SGD with momentum and weight decay, Adam), learning-rate
 * schedules (constant, step, cosine, with linear warm-up) and gradient
 * clipping by global norm.
 *
 * A parameter group is a list of (value, gradient, state) float arrays; the
 * optimizer updates values in place from gradients and keeps its moment
 * buffers in the state the caller allocates (kt_optim_state_floats() per
 * parameter element). Everything is plain arithmetic in a fixed order, so a
 * run is deterministic.
 */
#ifndef KILN_RUNTIME_TRAIN_OPTIM_H
#define KILN_RUNTIME_TRAIN_OPTIM_H

#include <stdint.h>

typedef enum kt_optim_kind { KT_SGD = 0, KT_ADAM } kt_optim_kind;
typedef enum kt_sched_kind { KT_SCHED_CONST = 0, KT_SCHED_STEP, KT_SCHED_COSINE } kt_sched_kind;

typedef struct kt_optim {
    kt_optim_kind kind;
    float lr;                /* base learning rate */
    float momentum;          /* SGD; 0 = plain SGD */
    int nesterov;            /* SGD */
    float weight_decay;      /* L2 added to the gradient (SGD) / decoupled (Adam: AdamW) */
    float beta1, beta2, eps; /* Adam */
    float clip_norm;         /* > 0: scale gradients so their global L2 norm <= clip_norm */
    kt_sched_kind sched;
    int step_every; /* STEP: multiply by step_gamma every step_every epochs */
    float step_gamma;
    int warmup_steps; /* linear warm-up from 0 over this many steps */
    float min_lr;     /* COSINE: the floor */
} kt_optim;

/* SGD, lr 0.01, momentum 0.9, Adam betas 0.9/0.999, eps 1e-8, constant. */
void kt_optim_defaults(kt_optim *o);

/* Floats of state per parameter element (SGD 1, Adam 2). */
int kt_optim_state_floats(const kt_optim *o);

/* One parameter tensor: n values, their gradient, optimizer state
 * (n * kt_optim_state_floats(), zeroed before the first step), and
 * whether weight decay applies to it (usually not to biases and norms). */
typedef struct kt_param {
    float *value;
    float *grad;
    float *state;
    int64_t n;
    int decay;
} kt_param;

/* The learning rate at `step` (from 0) of `total_steps`, in epoch `epoch`. */
float kt_lr_at(const kt_optim *o, int64_t step, int64_t total_steps, int epoch);

/* The global L2 norm of all gradients. */
double kt_grad_norm(const kt_param *p, int np);

/* Clips (when configured) and applies one update with learning rate lr;
 * `t` is the 1-based step count (Adam's bias correction). Returns the
 * gradient norm before clipping when clipping is configured, else 0 (it
 * is not computed then). */
double kt_optim_step(const kt_optim *o, kt_param *p, int np, float lr, int64_t t);

#endif
