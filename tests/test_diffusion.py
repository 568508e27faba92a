"""DIAMOND's diffusion world model: EDM's preconditioning and samplers against hand-computed values and
analytic denoisers, DDPM behind the same interface, and the model's frame window under the contract."""

import math

import numpy as np
import pytest
import torch

from reverie.config import ConfigError
from reverie.models.base import WorldModel, capabilities_of, imagine
from reverie.models.ddpm import DDPM, DDPMConfig
from reverie.models.diffusion import DiffusionModelConfig, DiffusionWorldModel
from reverie.models.edm import EDM, EDMConfig, edm_coefficients, karras_sigmas, ode_sample
from reverie.specs import ActionSpec, ArraySpec

OBS = {"image": ArraySpec((10, 10, 4), np.dtype(np.uint8))}
ACT = ActionSpec(True, 3)
SMALL = dict(channels=(16, 16), depths=(1, 1), cond_dim=32, reward_conv=(8, 8), reward_memory=16)


def small(**kwargs):
    torch.manual_seed(0)
    return DiffusionWorldModel(OBS, ACT, DiffusionModelConfig(**{**SMALL, **kwargs}))


def test_the_preconditioning_is_edms_table_1_at_hand_picked_sigmas():
    sigma = torch.tensor([0.5, 2.0, 0.002])
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5)
    # sigma = 0.5: sigma^2 + sd^2 = 0.5; sigma = 2: 4.25; sigma = 0.002: 0.250004
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 0.25 / 4.25, 0.25 / 0.250004]))
    torch.testing.assert_close(c_out, torch.tensor([0.25 / math.sqrt(0.5), 1.0 / math.sqrt(4.25),
                                                    0.001 / math.sqrt(0.250004)]))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(0.5), 1 / math.sqrt(4.25), 1 / math.sqrt(0.250004)]))
    torch.testing.assert_close(c_noise, torch.tensor([math.log(0.5), math.log(2.0), math.log(0.002)]) / 4)
    # unit variance of the network's input and of its target when x0 has the data's std (EDM's design)
    assert float(c_in[1] ** 2 * (4.0 + 0.25)) == pytest.approx(1.0)
    # DIAMOND's offset noise: the coefficients are taken at sqrt(sigma^2 + offset^2)
    shifted = EDM(EDMConfig(offset_noise=0.3)).coefficients(torch.tensor([0.4]))
    torch.testing.assert_close(shifted[0], torch.tensor([0.25 / (0.25 + 0.25)]))


