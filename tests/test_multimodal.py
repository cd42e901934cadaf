"""Image+text DMM: the fused model, packed inputs, and synthesis of both modalities."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clients.app import local_train
from dmm_fed.config import parse_run_config
from dmm_fed.data.federation import client_data
from dmm_fed.inputs import InputLayout, input_layout
from dmm_fed.statistics import capture_norm_inputs, norm_layers, running_stat_targets
from dmm_fed.synthesis import SynthesisConfig, bn_statistics_loss, noise_inputs, synthesize

EMOJI = "emoji-twitter,emoji-google,emoji-openmoji,emoji-openmoji-black,emoji-fluent"


def test_layout_packs_splits_and_projects():
    layout = InputLayout(image_shape=(3, 2, 2), text_dim=3)
    images, text = torch.arange(24.0).reshape(2, 3, 2, 2) / 24, torch.tensor([[3.0, 0, 4]] * 2)
    x = layout.pack(images, text)
    assert x.shape == (2, 15)
    back_images, back_text = layout.split(x)
    assert torch.equal(back_images, images) and torch.equal(back_text, text)
    x[:, 0] = 7.0
    layout.project_(x)
    assert x[0, 0] == 1.0  # pixels clamped into the data range, in place
    assert torch.allclose(layout.split(x)[1], torch.tensor([[0.6, 0.0, 0.8]] * 2))
    noise = noise_inputs(torch.zeros(4, dtype=torch.long), seed=0, layout=layout).x
    assert torch.allclose(layout.split(noise)[1].norm(dim=1), torch.ones(4))


def test_text_model_needs_text_domains():
    with pytest.raises(ValueError, match="reads text"):
        parse_run_config({}, {"model": "cnn-text"})
    config = parse_run_config({}, {"model": "cnn-text", "domains": EMOJI})
    assert config.num_classes == 7 and config.uses_text
    assert input_layout(config.new_model()).text_dim == 384


@pytest.fixture(scope="module")
def teacher(data_root: Path):
    """A cnn-text client model trained on its emoji-twitter share (485 emoji)."""
    config = parse_run_config({}, {"model": "cnn-text", "domains": EMOJI, "local-epochs": 10})
    data = client_data(data_root, config.domain_list, 0, 10, 0.0, 0, text=True)
    model = config.new_model(seed=0)
    local_train(config, model, data, partition_id=0, server_round=1)
    return model.eval()


def _text_bn_loss(model, x, targets) -> float:
    layers = {n: m for n, m in norm_layers(model).items() if n.startswith("text.")}
    with torch.no_grad(), capture_norm_inputs(layers) as captured:
        model(x)
    return bn_statistics_loss(captured, {n: targets[n] for n in layers}).item()


def test_synthesis_matches_the_text_tower_and_hits_the_targets(teacher):
    model = teacher
    targets = running_stat_targets(model)
    assert {n for n in targets if n.startswith("text.")} == {"text.1", "text.4"}
    labels = torch.arange(7).repeat(6)
    config = SynthesisConfig(num_samples=len(labels), steps=150, log_every=0)
    out = synthesize(model, targets, labels, config, seed=0)
    start = noise_inputs(labels, seed=0, layout=input_layout(model)).x
    before, after = _text_bn_loss(model, start, targets), _text_bn_loss(model, out.x, targets)
    assert after < 0.5 * before, (before, after)  # the text-tower statistics loss falls
    with torch.no_grad():
        hit = (model(out.x).argmax(1) == labels).float().mean().item()
    assert hit >= 0.9, hit  # pseudo rows are classified by the teacher as their targets
    images, text = input_layout(model).split(out.x)
    assert torch.allclose(text.norm(dim=1), torch.ones(len(labels)), atol=1e-5)
    assert images.min() >= -1 and images.max() <= 1
    # the pseudo-embeddings carry class information of their own: with the image part blanked
    # the teacher still finds the targets far more often than from the initial random embeddings
    layout = input_layout(model)
    blank = torch.zeros_like(images)
    with torch.no_grad():
        text_only = (model(layout.pack(blank, text)).argmax(1) == labels).float().mean().item()
        random = (model(layout.pack(blank, layout.split(start)[1])).argmax(1) == labels)
    assert text_only > 2 * random.float().mean().item(), text_only


@pytest.mark.slow
def test_image_text_federation_runs_through_flower(run_app, data_root, tmp_path):
    """The ServerApp/ClientApp with cnn-text: every client's reply is usable (7 label counts),
    DMM synthesises both modalities, and the merged model beats chance (1/7) by 3x."""
    overrides = {
        "domains": EMOJI, "model": "cnn-text", "local-epochs": 10, "data-root": str(data_root),
        "output-dir": str(tmp_path), "pseudo-samples-per-teacher": 32, "synthesis-steps": 30,
        "distill-steps": 30, "round-timeout": 600.0, "node-wait-timeout": 60.0,
    }
    results = run_app(overrides, 5)
    assert results["rounds"][1]["train"]["replies-usable"] == 5
    report = results["dmm"]
    assert all(c for c in report["class_support"]) and len(report["class_support"][0]) == 7
    assert all(e < s for s, e in zip(report["synthesis_bn_loss_start"],
                                     report["synthesis_bn_loss"], strict=True))
    assert results["final-accuracy-mean"] > 3 / 7, results["final-accuracy"]
