/* Optimizers, schedules, clipping (see optim.h). */
#include "optim.h"

#include <math.h>

void kt_optim_defaults(kt_optim *o)
{
    *o = (kt_optim){.kind = KT_SGD,
                    .lr = 0.01f,
                    .momentum = 0.9f,
                    .beta1 = 0.9f,
                    .beta2 = 0.999f,
                    .eps = 1e-8f,
                    .sched = KT_SCHED_CONST,
                    .step_every = 1,
                    .step_gamma = 0.1f};
}

int kt_optim_state_floats(const kt_optim *o)
{
    return o->kind == KT_ADAM ? 2 : 1;
}

float kt_lr_at(const kt_optim *o, int64_t step, int64_t total_steps, int epoch)
{
    double lr = o->lr;
    switch (o->sched) {
    case KT_SCHED_CONST:
        break;
    case KT_SCHED_STEP:
        if (o->step_every > 0) lr *= pow(o->step_gamma, epoch / o->step_every);
        break;
    case KT_SCHED_COSINE:
        if (total_steps > 0) {
            double f = (double)step / (double)total_steps;
            if (f > 1) f = 1;
            lr = o->min_lr + (o->lr - o->min_lr) * 0.5 * (1 + cos(M_PI * f));
        }
        break;
    }
    if (o->warmup_steps > 0 && step < o->warmup_steps)
        lr *= (double)(step + 1) / (double)o->warmup_steps;
    return (float)lr;
}

double kt_grad_norm(const kt_param *p, int np)
{
    double s = 0;
    for (int k = 0; k < np; k++)
        for (int64_t i = 0; i < p[k].n; i++) s += (double)p[k].grad[i] * p[k].grad[i];
    return sqrt(s);
}

double kt_optim_step(const kt_optim *o, kt_param *p, int np, float lr, int64_t t)
{
    /* a pass over every gradient: only when clipping needs it */
    const double norm = o->clip_norm > 0 ? kt_grad_norm(p, np) : 0.0;
    float scale = 1.0f;
    if (o->clip_norm > 0 && norm > o->clip_norm) scale = (float)(o->clip_norm / (norm + 1e-12));
    if (o->kind == KT_SGD) {
        for (int k = 0; k < np; k++) {
            float wd = p[k].decay ? o->weight_decay : 0.0f;
            float *v = p[k].value, *g = p[k].grad, *m = p[k].state;
            for (int64_t i = 0; i < p[k].n; i++) {
                float d = g[i] * scale + wd * v[i];
                if (o->momentum > 0) {
                    m[i] = o->momentum * m[i] + d;
                    d = o->nesterov ? d + o->momentum * m[i] : m[i];
                }
                v[i] -= lr * d;
            }
        }
    } else {
        const double bc1 = 1 - pow(o->beta1, (double)t), bc2 = 1 - pow(o->beta2, (double)t);
        const float step = (float)(lr * sqrt(bc2) / bc1);
        for (int k = 0; k < np; k++) {
            float wd = p[k].decay ? o->weight_decay : 0.0f;
            float *v = p[k].value, *g = p[k].grad, *m = p[k].state, *s = p[k].state + p[k].n;
            for (int64_t i = 0; i < p[k].n; i++) {
                float gi = g[i] * scale;
                m[i] = o->beta1 * m[i] + (1 - o->beta1) * gi;
                s[i] = o->beta2 * s[i] + (1 - o->beta2) * gi * gi;
                v[i] -= step * m[i] / (sqrtf(s[i]) + o->eps * (float)sqrt(bc2)) + lr * wd * v[i];
            }
        }
    }
    return norm;
}