def test_karras_schedule_by_hand():
    sigmas = karras_sigmas(3, 0.002, 5.0, 7.0)
    middle = ((5.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    torch.testing.assert_close(sigmas, torch.tensor([5.0, middle, 0.002, 0.0]))
    torch.testing.assert_close(karras_sigmas(1, 0.002, 5.0, 7.0), torch.tensor([5.0, 0.0]))


def point_mass_net(edm, y):
    """The network whose preconditioned denoiser is exact for data that is always ``y``: D(x; sigma) = y."""
    def net(x_in, c_noise):
        sigma = torch.exp(4 * c_noise)                            # the (offset-shifted) sigma the coefficients used
        c_skip, c_out, c_in, _ = edm_coefficients(sigma, edm.cfg.sigma_data)
        view = (-1, 1, 1, 1)
        x = x_in / c_in.view(view)
        return (y - c_skip.view(view) * x) / c_out.view(view)
    return net


@pytest.mark.parametrize("order", ["euler", "heun"])
def test_with_an_exact_denoiser_one_and_three_steps_give_the_data_point(order):
    y = torch.rand(2, 4, 10, 10) * 2 - 1
    samples = []
    for steps in (1, 3):
        edm = EDM(EDMConfig(steps=steps, order=order))
        samples.append(edm.sample(point_mass_net(edm, y), tuple(y.shape), generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(samples[0], y, atol=1e-4, rtol=0)
    torch.testing.assert_close(samples[1], samples[0], atol=1e-4, rtol=0)


def test_ddpm_with_an_exact_noise_predictor_gives_the_data_point():
    y = torch.rand(2, 4, 10, 10) * 2 - 1
    for steps in (1, 3, 10):
        ddpm = DDPM(DDPMConfig(steps=steps))

        def net(x, level):
            abar = ddpm.abar[(level * ddpm.cfg.train_steps).round().long()].float().view(-1, 1, 1, 1)
            return (x - abar.sqrt() * y) / (1 - abar).sqrt()

        out = ddpm.sample(net, tuple(y.shape), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, y, atol=1e-4, rtol=0)
    assert DDPM(DDPMConfig(steps=3)).kept_levels() == [999, 500, 0]


def test_heun_follows_the_probability_flow_of_gaussian_data_closer_than_euler():
    # data N(mu, s^2): D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and the ODE carries x(sigma_max) to
    # mu + (x - mu) s / sqrt(s^2 + sigma_max^2) exactly
    mu, s, sigma_max = 0.3, 0.5, 5.0
    x_t = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * sigma_max + mu
    exact = mu + (x_t - mu) * s / math.sqrt(s ** 2 + sigma_max ** 2)

    def denoise(x, sigma):
        return mu + s ** 2 / (s ** 2 + sigma ** 2) * (x - mu)

    def error(steps, order):
        return float((ode_sample(denoise, x_t, karras_sigmas(steps, 2e-3, sigma_max, 7.0), order) - exact).abs().max())

    # Euler is first order (doubling the steps halves the error), Heun second order (quarters it)
    assert 1.7 < error(20, "euler") / error(40, "euler") < 2.3
    assert 3.3 < error(20, "heun") / error(40, "heun") < 5.0
    assert error(40, "heun") < error(40, "euler") / 10


def test_a_denoiser_trained_on_one_image_reproduces_it_at_one_noise_level():
    model = small(channels=(16,), depths=(1,))
    frames = torch.rand(1, 4, 4, 10, 10) * 2 - 1                    # fixed context
    actions = torch.eye(3)[[0, 1, 2, 0]][None]
    target = (torch.rand(1, 4, 10, 10) > 0.7).float() * 2 - 1         # a fixed MinAtar-like frame
    opt = torch.optim.Adam(model.denoiser.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = model.denoising_loss(frames.expand(16, -1, -1, -1, -1), actions.expand(16, -1, -1),
                                    target.expand(16, -1, -1, -1), gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert isinstance(model.process, EDM)
    denoise = model.process.denoiser(lambda x, n: model.denoiser(x, n, frames.expand(8, -1, -1, -1, -1),
                                                                  actions.expand(8, -1, -1)))
    sigma = torch.full((8,), 1.0)
    noisy = target + torch.randn(8, 4, 10, 10, generator=gen)
    with torch.no_grad():
        out = denoise(noisy, sigma)
    assert float(((noisy - target) ** 2).mean()) > 0.8
    assert float(((out - target) ** 2).mean()) < 0.02


def test_sampling_is_deterministic_under_a_seed():
    model = small()
    frames, actions = torch.rand(2, 4, 4, 10, 10) * 2 - 1, torch.eye(3)[torch.tensor([[0, 1, 2, 0]] * 2)]
    with torch.no_grad():
        a = model.generate(frames, actions, torch.Generator().manual_seed(3))
        b = model.generate(frames, actions, torch.Generator().manual_seed(3))
        c = model.generate(frames, actions, torch.Generator().manual_seed(4))
        torch.manual_seed(7)
        d = imagine(model, model.initial(2), torch.eye(3)[torch.tensor([[0, 1]] * 2)])
        torch.manual_seed(7)
        e = imagine(model, model.initial(2), torch.eye(3)[torch.tensor([[0, 1]] * 2)])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(torch.equal(d[k], e[k]) for k in d)


def test_the_frame_window_restarts_with_the_episode_and_decodes_to_the_observation():
    model = small()
    assert isinstance(model, WorldModel) and capabilities_of(model) == {"reward", "cont", "decoder", "transition"}
    image = (torch.rand(2, 6, 10, 10, 4) > 0.5).to(torch.uint8) * 255
    action = torch.eye(3)[torch.randint(0, 3, (2, 6))]
    is_first = torch.zeros(2, 6, dtype=torch.bool)
    is_first[:, 0] = is_first[1, 3] = True
    with torch.no_grad():
        states, last = model.observe({"image": image}, action, is_first)
    torch.testing.assert_close(model.decode(states)["image"], image.float())         # the frames themselves
    window = states["frames"][1, 3]                                                   # [L, C, H, W]
    assert all(torch.equal(window[i], window[-1]) for i in range(4))                 # the first frame, 4 times
    assert torch.equal(states["actions"][1, 3], torch.zeros(4, 3)) and torch.equal(states["h"][1, 3], torch.zeros(16))
    torch.testing.assert_close(states["frames"][0, 5, -2], image[0, 4].float().permute(2, 0, 1) / 127.5 - 1)
    assert torch.equal(states["actions"][0, 5, -1], action[0, 5])
    assert float(model.cont(states)[1, 3]) > 0.999 and model.features(states).shape == (2, 6, 16 + 400)
    z, f = model.transition(last, action[:, 0])
    assert z.shape == f(z).shape == (2, 4 * 400 + 3 * 3)


def test_a_model_of_vector_observations_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match=r"^DIAMOND's diffusion model needs images: .*vectors \['vector'\]; use "
                                          r"--obs pixels or an image environment$"):
        DiffusionWorldModel({"vector": ArraySpec((4,), np.dtype(np.float32))}, ACT, DiffusionModelConfig(**SMALL))


@pytest.mark.parametrize("process", ["edm", "ddpm"])
def test_the_sampler_steps_are_a_setting_of_imagination_counted_in_network_calls(process):
    model = small(process=process)
    calls = []
    model.denoiser.register_forward_hook(lambda *_: calls.append(1))
    state = model.initial(2)
    weights = [p.clone() for p in model.parameters()]
    for steps in (3, 10):
        model.set_sampler_steps(steps)
        calls.clear()
        with torch.no_grad():
            imagine(model, state, torch.eye(3)[[0, 1]][:, None].expand(-1, 4, -1))
        assert len(calls) == 4 * steps == 4 * model.calls_per_frame     # one batched call per step per frame
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    with pytest.raises(ConfigError, match="at least one denoising step, got 0"):
        model.set_sampler_steps(0)
