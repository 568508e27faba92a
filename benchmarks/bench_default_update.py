"""Milliseconds per Dreamer update and per act() call for a preset, on CartPole-v1-shaped data.

    python benchmarks/bench_default_update.py THREADS PRESET [key=value ...]

Three warm-up updates, then the median and minimum of 10 updates on one fixed
synthetic batch, then 200 single-environment act() calls.
"""
import torch, numpy as np, time, sys
from reverie.agents.registry import resolve_config
from reverie.agents.dreamer import Dreamer
from reverie.envs.spaces import ArraySpec, ActionSpec
torch.set_num_threads(int(sys.argv[1]))
cfg = resolve_config("dreamer", sys.argv[2], sys.argv[3:])
ag = Dreamer({"vector": ArraySpec((4,), np.float32)}, ActionSpec(True, 2), cfg)
B,T = cfg.run.batch_size, cfg.run.seq_len
rng=np.random.default_rng(0)
batch = {"vector": rng.normal(size=(B,T,4)).astype(np.float32), "action": np.eye(2,dtype=np.float32)[rng.integers(0,2,(B,T))],
 "reward": np.ones((B,T),np.float32), "is_first": np.zeros((B,T),bool), "is_terminal": np.zeros((B,T),bool)}
for i in range(3): ag.train(batch)
ts=[]
for i in range(10):
    t=time.perf_counter(); ag.train(batch); ts.append(time.perf_counter()-t)
obs = {"vector": np.zeros((1,4),np.float32), "action": np.zeros((1,2),np.float32), "is_first": np.ones(1,bool)}
st = ag.init_state(1); ta=time.perf_counter()
for i in range(200): _,_,st = ag.act(obs, st, True)
print(f"threads={sys.argv[1]} {sys.argv[2]}: median {np.median(ts)*1000:.0f} ms/update, min {min(ts)*1000:.0f}; act {(time.perf_counter()-ta)/200*1000:.2f} ms/step")
