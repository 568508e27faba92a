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
        "behavior.critic_bins=63",
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
# MinAtar's object channels as images (``[10, 10, C]``, read by :mod:`reverie.nn.grid`'s codec) decoded as a
# Bernoulli per cell and channel, with `default`'s sizes and DIAMOND's `default` prefill and evaluation schedule,
# so a Dreamer run and a DIAMOND run see the same data budget (docs/notes/diamond.md)
DREAMER_PRESETS["minatar"] = [
    *DREAMER_PRESETS["default"], "run.env=minatar:breakout", "run.obs=pixels", "model.image_loss=bernoulli",
    "run.prefill=2000", "run.eval_every=5000", "run.eval_episodes=10", "run.checkpoint_every=5000",
]
# The tiny model with the sequence dynamics of reverie.models.ssm / transformer_dynamics; any other preset
# takes ``model.dynamics=ssm`` or ``model.dynamics=transformer`` as an override.
DREAMER_PRESETS["tiny-ssm"] = [*DREAMER_PRESETS["tiny"], "model.dynamics=ssm", "model.ssm.layers=1"]
DREAMER_PRESETS["tiny-transformer"] = [*DREAMER_PRESETS["tiny"], "model.dynamics=transformer",
                                       "model.transformer.layers=1", "model.transformer.heads=2",
                                       "model.transformer.context=8"]

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

TDMPC2_PRESETS: dict[str, list[str]] = {
    "tiny": [
        "model.latent=16", "model.enc_units=16", "model.units=16", "model.num_q=2", "model.bins=21",
        "planner.candidates=32", "planner.elites=4", "planner.iterations=2", "planner.policy_candidates=4",
        "run.env=gym:Pendulum-v1", "run.batch_size=8", "run.prefill=50", "run.train_ratio=16",
        "run.eval_episodes=1", "run.eval_every=100000000", "run.log_every=50", "run.checkpoint_every=100000000",
        "run.replay_chunk=32",
    ],
    # Sized for two CPU cores (one torch thread): latent 64, MLPs of 128, otherwise TD-MPC2's: the 5 Q heads,
    # 101 bins, its planner (MPPI 512 x 6 x 3, 24 policy samples), batches of 256 sequences of 4 steps and
    # one update per agent step. On a loaded 2-core Xeon an update took 67 ms and a planned action 47 ms
    # (MLPs of 256: 188 ms and 155 ms), so 100k dmc steps (50k agent steps) take about 1.6 hours.
    "default": ["model.latent=64", "model.enc_units=128", "model.units=128"],
    # TD-MPC2's default 5M model (its config's model_size 5: latent 512, mlp 512, encoder 256, num_q 5):
    # the dataclass defaults
    "5m": [],
}

WORLDMODELS_PRESETS: dict[str, list[str]] = {
    # seconds on CartPole from 16x16 pixels: every stage runs, each for a unit or two
    "tiny": [
        "vae.z_size=4", "vae.depth=4", "vae.batch_size=8", "rnn.hidden=8", "rnn.mixtures=2", "rnn.batch_size=4",
        "vae_updates=4", "rnn_updates=4", "unit_updates=2", "population=4", "rollouts=1", "generations=2",
        "eval_every_generations=100", "dream_max_steps=20",
        "run.env=gym:CartPole-v1", "run.obs=pixels", "run.image_size=16", "run.time_limit=20",
        "run.prefill=40", "run.num_envs=2", "run.parallel_envs=false", "run.seq_len=8", "run.replay_chunk=16",
        "run.eval_episodes=1", "run.checkpoint_every=100000000",
    ],
    # CarRacing on two CPU cores: the paper's V and M (z 32, 256 LSTM units, 5 Gaussians) trained on 10,000
    # random frames, CMA-ES with 16 candidates x 2 episodes; the controller reads [z, h] with a bias and its
    # brake is clipped at zero, as the reference's (a zero output steers straight, half gas, no brake)
    "default": ["clip_dims=(2,)"],
    # VizDoom take-cover (the vizdoom package's gymnasium ids), the controller evolved only in the dream at the
    # paper's tau = 1.15; episodes of up to 2,100 steps, reward 1 per step survived. The reference's
    # controller: [z, c, h], no bias, one output with a dead zone (< -1/3 left, > 1/3 right, else no-op; the
    # gymnasium wrapper's action 0 is no-op, 1 MOVE_RIGHT, 2 MOVE_LEFT)
    "takecover": [
        "run.env=gym:vizdoom.gymnasium_wrapper:VizdoomTakeCover-v1", "run.obs=pixels", "run.prefill=10000",
        "evolve_in=dream", "dream_temperature=1.15", "dream_max_steps=2100",
        "controller_input=zch", "controller_bias=false", "action_bins=(2,0,1)",
    ],
    # the paper's sizes: 10,000 random rollouts of 1,000 steps, population 64 x 16 rollouts (CarRacing)
    "paper": [
        "vae.lr=1e-4", "vae.batch_size=100", "rnn.batch_size=100", "vae_updates=100000", "rnn_updates=20000",
        "population=64", "rollouts=16", "generations=2000", "eval_every_generations=25",
        "run.prefill=625000", "run.num_envs=16", "run.seq_len=999", "run.replay_chunk=1000", "clip_dims=(2,)",
    ],
}

