"""The knowledge-preservation term: its KL against NumPy, its frozen teacher, its heads from the weights'
classifier, and what a checkpoint keeps of it."""

import numpy as np
import pytest
import torch

from ray_sbir.config import ConfigError, EncoderConfig, ModelConfig
from ray_sbir.losses import CompositeLoss, TermContext, term_options
from ray_sbir.losses.knowledge import KnowledgeTerm, class_similarity, distillation_kl
from ray_sbir.models import create_model


def _model(weights=None, **kw):
    torch.manual_seed(0)
    return create_model(ModelConfig(embed_dim=16, sketch=EncoderConfig(backbone="resnet10t", image_size=32,
                                                                       pretrained_weights=weights), **kw))


def _term(model, **options):
    return KnowledgeTerm(term_options("knowledge", options), TermContext(embed_dim=16, model=model))


def test_kl_matches_numpy():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    T = 2.0

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(t / T), softmax(s / T)
    expected = T ** 2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    got = distillation_kl(torch.tensor(s), torch.tensor(t), T).item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert distillation_kl(torch.tensor(t), torch.tensor(t), T).item() == pytest.approx(0.0, abs=1e-7)


def _outputs(model, images):
    out = {}
    for modality in ("sketch", "photo"):
        _, feats = model.encode_with_features(images, modality)
        out[f"{modality}_features"], out[f"{modality}_input"] = feats, images
    return out


def test_heads_start_from_the_weights_classifier_and_the_teacher_stays_frozen(tmp_path):
    import timm

    net = timm.create_model("resnet10t", num_classes=10)
    torch.nn.init.normal_(net.fc.weight)
    weights = tmp_path / "resnet10t.pt"
    torch.save(net.state_dict(), weights)
    model = _model(str(weights))
    term = _term(model, temperature=1.0)
    for modality in ("sketch", "photo"):
        assert torch.equal(term.heads[modality].weight, net.fc.weight) and torch.equal(term.heads[modality].bias, net.fc.bias)
    # Both encoders start from the same weights: one teacher serves both, outside the module tree.
    assert term._teachers["sketch"] is term._teachers["photo"]
    assert not any(k.startswith("_teachers") for k in term.state_dict())
    assert set(term.state_dict()) == {"heads.sketch.weight", "heads.sketch.bias", "heads.photo.weight", "heads.photo.bias"}
    model.eval()
    images = torch.randn(4, 3, 32, 32)
    # The teacher is the pretrained network as it was: its logits are the ImageNet classifier on its features.
    with torch.no_grad():
        teacher_logits = term._teachers["sketch"](images)
        expected = net.eval()(images)  # timm's own forward: global average pool + fc
    assert torch.allclose(teacher_logits, expected, atol=1e-4)
    # Identical at the start (eval: no batch statistics): zero, and full agreement.
    with torch.no_grad():
        values = term(_outputs(model, images), 1.0)
    assert values["knowledge"].item() == pytest.approx(0.0, abs=1e-6) and values["knowledge_agreement"].item() == 1.0
    # Moving the trained backbone moves the term, never the teacher.
    before = [p.clone() for p in term._teachers["sketch"].parameters()]
    with torch.no_grad():
        for p in model.encoder("sketch").backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    values = term(_outputs(model, images), 1.0)
    assert values["knowledge"].item() > 1e-3
    values["knowledge"].backward()
    assert all(p.grad is None for p in term._teachers["sketch"].parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, term._teachers["sketch"].parameters()))
    assert term.heads["sketch"].weight.grad is not None


