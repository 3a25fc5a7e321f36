"""A literal transcription of the reference loop of spec ETC.md ("Consistent trend predictor").

Deliberately written as one flat loop with plain variables, independently of etcdiff's policy classes, so
that the tests compare etcdiff against the spec and not against itself.
"""



def reference_etc_loop(model, scheduler, latents, N, tau, n=6, alpha=0.5):
    """Returns (final latents, computed step indices)."""
    scheduler.set_timesteps(N, device=latents.device)
    k, d, g, pre = 0, None, None, None
    left = 0
    computed = []
    x = latents
    for t_idx, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        if t_idx < n or t_idx == N - 1:
            eps = model(x_in, t)
            computed.append(t_idx)
            if t_idx == 1:
                d = eps - pre
            elif t_idx > 1:
                d = (1 - alpha) * d + alpha * (eps - pre)
            pre = eps
        elif left > 0:
            eps = pre + g
            pre = eps
            left -= 1
        else:
            eps = model(x_in, t)
            computed.append(t_idx)
            d = (1 - alpha) * d + alpha * (eps - pre)
            err = (eps - pre - d).abs().mean().item()
            k = k + 1 if err < tau else max(k - 1, 0)
            if k != 0:
                g = d / k
            pre = eps
            left = k
        x = scheduler.step(eps, t, x, return_dict=False)[0]
    return x, computed
