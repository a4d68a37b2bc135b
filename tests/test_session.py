"""The widget's memory between runs, tested without Qt or a viewer."""

from __future__ import annotations

from napari_nmsg import NMSGConfig, learn_noise
from napari_nmsg._session import NOISE_FIELDS, Session
from napari_nmsg.simulate import simulate_tomogram


def test_noise_is_reused_only_for_the_same_data_and_noise_settings():
    volume = simulate_tomogram((32, 32, 32), seed=3).noisy
    config = NMSGConfig(seed=0)
    learning = learn_noise(volume, config)
    session = Session()
    assert session.cached_noise("a", volume, config) is None
    session.remember_noise("a", volume, config, learning)
    assert session.cached_noise("a", volume, config) is learning
    # training and inference settings do not change the noise; noise settings do
    assert session.cached_noise("a", volume, config.replace(train_steps=5, tile=32)) is learning
    assert "noise_model" in NOISE_FIELDS and "train_steps" not in NOISE_FIELDS
    assert session.cached_noise("a", volume, config.replace(noise_model="gan")) is None
    assert session.cached_noise("a", volume, config.replace(seed=1)) is None
    assert session.cached_noise("a", volume.copy(), config) is None  # data replaced
    assert session.cached_noise("b", volume, config) is None  # another layer
    session.forget_layer("a")
    assert session.cached_noise("a", volume, config) is None and session.learned_noise is None


def test_outputs_and_model_description():
    session = Session()
    assert session.describe_model() == "Model: none"
    session.set_output("raw", "out")
    session.set_output("other", "out2")
    assert session.output_of("raw") == "out"
    session.forget_layer("out")  # the output layer was deleted
    assert session.output_of("raw") is None and session.output_of("other") == "out2"
    session.forget_layer("other")  # its input was deleted
    assert session.output_of("other") is None
