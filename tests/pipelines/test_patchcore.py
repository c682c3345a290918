"""patchcore: PatchCore's memory bank on padim's features, exact coreset and nearest neighbours, honest thresholds.

Its agreement with anomalib's own PatchCore is checked in tests/test_anomalib.py (needs fmtest[anomalib])."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from anomaly_baselines import (
    check_finds_big_defects_and_passes_clean_parts,
    check_needs_two_good_training_images,
    one_torch_thread,  # noqa: F401 (an autouse fixture: imported to apply here)
    predict_rgb_crop,
    training_images_read,
)
from boards import H, W, board, sample, train_set

from fmtest.data.sample import NOK, OK, Sample
from fmtest.errors import ConfigError, DataError, MissingWeights
from fmtest.models import efficientnet, imagenet_cnn, registry
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.calibration import Thresholds
from fmtest.pipelines.patchcore import (
    FEATURE_LIMIT,
    GridPoints,
    MemoryBank,
    Patchcore,
    greedy_coreset,
    grid_scale,
    sparse_projection,
)

SMALL = {"calibration_fraction": 0.5, "coreset_ratio": 0.25}  # a denser bank: the toy sets are small


def make(options=None, **context) -> Patchcore:
    return Patchcore(PipelineContext(dataset="toy", options={**SMALL, **(options or {})}, progress=False, **context))


@pytest.fixture(scope="module")
def fitted() -> Patchcore:
    pipeline = make()
    pipeline.fit(train_set(16), None)  # 8 fill the memory bank, 8 calibrate
    return pipeline


def random_points(n: int, dim: int, seed: int, spread: float = 5.0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, dim)) * spread).float()


# --- exact arithmetic ----------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [152, 1536])  # EfficientNet-Lite0's and Wide ResNet-50-2's patch features
def test_squared_distances_are_exact_even_at_the_feature_limit(dim):
    """Integers on the grid: float64 gives the same number as exact integer arithmetic, in any order."""
    scale = grid_scale(FEATURE_LIMIT, dim)
    extreme = torch.full((2, dim), FEATURE_LIMIT)
    extreme[1] = -FEATURE_LIMIT  # the largest distance the grid can hold
    points = GridPoints.of(torch.cat([extreme, random_points(30, dim, seed=dim, spread=60.0)]), FEATURE_LIMIT, scale)
    ints = points.values.long()
    exact = ((ints[:, None, :] - ints[None, :, :]) ** 2).sum(-1)  # int64: no rounding at all
    assert torch.equal(points.squared_distances(points), exact.double())
    assert 2 ** 51 < exact[0, 1] <= 2 ** 53  # the grid is as fine as exactness allows (a power of two)


def test_greedy_coreset_is_farthest_point_sampling():
    points = GridPoints.of(random_points(300, 8, seed=1), FEATURE_LIMIT, grid_scale(FEATURE_LIMIT, 8))
    chosen = greedy_coreset(points, 20, start=7).tolist()
    x = points.values.numpy()
    expected = [7]
    while len(expected) < 20:  # the definition: the point whose nearest chosen point is farthest
        to_chosen = ((x[:, None, :] - x[expected][None, :, :]) ** 2).sum(-1).min(axis=1)
        expected.append(int(np.argmax(to_chosen)))
    assert chosen == expected and len(set(chosen)) == 20


def test_coreset_stops_when_only_duplicates_remain_and_ties_go_to_the_lowest_index():
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    points = GridPoints.of(corners, FEATURE_LIMIT, grid_scale(FEATURE_LIMIT, 2))
    assert greedy_coreset(points, 5, start=0).tolist() == [0, 4, 1, 2]  # 1 and 2 tie: 1 first; 3 repeats 1


def test_image_score_is_reweighted_as_in_the_paper():
    """s = (1 - softmax over ||m_test - m|| for m in N_b(m*))[m*] * s*, by hand with numpy."""
    scale = grid_scale(FEATURE_LIMIT, 4)
    bank = GridPoints.of(random_points(40, 4, seed=2), FEATURE_LIMIT, scale)
    patches = GridPoints.of(random_points(12, 4, seed=3, spread=8.0), FEATURE_LIMIT, scale)
    score, patch_scores = MemoryBank(bank, num_neighbors=5).score(patches)
    b, q = bank.values.numpy() / scale, patches.values.numpy() / scale
    dist = np.sqrt(((q[:, None] - b[None]) ** 2).sum(-1))
    np.testing.assert_allclose(patch_scores.numpy(), dist.min(axis=1), rtol=1e-12)
    worst = dist.min(axis=1).argmax()
    m_star = dist[worst].argmin()
    support = np.argsort(np.sqrt(((b - b[m_star]) ** 2).sum(-1)), kind="stable")[:5]
    to_support = dist[worst, support]
    weight = 1 - np.exp(to_support[0]) / np.exp(to_support).sum()
    assert support[0] == m_star and 0 < weight < 1
    assert score == pytest.approx(weight * dist[worst].min(), rel=1e-12)
    assert MemoryBank(bank, num_neighbors=1).score(patches)[0] == pytest.approx(dist[worst].min(), rel=1e-12)


def test_coreset_and_nearest_neighbours_are_bit_identical_across_thread_counts():
    features = random_points(4000, 152, seed=4)  # wider than projection_dim: the projection is exercised too
    queries = GridPoints.of(random_points(256, 152, seed=5), FEATURE_LIMIT, grid_scale(FEATURE_LIMIT, 152))
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        points = GridPoints.of(features, FEATURE_LIMIT, grid_scale(FEATURE_LIMIT, 152))
        selection = sparse_projection(points, 128, np.random.default_rng(0))
        chosen = greedy_coreset(selection, 200, start=11)
        runs.append((chosen, *MemoryBank(points.take(chosen), 9).score(queries)))
    torch.set_num_threads(1)
    (chosen_1, score_1, patches_1), (chosen_2, score_2, patches_2) = runs
    assert torch.equal(chosen_1, chosen_2) and score_1 == score_2 and torch.equal(patches_1, patches_2)


def test_predictions_are_bit_identical_for_any_batch_size(fitted):
    samples = [sample(f"b/{i}", seed=500 + i, defect=i % 3 == 0) for i in range(8)]
    by_batch = {}
    for batch_size in (1, 8):
        fitted.batch_size = batch_size
        by_batch[batch_size] = fitted.predict(samples)
    fitted.batch_size = Patchcore.batch_size
    for a, b in zip(by_batch[1], by_batch[8]):
        assert a.score == b.score and a.label == b.label
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.score_map, b.score_map)


def test_fit_is_bit_identical_for_any_batch_size():
    first, second = make(), make()
    second.batch_size = 1
    first.fit(train_set(6), None)
    second.fit(train_set(6), None)
    assert torch.equal(first.bank.points.values, second.bank.points.values)
    assert first.thresholds == second.thresholds


# --- the pipeline --------------------------------------------------------------------------------

def test_finds_big_defect_and_passes_clean_parts(fitted):
    for s, p in check_finds_big_defects_and_passes_clean_parts(fitted):
        assert s.mask[np.unravel_index(p.score_map.argmax(), p.score_map.shape)]  # the map peaks on the defect
        assert p.mask.sum() < 0.6 * H * W  # coarse: a strong defect lifts its wide receptive field


def test_rgb_images_of_another_size():
    prediction = predict_rgb_crop(make())
    assert prediction.mask.shape == (64, 80) and prediction.label == NOK


def test_label_is_the_image_decision_and_only_flagged_images_get_a_mask():
    loose_pixels = make({"pixel_quantile": 0.9})  # good parts too have pixels above the pixel threshold
    loose_pixels.fit(train_set(8), None)
    predictions = loose_pixels.predict([sample(f"x/{i}", seed=400 + i, defect=i % 2 == 0) for i in range(6)])
    assert {p.label for p in predictions} == {OK, NOK}
    for p in predictions:
        assert (p.label == NOK) == (p.score > loose_pixels.thresholds.image)
    passed = [p for p in predictions if p.label == OK]
    assert any((p.score_map > 1.0).any() for p in passed) and not any(p.mask.any() for p in passed)


def test_score_map_is_in_units_of_the_pixel_threshold(fitted):
    """The viewer's colour scale: above 1.0 is exactly what the mask of a flagged image marks."""
    for p in fitted.predict([sample("bad/map", seed=210, defect=True), sample("good/map", seed=310)]):
        assert p.score_map.shape == (H, W) and p.score_map.dtype == np.float32 and p.score_map.min() >= 0
        if p.label == NOK:
            np.testing.assert_array_equal(p.mask, p.score_map > 1.0)