def test_modalities_option_reads_only_its_inputs_and_random_heads_without_a_classifier():
    model = _model(None)
    term = _term(model, modalities=["photo"], classes=7)
    assert term.inputs == ("photo_features", "photo_input") and list(term.heads) == ["photo"]
    assert term.heads["photo"].weight.shape == (7, model.backbone_features("photo").num_features)
    loss = CompositeLoss({"knowledge": {"weight": 1.0, "modalities": ["sketch", "photo"]}},
                         TermContext(embed_dim=16, model=model))
    assert loss.inputs == {"sketch_features", "sketch_input", "photo_features", "photo_input"}
    with pytest.raises(ConfigError, match="loss.terms.knowledge.modalities"):
        term_options("knowledge", {"modalities": ["video"]})
    with pytest.raises(ConfigError, match="gives the term no model"):
        KnowledgeTerm(term_options("knowledge", {}), TermContext(embed_dim=16))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_semantic_adjustment_matches_numpy_and_is_checked(tmp_path):
    """SAKE's semantic-aware teacher: the teacher's logits + w * cosine(class vector, head class vector), per
    image by its class, against a NumPy reference; its inputs, needs and misconfigurations."""
    from ray_sbir.losses import terms_need_class_vectors

    rng = np.random.default_rng(3)
    class_vectors = rng.normal(size=(3, 5)).astype(np.float32)  # 3 training classes
    head_vectors = rng.normal(size=(7, 5)).astype(np.float32)  # the head's 7 classes
    np.save(tmp_path / "head.npy", head_vectors)
    model = _model(None)
    options = {"modalities": ["sketch", "photo"], "classes": 7, "semantic_weight": 0.5, "temperature": 1.5,
               "semantic_vectors": str(tmp_path / "head.npy")}
    term = KnowledgeTerm(term_options("knowledge", options),
                         TermContext(embed_dim=16, model=model, class_vectors=torch.tensor(class_vectors)))
    assert set(term.inputs) == {"sketch_features", "sketch_input", "photo_features", "photo_input", "label",
                                "photo_label"}
    assert "similarity" not in term.state_dict()  # derived from the vectors, not trained: not checkpointed
    assert terms_need_class_vectors({"knowledge": options}) == ["knowledge"]
    assert terms_need_class_vectors({"knowledge": {**options, "semantic_weight": 0.0}}) == []
    model.eval()
    images = torch.randn(4, 3, 32, 32)
    outputs = {**_outputs(model, images), "label": torch.tensor([0, 2, 1, 2]), "photo_label": torch.tensor([1, 1, 0, 2])}
    with torch.no_grad():
        got = term(outputs, 1.0)["knowledge"].item()
        cos = (class_vectors / np.linalg.norm(class_vectors, axis=1, keepdims=True)) @ \
            (head_vectors / np.linalg.norm(head_vectors, axis=1, keepdims=True)).T
        losses = []
        for modality, key in (("sketch", "label"), ("photo", "photo_label")):
            t = term._teachers[modality](images).numpy() + 0.5 * cos[outputs[key].numpy()]
            s = term.heads[modality](outputs[f"{modality}_features"]).numpy()
            p, q = _softmax(t / 1.5), _softmax(s / 1.5)
            losses.append(1.5 ** 2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))
    assert got == pytest.approx(np.mean(losses), rel=1e-4)
    assert got > 1e-3  # the student starts as the teacher: only the adjustment pulls it at the first step
    context = TermContext(embed_dim=16, model=model, class_vectors=torch.tensor(class_vectors))
    with pytest.raises(ConfigError, match="needs class word vectors"):
        KnowledgeTerm(term_options("knowledge", options), TermContext(embed_dim=16, model=model))
    np.save(tmp_path / "short.npy", head_vectors[:6])
    with pytest.raises(ConfigError, match="6 rows, the head has \\[7\\] classes"):
        KnowledgeTerm(term_options("knowledge", {**options, "semantic_vectors": str(tmp_path / "short.npy")}), context)
    np.save(tmp_path / "wide.npy", rng.normal(size=(7, 9)))
    with pytest.raises(ConfigError, match="5-d but .* 9-d"):
        KnowledgeTerm(term_options("knowledge", {**options, "semantic_vectors": str(tmp_path / "wide.npy")}), context)
    with pytest.raises(ConfigError, match="semantic_weight"):
        term_options("knowledge", {"semantic_weight": -1.0})


def test_the_shipped_imagenet_vectors_fit_the_shipped_class_vectors():
    """One row per output of the packaged classifiers, from the encoder of the shipped class vectors: a Sketchy
    class lands next to its ImageNet namesakes."""
    from timm.data import ImageNetInfo

    from ray_sbir.data.class_vectors import load_word_vectors
    from ray_sbir.data.plan import resolve_asset

    inet = np.load(resolve_asset("assets:imagenet_class_vectors.npy")).astype(np.float32)
    sketchy = load_word_vectors(resolve_asset("assets:sketchy_class_vectors.txt"))
    assert inet.shape == (1000, 384)
    sims = class_similarity(np.stack([sketchy["airplane"], sketchy["cat"]]), inet).numpy()
    names = [ImageNetInfo().index_to_description(int(i)) for i in sims.argmax(axis=1)]
    assert names[0].startswith("airliner") and "cat" in names[1]
