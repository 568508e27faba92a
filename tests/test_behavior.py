"""Actor-critic on hand-made world models whose optimal behaviour and values are known."""

import numpy as np
import torch
from torch import nn

from reverie.behavior import ActorCritic, ActorCriticConfig
from reverie.specs import ActionSpec


class BanditModel(nn.Module):
    """A one-state world: the reward for arriving is given by the action that led there."""

    capabilities = frozenset({"reward", "cont"})

    def __init__(self, reward_of_action):
        super().__init__()
        self.reward_of_action = reward_of_action

    def features(self, state):
        return state["x"]

    def step(self, state, action):
        return {"x": state["x"], "r": self.reward_of_action(action)}

    def reward(self, state):
        return state["r"]

    def cont(self, state):
        return torch.ones_like(state["r"])


def _train(ac, wm, steps, n=64):
    opt = torch.optim.Adam(list(ac.actor.parameters()) + list(ac.critic.parameters()), lr=3e-3)
    for _ in range(steps):
        start = {"x": torch.ones(n, 4), "r": torch.zeros(n)}
        actor_loss, critic_loss, metrics = ac.loss(wm, start, torch.ones(n))
        opt.zero_grad()
        (actor_loss + critic_loss).backward()
        opt.step()
        ac.update_slow_critic()
    return metrics


def test_discrete_actor_finds_the_best_arm_and_critic_the_value():
    torch.manual_seed(0)
    cfg = ActorCriticConfig(horizon=5, gamma=0.5, units=32, layers=1, entropy=1e-3, slow_critic_decay=0.5)
    ac = ActorCritic(4, ActionSpec(True, 3), cfg)
    wm = BanditModel(lambda a: a @ torch.tensor([0.0, 1.0, 0.2]))
    _train(ac, wm, 300)
    probs = ac.policy(torch.ones(1, 4)).probs[0]
    assert probs.argmax() == 1 and probs[1] > 0.9
    # Always pulling arm 1 is worth 1 per step: V = 1 / (1 - gamma) = 2.
    assert abs(float(ac.value(torch.ones(1, 4)).detach()) - 2.0) < 0.25


def test_continuous_actor_finds_the_optimum():
    torch.manual_seed(0)
    for grad in ("reinforce", "dynamics"):
        cfg = ActorCriticConfig(horizon=3, gamma=0.5, units=32, layers=1, entropy=1e-4, actor_grad=grad)
        ac = ActorCritic(4, ActionSpec(False, 1), cfg)
        wm = BanditModel(lambda a: -((a[..., 0] - 0.5) ** 2))
        _train(ac, wm, 400)
        mean = float(ac.policy(torch.ones(1, 4)).mode()[0, 0].detach())
        assert abs(mean - 0.5) < 0.1, (grad, mean)


def test_terminal_start_states_carry_no_weight():
    torch.manual_seed(0)
    ac = ActorCritic(4, ActionSpec(True, 2), ActorCriticConfig(horizon=3, units=8, layers=1))
    wm = BanditModel(lambda a: a[..., 0])
    start = {"x": torch.ones(8, 4), "r": torch.zeros(8)}
    actor_loss, critic_loss, _ = ac.loss(wm, start, torch.zeros(8))
    assert float(actor_loss.detach()) == 0.0 and float(critic_loss.detach()) == 0.0


def test_return_normalisation_only_scales_down():
    ac = ActorCritic(4, ActionSpec(True, 2), ActorCriticConfig(units=8, layers=1, return_norm_decay=0.0))
    assert float(ac._normalise(torch.linspace(0, 0.1, 100))) == 1.0
    big = torch.linspace(0, 100, 1001)
    assert np.isclose(float(ac._normalise(big)), 90.0, atol=0.2)
