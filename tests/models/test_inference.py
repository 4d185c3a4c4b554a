"""Inference settings of an encoder (``ray_sbir.models.inference``): every switch gives the fp32 model's
embeddings up to its arithmetic (bf16, int8), and bad settings are refused by name."""

import numpy as np
import pytest
import torch

from ray_sbir.config import ConfigError, EncoderConfig, ModelConfig
from ray_sbir.data.images import to_model_input
from ray_sbir.models import create_model
from ray_sbir.models.inference import InferenceEncoder, InferenceSettings


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = create_model(ModelConfig(embed_dim=32, sketch=EncoderConfig(backbone="resnet10t", image_size=32)))
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8)
    return model.eval(), images


def reference(model, images):
    """The plain fp32 NCHW call the settings are compared with."""
    with torch.no_grad():
        return model.encode(to_model_input(torch.from_numpy(images), "cpu").contiguous(), "sketch").numpy()


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("settings, min_cosine", [
    (InferenceSettings(), 0.99999),
    (InferenceSettings(channels_last=False), 0.99999),
    (InferenceSettings(bf16=True), 0.98),
    (InferenceSettings(int8_linear=True), 0.98),
])
def test_settings_keep_the_embeddings(model_and_images, settings, min_cosine):
    model, images = model_and_images
    ref = reference(model, images)
    out = InferenceEncoder(model, "sketch", settings)(images)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert cosine(out, ref).min() >= min_cosine
    if settings.bf16 or settings.int8_linear:  # the arithmetic did change
        assert not np.array_equal(out, ref)


def test_int8_quantises_the_linear_layers_only(model_and_images):
    model, images = model_and_images
    enc = InferenceEncoder(model, "sketch", InferenceSettings(int8_linear=True))
    dynamic = [m for m in enc.module.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and len(dynamic) == len(linear)
    assert not any("quantized" in type(m).__module__ for m in model.modules())  # the model itself is untouched


@pytest.mark.slow
def test_compiled_encoder_matches(model_and_images):
    model, images = model_and_images
    out = InferenceEncoder(model, "sketch", InferenceSettings(compile=True))(images)
    assert cosine(out, reference(model, images)).min() >= 0.9999


def test_settings_from_dict_and_labels():
    assert InferenceSettings.from_dict(None) == InferenceSettings()
    s = InferenceSettings.from_dict({"bf16": True, "compile": True}, "serve.encoder_inference")
    assert s.label() == "bf16 NHWC + compile" and InferenceSettings(channels_last=False).label() == "fp32 NCHW"
    with pytest.raises(ConfigError, match=r"serve.encoder_inference: unknown setting\(s\) \['fp16'\]"):
        InferenceSettings.from_dict({"fp16": True}, "serve.encoder_inference")
    with pytest.raises(ConfigError, match="inference.bf16 must be true or false, got 'yes'"):
        InferenceSettings.from_dict({"bf16": "yes"})


@pytest.mark.parametrize("overrides", [{}, {"name": "hash_dual_encoder", "normalize": "tanh"}])
def test_flip_average_is_the_mean_of_the_image_and_its_mirror(overrides):
    """``encode(..., flip_average=True)`` against a hand computation: the two views embedded one at a time
    (the mirror flipped in NumPy, along the image width), averaged, renormalised for unit-norm models; a hash
    model's relaxations are averaged as they are (its code is the sign of the mean)."""
    from ray_sbir.models.inference import encode

    torch.manual_seed(0)
    model = create_model(ModelConfig(embed_dim=32, sketch=EncoderConfig(backbone="resnet10t", image_size=32),
                                     **overrides)).eval()
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32), dtype=np.uint8)
    with torch.no_grad():
        plain = model.encode(to_model_input(torch.from_numpy(images)), "sketch").numpy()
        mirrored = model.encode(to_model_input(torch.from_numpy(images[:, :, ::-1].copy())), "sketch").numpy()
        got = encode(model, to_model_input(torch.from_numpy(images)), "sketch", flip_average=True).numpy()
        off = encode(model, to_model_input(torch.from_numpy(images)), "sketch").numpy()
    mean = (plain + mirrored) / 2
    if model.unit_norm:
        mean /= np.linalg.norm(mean, axis=1, keepdims=True)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.allclose(got, mean, atol=1e-5)
    assert np.array_equal(off, plain)  # off: the model's own encode, untouched
    assert not np.allclose(got, plain, atol=1e-3)  # the mirror changes these embeddings (not mirror invariant)
    settings = InferenceSettings(flip_average=True)  # the benches' encoder runs the same function
    assert np.allclose(InferenceEncoder(model, "sketch", settings)(images), mean, atol=1e-5)
    assert settings.label() == "fp32 NHWC + mirror"


@pytest.mark.parametrize("flip", [False, True])
def test_a_cpu_batch_runs_in_passes_of_the_pixel_budget(model_and_images, monkeypatch, flip):
    """On a CPU a batch is encoded in forward passes of at most ``CPU_PASS_PIXELS`` pixels (here 2 images of
    32 px), both views counted, and gives the single pass's embeddings (eval mode)."""
    from ray_sbir.models import inference

    model, images = model_and_images
    x = to_model_input(torch.from_numpy(images), "cpu")
    with torch.no_grad():
        whole = inference.encode(model, x, "sketch", flip_average=flip).numpy()
    assert inference.images_per_pass(x) == inference.CPU_PASS_PIXELS // (32 * 32)  # 6 images of 32 px: one pass
    monkeypatch.setattr(inference, "CPU_PASS_PIXELS", 2 * 32 * 32 + 5)
    passes = []
    original = type(model).encode

    def counted(self, batch, modality):
        passes.append(len(batch))
        return original(self, batch, modality)

    monkeypatch.setattr(type(model), "encode", counted)
    with torch.no_grad():
        split = inference.encode(model, x, "sketch", flip_average=flip).numpy()
    assert passes == [2] * (6 if flip else 3)
    passes.clear()
    monkeypatch.setattr(inference, "CPU_PASS_PIXELS", 5 * 32 * 32)  # 6 images under a limit of 5: 3 + 3
    with torch.no_grad():
        inference.encode(model, x, "sketch")
    assert passes == [3, 3]
    np.testing.assert_allclose(split, whole, atol=1e-5)
    assert inference.images_per_pass(x[:, :, :16, :16]) == 20  # smaller images: more per pass


def test_the_pass_budget_comes_from_the_environment(monkeypatch):
    """``RAY_SBIR_CPU_PASS_PIXELS`` sets the budget (0: one pass per batch); anything else is refused by name."""
    from ray_sbir.models import inference

    monkeypatch.setenv(inference.PASS_PIXELS_ENV, "0")
    assert inference._pass_pixels() == 0
    monkeypatch.setattr(inference, "CPU_PASS_PIXELS", 0)
    assert inference.images_per_pass(torch.zeros(64, 1, 224, 224)) == 64
    monkeypatch.setenv(inference.PASS_PIXELS_ENV, "100352")
    assert inference._pass_pixels() == 100352
    monkeypatch.delenv(inference.PASS_PIXELS_ENV)
    assert inference._pass_pixels() == 4 * 224 * 224
    monkeypatch.setenv(inference.PASS_PIXELS_ENV, "4x224")
    with pytest.raises(ValueError, match="RAY_SBIR_CPU_PASS_PIXELS='4x224': expected a whole number"):
        inference._pass_pixels()
