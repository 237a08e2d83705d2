"""scripts/dense_context_probe.py: the four evaluations of the same windows it compares."""
import torch
import torch.nn.functional as F

from scripts import dense_context_probe as probe
from test_evaluate import CROP, MEAN, tensor_set, tiny_model
from vgg import evaluate as E

DENSE_SCORES, DENSE_POSTERIORS, CROP_SCORES, CROP_POSTERIORS = probe.VARIANTS


def images_of(dataset):
    return [dataset.image(i) for i in range(len(dataset))]


def test_at_the_crop_size_all_four_are_one_forward_pass():
    model, dataset = tiny_model(), tensor_set(5)
    found = probe.window_posteriors(model, images_of(dataset), CROP, MEAN, bf16=False)
    for variant in probe.VARIANTS[1:]:
        torch.testing.assert_close(found[variant], found[DENSE_SCORES])


def test_dense_scores_is_the_pipelines_dense_evaluation_and_crops_are_the_maps_windows():
    model, dataset = tiny_model(seed=1), tensor_set(4, size=36)
    found = probe.window_posteriors(model, images_of(dataset), 36, MEAN, bf16=False, batch=3)
    torch.testing.assert_close(found[DENSE_SCORES], E.dense_evaluate(model, dataset, 36, MEAN, 8, "cpu"))
    # 36 px at stride 4: a 3 x 3 map, windows at 0, 4, 8 px, each image with its flip.
    x = dataset.split["images"].float() - torch.tensor(MEAN)[:, None, None]
    with torch.no_grad():
        def crops_posteriors(images):
            return torch.stack([F.softmax(model(images[..., i:i + CROP, j:j + CROP]), 1)
                                for i in (0, 4, 8) for j in (0, 4, 8)]).mean(0)
        expected = (crops_posteriors(x) + crops_posteriors(x.flip(-1))) / 2
    torch.testing.assert_close(found[CROP_POSTERIORS], expected)
    # Context: the same windows differ once the net sees beyond them (a 3-crop receptive field).
    assert not torch.allclose(found[CROP_SCORES], found[DENSE_SCORES], atol=1e-4)