DIAMOND_PRESETS: dict[str, list[str]] = {
    # seconds on MinAtar Breakout: a one-level U-Net of 8 channels, 2-step imagination
    "tiny": [
        "model.channels=(8,)", "model.depths=(1,)", "model.cond_dim=16", "model.reward_conv=(8,)",
        "model.reward_memory=16", "model.context=2",
        "behavior.units=16", "behavior.layers=1", "behavior.horizon=2", "behavior.critic_bins=21",
        "imagine_starts=4",
        "run.env=minatar:breakout", "run.obs=pixels", "run.batch_size=2", "run.seq_len=4", "run.prefill=32",
        "run.train_ratio=16", "run.eval_episodes=1", "run.eval_every=100000000", "run.log_every=50",
        "run.checkpoint_every=100000000", "run.replay_chunk=32", "run.parallel_envs=false",
    ],
    # MinAtar Breakout on two CPU cores (one torch thread): a two-level U-Net of 32 channels, one block per level,
    # the reward model's LSTM of 128, the actor-critic's MLPs of 128; DIAMOND's context (4 frames), sampler (EDM,
    # 3 Euler steps) and imagination (horizon 15, 16 trajectories per update). An update took 0.58 s on a loaded
    # 2-core Xeon (0.4 s of it imagining: 45 U-Net calls), so the 14,000 updates of 30k steps take about 2.3 hours
    "default": [
        "model.channels=(32,32)", "model.depths=(1,1)", "model.cond_dim=64", "model.reward_conv=(16,32)",
        "model.reward_memory=128",
        "behavior.units=128", "behavior.layers=1", "behavior.critic_bins=63", "imagine_starts=16",
        "denoiser_lr=3e-4", "reward_lr=3e-4",
        "run.env=minatar:breakout", "run.obs=pixels", "run.steps=30000", "run.batch_size=8", "run.seq_len=16",
        "run.prefill=2000", "run.train_ratio=64", "run.threads=1", "run.parallel_envs=false",
        "run.eval_every=5000", "run.eval_episodes=10", "run.checkpoint_every=5000", "run.log_every=500",
    ],
    # DIAMOND's published sizes (the dataclass defaults: U-Net 4 x 64 channels, 2 blocks per level, conditioning
    # 256, reward/end CNN 4 x 32 and LSTM 512, 4 frames of context), 100k steps, batches of 32: for a GPU
    # (--device cuda); its Atari runs are --env atari:GAME
    "paper": [
        "run.env=minatar:breakout", "run.obs=pixels", "run.steps=100000", "run.batch_size=32", "run.seq_len=20",
        "run.prefill=5000", "run.train_ratio=640", "run.eval_every=10000", "run.checkpoint_every=10000",
    ],
}

