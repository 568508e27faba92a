"""Named presets: lists of ``key=value`` overrides applied on top of a config's defaults.

Sizes follow the spirit of DreamerV3's model sizes; ``default`` is the small
model tuned to train CartPole-v1 on two CPU cores in minutes (one torch thread: at
this width a second thread costs more in synchronisation than it saves; 63 value bins
instead of 255 make an update ~30% cheaper; a 5x continuation-loss weight, because
CartPole's rare terminations at the track's edge were otherwise never predicted); ``tiny`` exists
so tests and smoke runs finish in seconds.
"""

from __future__ import annotations

DREAMER_PRESETS: dict[str, list[str]] = {
    "tiny": [
        "model.rssm.deter=32", "model.rssm.hidden=32", "model.rssm.stoch=4", "model.rssm.classes=4",
        "model.units=32", "model.layers=1", "model.cnn_depth=4", "model.reward_bins=31",
        "behavior.units=32", "behavior.layers=1", "behavior.horizon=5", "behavior.critic_bins=31",
        "run.batch_size=4", "run.seq_len=8", "run.prefill=32", "run.train_ratio=64",
        "run.eval_episodes=2", "run.eval_every=100000000", "run.log_every=50", "run.checkpoint_every=100000000",
        "run.replay_chunk=32",
    ],
    "default": [
        "model.rssm.deter=128", "model.rssm.hidden=128", "model.rssm.stoch=8", "model.rssm.classes=8",
        "model.units=128", "model.layers=1", "model.cnn_depth=16", "model.lr=3e-4",
        "model.reward_bins=63", "model.cont_scale=5",
        "behavior.units=128", "behavior.layers=1", "behavior.actor_lr=1e-4", "behavior.critic_lr=3e-4",
        "behavior.gamma=0.99", "behavior.critic_bins=63",
        "run.steps=15000", "run.batch_size=16", "run.seq_len=32", "run.train_ratio=128", "run.threads=1",
        "run.eval_every=2500", "run.checkpoint_every=2500", "run.log_every=500",
    ],
    "xs": [
        "model.rssm.deter=256", "model.rssm.hidden=256", "model.rssm.stoch=32", "model.rssm.classes=16",
        "model.units=256", "model.layers=1", "model.cnn_depth=24",
        "behavior.units=256", "behavior.layers=1",
    ],
    "s": [],  # the dataclass defaults are DreamerV3's size S: deter 512, units 512, 2 layers, 32x32 latents
    "m": [
        "model.rssm.deter=1024", "model.rssm.hidden=640", "model.units=640", "model.layers=3",
        "model.cnn_depth=48", "behavior.units=640", "behavior.layers=3",
    ],
}

PLANET_PRESETS: dict[str, list[str]] = {
    "tiny": [
        "model.rssm.deter=32", "model.rssm.hidden=32", "model.rssm.stoch=4", "model.units=32", "model.layers=1",
        "model.cnn_depth=4", "model.reward_bins=31",
        "planner.horizon=5", "planner.candidates=32", "planner.elites=4", "planner.iterations=2",
        "run.batch_size=4", "run.seq_len=8", "run.prefill=32", "run.train_ratio=64",
        "run.eval_episodes=2", "run.eval_every=100000000", "run.log_every=50", "run.checkpoint_every=100000000",
        "run.replay_chunk=32",
    ],
    "default": [],  # the dataclass defaults are PlaNet's own (RSSM 200/30/200, CEM 12/1000/100/10)
}

MUZERO_PRESETS: dict[str, list[str]] = {
    "tiny": [
        "model.latent=8", "model.units=16", "model.layers=1", "model.bins=21", "search.num_simulations=4",
        "unroll=2", "td_steps=3",
        "run.seq_len=6", "run.batch_size=4", "run.num_envs=2", "run.prefill=4", "run.train_ratio=24",
        "run.eval_episodes=2", "run.eval_every=100000000", "run.log_every=50", "run.checkpoint_every=100000000",
        "run.replay_chunk=32",
    ],
    # CartPole on two CPU cores: latent 64, MLPs of 2 x 128, PUCT with 50 simulations, K = 5, n = 10,
    # batches of 128, 8 environments searched as one batch of roots (the dataclass defaults)
    "default": [],
}

PETS_PRESETS: dict[str, list[str]] = {
    "tiny": [
        "model.units=16", "model.layers=2", "particles=4", "fit_every=50", "max_epochs=5", "patience=2",
        "batch_size=16",
        "planner.horizon=5", "planner.candidates=16", "planner.elites=4", "planner.iterations=2",
        "run.prefill=50", "run.eval_episodes=1", "run.eval_every=100000000", "run.log_every=50",
        "run.checkpoint_every=100000000", "run.replay_chunk=32",
    ],
    # PETS sized for two CPU cores: narrower members and fewer candidates than the paper's. The horizon
    # stays long (30 steps = 1.5 s of Pendulum): with 15, a pendulum at rest at the bottom is never
    # swung up, since every short plan that pumps looks worse than pushing one way.
    "default": [
        "model.units=64", "model.layers=3", "particles=20", "batch_size=64",
        "planner.horizon=30", "planner.candidates=200", "planner.elites=20", "planner.iterations=5",
    ],
}
