"""mctx's side of bench_mcts.py: runs in the mctx virtualenv (JAX on CPU, no torch).

    python benchmarks/mcts_peers/mctx_side.py JOB.json

Each case jits the whole policy call (``mctx.muzero_policy`` or
``mctx.gumbel_muzero_policy`` plus the root summary) once; the first call,
which compiles, is not timed. Every timed call blocks until its outputs are ready.
"""

from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mctx  # noqa: E402
import numpy as np  # noqa: E402

import net  # noqa: E402


def recurrent_fn(params, rng_key, action, embedding):
    del rng_key
    k = params["W_p"].shape[0]
    x = jnp.concatenate([embedding, jax.nn.one_hot(action, k, dtype=embedding.dtype)], -1)
    nxt = jnp.tanh(jax.nn.relu(x @ params["W1"].T + params["b1"]) @ params["W2"].T + params["b2"])
    out = mctx.RecurrentFnOutput(
        reward=nxt @ params["w_r"],
        discount=jnp.full(nxt.shape[:1], net.DISCOUNT, nxt.dtype),
        prior_logits=nxt @ params["W_p"].T,
        value=nxt @ params["w_v"],
    )
    return out, nxt


def make_policy(s: dict, explore: bool):
    if s["algorithm"] == "puct":
        policy = functools.partial(
            mctx.muzero_policy, recurrent_fn=recurrent_fn, num_simulations=s["num_simulations"],
            dirichlet_fraction=s["dirichlet_fraction"] if explore else 0.0, dirichlet_alpha=s["dirichlet_alpha"],
            pb_c_init=s["pb_c_init"], pb_c_base=s["pb_c_base"], temperature=1.0,
        )
    else:
        policy = functools.partial(
            mctx.gumbel_muzero_policy, recurrent_fn=recurrent_fn, num_simulations=s["num_simulations"],
            max_num_considered_actions=s["max_considered_actions"], gumbel_scale=s["gumbel_scale"] if explore else 0.0,
            qtransform=functools.partial(mctx.qtransform_completed_by_mix_value,
                                         value_scale=s["c_scale"], maxvisit_init=s["c_visit"]),
        )

    def run(params, rng_key, root):
        out = policy(params, rng_key, root)
        summary = out.search_tree.summary()
        return out.action, out.action_weights, summary.visit_counts, summary.value

    return jax.jit(run)


def main() -> None:
    job = net.read_spec()
    arrays = net.load(job["weights"])
    rows = []
    for case in job["cases"]:
        k, b = case["k"], case["b"]
        w = net.weights_for(arrays, k)
        s = net.settings(case["algorithm"], k)
        params = {name: jnp.asarray(w[name]) for name in ("W1", "b1", "W2", "b2", "w_r", "w_v", "W_p")}
        root = mctx.RootFnOutput(
            prior_logits=jnp.asarray(w["root_logits"][:b]), value=jnp.asarray(w["root_value"][:b]),
            embedding=jnp.asarray(w["root_embedding"][:b]),
        )
        # the network check: one recurrent step on fixed inputs against the numpy reference
        latent, action = net.probe_inputs(w)
        out, nxt = jax.jit(recurrent_fn)(params, None, jnp.asarray(action), jnp.asarray(latent))
        ref = net.recurrent_numpy(w, latent, action)
        probe_err = max(float(np.abs(np.asarray(a) - r).max()) for a, r in
                        zip((nxt, out.reward, out.value, out.prior_logits), ref))

        f = make_policy(s, explore=True)
        keys = list(jax.random.split(jax.random.PRNGKey(0), 64))
        start = time.perf_counter()
        jax.block_until_ready(f(params, keys[0], root))
        compile_s = time.perf_counter() - start
        counter = iter(range(1, 10**9))
        times = net.time_calls(lambda: jax.block_until_ready(f(params, keys[next(counter) % 64], root)),
                               job["warmup"], job["repeats"], job["budget_s"])
        # sanity: one search without root noise on the same roots (not timed)
        _, _, visits, value = jax.block_until_ready(make_policy(s, explore=False)(params, keys[0], root))
        rows.append({
            "system": "mctx", "algorithm": case["algorithm"], "k": k, "b": b, "ms": times,
            "compile_s": compile_s, "probe_err": probe_err,
            "sanity": {"visits": np.asarray(visits).astype(int).tolist(),
                       "root_value": np.asarray(value).astype(float).tolist()},
        })
        print(f"mctx {case['algorithm']} K={k} B={b}: {net.median(times):.2f} ms (compile {compile_s:.1f} s)",
              file=sys.stderr, flush=True)
    net.emit({
        "rows": rows,
        "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
                     "mctx": getattr(mctx, "__version__", "?"), "numpy": np.__version__},
        "devices": [str(d) for d in jax.devices()],
        "env": {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS")},
    })


if __name__ == "__main__":
    main()