CSWM_PRESETS: dict[str, list[str]] = {
    # seconds on 2D shapes: a handful of 10-step episodes, two epochs of a narrow model
    "tiny": [
        "model.hidden=16", "model.channels=4", "epochs=2",
        "run.prefill=66", "run.time_limit=10", "run.batch_size=16", "run.replay_chunk=32", "run.eval_episodes=1",
    ],
    # the paper's data set (1,000 random episodes of 100 steps), batches of 1,024, Adam at 5e-4, K=5, D=2,
    # margin 1, sigma 0.5; narrower MLPs (128, not 512) and 30 epochs, not 100, to fit one CPU core in
    # about 10 minutes (docs/notes/cswm.md)
    "default": ["model.hidden=128", "model.channels=16", "epochs=30"],
    # the paper's ablations (Table 1) on `default`'s budget: no GNN (each object moves by its own MLP, no edges)
    "default-no-gnn": ["model.hidden=128", "model.channels=16", "epochs=30", "model.interactions=false"],
    # one object slot for the whole image; its embedding has the five slots' total size (1 x 10 = 5 x 2)
    "default-k1": ["model.hidden=128", "model.channels=16", "epochs=30", "model.slots=1", "model.embedding=10"],
    # no contrastive loss: the same encoder and GNN trained through a decoder in pixel space (the reference
    # code's --decoder baseline)
    "default-ae": ["model.hidden=128", "model.channels=16", "epochs=30", "model.objective=decoder"],
    # the 3D cubes world with the paper's encoder for it (the large extractor: four 3 x 3 convolutions at the
    # image's full 50 x 50 resolution) and its data set (1,000 random episodes of 100 steps); sized for one CPU
    # core in about 20 minutes: 8 extractor channels (the reference: 32), MLPs of 128 (512), bf16 autocast,
    # batches of 128 (1,024) and 2 epochs (100) (docs/notes/cswm.md)
    "cubes": ["run.env=gym:reverie/Cubes-v0", "model.extractor=large", "model.channels=8", "model.hidden=128",
              "run.precision=bf16", "run.batch_size=128", "epochs=2"],
    # Atari Pong as the paper records it (envs/atari_pairs.py: 1,000 random episodes of 10 steps after a random
    # warm start, two stacked 50 x 50 frames) with its model (the medium extractor, K = 3 slots of D = 4, the
    # action copied to every slot); sized for one CPU core in about 20 minutes: 16 extractor channels (the
    # reference: 32), MLPs of 128 (512), bf16 autocast, batches of 128 (1,024) and 15 epochs (200)
    "pong": ["run.env=gym:reverie/PongCSWM-v0", "run.prefill=11000", "model.extractor=medium", "model.slots=3",
             "model.embedding=4", "model.action=copy", "model.channels=16", "model.hidden=128",
             "run.precision=bf16", "run.batch_size=128", "epochs=15"],
    # Space Invaders the same way (its warm start: 50 random steps)
    "spaceinvaders": ["run.env=gym:reverie/SpaceInvadersCSWM-v0", "run.prefill=11000", "model.extractor=medium",
                      "model.slots=3", "model.embedding=4", "model.action=copy", "model.channels=16",
                      "model.hidden=128", "run.precision=bf16", "run.batch_size=128", "epochs=15"],
    # the paper's 2D shapes run (the dataclass defaults): 1,000 episodes of 100 steps, hidden 512, batches of
    # 1,024, 100 epochs (about 3 hours on one CPU core)
    "paper": [],
}

LAPO_PRESETS: dict[str, list[str]] = {
    # seconds on MinAtar Breakout: a few hundred random steps, 20 Adam steps of a narrow model
    "tiny": [
        "model.codes=4", "model.code_size=4", "model.channels=8", "model.hidden=16", "updates=20",
        "unit_updates=10", "eval_windows=100", "run.prefill=300", "run.batch_size=16", "run.replay_chunk=64",
    ],
    # MinAtar Breakout, 50,000 random steps, 8 codes, 4,000 Adam steps of batches of 64 windows of 3 frames
    # (docs/notes/latent-actions.md)
    "default": [],
}