def test_fit_reads_only_good_training_images():
    assert training_images_read(make()) == [f"train/{i}" for i in range(4)]


def test_memory_bank_is_the_coreset_share_of_the_fit_patches(fitted):
    n_fit_patches = 8 * (128 // 8) ** 2
    assert len(fitted.bank.points) == int(n_fit_patches * 0.25)
    smaller = make({"coreset_ratio": 0.05})
    smaller.fit(train_set(4), None)
    assert len(smaller.bank.points) == int(2 * (128 // 8) ** 2 * 0.05)


def test_an_image_with_non_finite_values_is_a_failed_answer(fitted):
    image, _ = board(9)
    image = image.copy()
    image[10, 10] = np.nan
    prediction, = fitted.predict([Sample(id="nan", image=image, label=OK)])
    assert prediction.label == NOK and "non-finite" in prediction.error


def test_thresholds_refuse_non_finite_calibration_values():
    """A NaN quantile would pass every part."""
    for scores, maps in (([1.0, np.nan], [np.zeros((2, 2))]), ([1.0, 2.0], [np.full((2, 2), np.inf)])):
        with pytest.raises(DataError, match="toy: non-finite anomaly scores on the good training images"):
            Thresholds.from_good(scores, maps, 0.99, 0.999, "toy")


def test_needs_two_good_training_images():
    check_needs_two_good_training_images(make())


@pytest.mark.parametrize("options", [{"image_size": 50}, {"coreset_ratio": 0.0}, {"num_neighbors": 0},
                                     {"backbone": "vit"}, {"calibration_fraction": 1.0}, {"seed": 0.5}, {"k": 3}])
def test_bad_options_name_the_setting(options):
    with pytest.raises(ConfigError, match=r"pipelines\.patchcore"):
        make(options)


# --- the backbone --------------------------------------------------------------------------------

def test_backbone_is_efficientnet_lite0_without_the_wide_resnet_checkpoint(tmp_path, fitted):
    assert fitted.model_id == f"efficientnet_lite0:{efficientnet.weights_sha256()}"
    assert make(weights_dir=tmp_path).backbone == "efficientnet_lite0"
    with pytest.raises(MissingWeights, match="wide_resnet50_2-95faca4d.pth"):
        Patchcore.check_available(PipelineContext(dataset="toy", options={"backbone": "wide_resnet50_2"},
                                                  weights_dir=tmp_path))


def test_backbone_is_the_papers_wide_resnet_when_its_checkpoint_is_present(tmp_path):
    torch.manual_seed(0)  # a small ResNet with random weights stands in for the 270 MB checkpoint
    stand_in = imagenet_cnn.ImageNetCnn(torchvision.models.resnet18(weights=None).eval().requires_grad_(False),
                                        model_id="f" * 64)
    with registry.inject(imagenet_cnn.WIDE_RESNET50_KEY, stand_in):
        pipeline = make({"image_size": 64}, weights_dir=tmp_path)
        Patchcore.check_available(pipeline.context)
        pipeline.fit(train_set(4), None)
        prediction, = pipeline.predict([sample("bad", seed=5, defect=True)])
        assert pipeline.model_id == "wide_resnet50_2:" + "f" * 64
    assert pipeline.bank.points.values.shape[1] == 128 + 256  # layer2 + layer3 channels
    assert prediction.mask.shape == (H, W)


def test_is_a_default_baseline():
    assert pipeline_class("patchcore") is Patchcore
    assert Patchcore.sdk_modules == ()  # needs no extra: it runs in the default `pytest suites`
