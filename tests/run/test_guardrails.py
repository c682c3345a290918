"""Guardrails on small synthetic "product" images: one template, per-part variation, planted problems."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fmtest.data.sample import Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, FmtestError
from fmtest.run.guardrails import Finding, check_data_quality

SIZE = 64


def template() -> np.ndarray:
    """What every part shares: a bright package on a dark background, like a SAT scan."""
    image = np.full((SIZE, SIZE), 0.15, np.float32)
    image[12:52, 16:48] = 0.7
    image[24:40, 26:38] = 0.45
    return image


def part(seed: int) -> np.ndarray:
    """One part: the template plus smooth part-to-part variation plus sensor noise."""
    rng = np.random.default_rng(seed)
    variation = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 4) * 0.3
    return np.clip(template() + variation + rng.normal(0, 0.01, (SIZE, SIZE)), 0, 1).astype(np.float32)


def sample(sample_id: str, image: np.ndarray, label: str = "OK", defect: bool | None = None) -> Sample:
    mask = np.zeros(image.shape[:2], bool)
    if defect if defect is not None else label == "NOK":
        mask[30:34, 30:34] = True
    return Sample(id=sample_id, image=image, label=label, mask=mask)


def sample_set(samples: list[Sample]) -> SampleSet:
    return SampleSet([SampleRef(s.id, s.label, (lambda s=s: s)) for s in samples])


def clean_dataset(n_train: int = 12, n_test: int = 10) -> tuple[list[Sample], list[Sample]]:
    train = [sample(f"train/good/{i:03d}", part(i)) for i in range(n_train)]
    test = [sample(f"test/{'void' if i % 2 else 'good'}/{i:03d}", part(100 + i), "NOK" if i % 2 else "OK")
            for i in range(n_test)]
    return train, test


def run(train, test, reference=None, **kw) -> list[Finding]:
    return check_data_quality(sample_set(train), sample_set(test), reference, progress=False, **kw)


def kinds(findings: list[Finding]) -> list[tuple[str, str | None]]:
    return [(f.kind, f.image_id) for f in findings]


def test_clean_dataset_has_no_findings():
    train, test = clean_dataset()
    assert run(train, test) == []


def test_near_duplicate_of_a_training_image_is_found_among_look_alike_parts():
    train, test = clean_dataset()
    copy = np.clip(train[3].image * 1.05 + np.random.default_rng(9).normal(0, 0.005, (SIZE, SIZE)), 0, 1)
    test[4] = sample("test/good/004", copy.astype(np.float32))
    # distinct parts already look alike as a whole: a plain thumbnail correlation could not tell them apart
    a, b = train[0].image.ravel(), train[1].image.ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.95
    findings = run(train, test)
    assert kinds(findings) == [("near_duplicate", "test/good/004")]
    assert "train/good/003" in findings[0].detail


def test_label_mask_disagreement_both_ways():
    train, test = clean_dataset()
    test[1] = sample("test/void/001", part(101), "NOK", defect=False)
    test[2] = sample("test/good/002", part(102), "OK", defect=True)
    findings = run(train, test)
    assert kinds(findings) == [("label_mask_disagreement", "test/void/001"),
                               ("label_mask_disagreement", "test/good/002")]
    assert "NOK but its mask is empty" in findings[0].detail
    assert "OK but its mask marks 16" in findings[1].detail


def test_labels_only_samples_are_not_checked_for_masks():
    train, test = clean_dataset()
    test[1] = Sample(id="test/void/001", image=part(101), label="NOK")
    assert run(train, test) == []


def test_intensity_outlier_against_training_distribution():
    train, test = clean_dataset()
    test[5] = sample("test/void/005", (part(105) * 0.4).astype(np.float32), "NOK")  # a badly under-exposed scan
    findings = run(train, test)
    assert kinds(findings) == [("intensity_outlier", "test/void/005")]
    assert "robust SDs" in findings[0].detail


def test_intensity_outlier_on_rgb_images_and_in_training_split():
    train, test = clean_dataset()
    rgb = lambda s, factor=1.0: Sample(id=s.id, image=np.repeat(s.image[..., None] * factor, 3, axis=2),
                                       label=s.label, mask=s.mask)
    train = [rgb(s) for s in train]
    test = [rgb(s) for s in test]
    train[2] = rgb(sample("train/good/002", part(2)), factor=1.6)
    assert kinds(run(train, test)) == [("intensity_outlier", "train/good/002")]


def test_too_few_training_images_skips_the_intensity_check():
    train, test = clean_dataset(n_train=3)
    findings = run(train, test)
    assert kinds(findings) == [("check_skipped", None)]
    assert "only 3 training images" in findings[0].detail


def ncc_without_registration(image: np.ndarray, reference: np.ndarray) -> float:
    return float(np.clip(np.corrcoef(image.ravel(), reference.ravel())[0, 1], 0.0, 1.0))


def test_alignment_failures_are_reported_and_the_reference_is_skipped():
    train, test = clean_dataset()
    test[6] = sample("test/good/006", np.roll(part(106), (20, 25), axis=(0, 1)))
    calls = []

    def alignment(image, reference):
        calls.append(image.shape)
        return ncc_without_registration(image, reference)

    findings = run(train, test, reference=train[0], alignment=alignment)
    assert kinds(findings) == [("alignment_failure", "test/good/006")]
    assert "train/good/000" in findings[0].detail
    assert len(calls) == len(train) + len(test) - 1


def test_alignment_without_reference_is_reported_as_skipped():
    train, test = clean_dataset()
    findings = run(train, test, reference=None, alignment=ncc_without_registration)
    assert kinds(findings) == [("check_skipped", None)]


def test_bad_alignment_quality_and_bad_settings_raise():
    train, test = clean_dataset(n_train=5, n_test=2)
    with pytest.raises(FmtestError, match="alignment returned 1.5 for image train/good/001"):
        run(train, test, reference=train[0], alignment=lambda image, reference: 1.5)
    with pytest.raises(ConfigError, match="outlier_z"):
        run(train, test, outlier_z=0)
    with pytest.raises(ConfigError, match="min_alignment_quality"):
        run(train, test, min_alignment_quality=2)


def test_finding_reads_as_one_line():
    assert str(Finding("near_duplicate", "test/1", "matches train/2")) == "near_duplicate test/1: matches train/2"
    assert str(Finding("check_skipped", None, "why")) == "check_skipped (dataset): why"


def _png(path, pixels: np.ndarray):
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return path


def test_16bit_greyscale_images_that_a_naive_8bit_conversion_saturates(tmp_path):
    from PIL import Image

    from fmtest.data.io import read_image

    rng = np.random.default_rng(0)
    scan = rng.integers(200, 4096, (32, 32)).astype(np.uint16)  # a 12-bit detector in a 16-bit file
    dim = rng.integers(0, 256, (32, 32)).astype(np.uint16)  # 16-bit file, values an 8-bit loader keeps
    bright8 = rng.integers(200, 256, (32, 32)).astype(np.uint8)
    files = {"scan": _png(tmp_path / "scan.png", scan), "dim": _png(tmp_path / "dim.png", dim),
             "bright8": _png(tmp_path / "bright8.png", bright8)}
    samples = [sample(name, read_image(path)) for name, path in files.items()]
    assert samples[0].image.dtype == np.float32 and samples[0].image.max() < 0.07  # fmtest keeps 16-bit scale
    findings = check_data_quality(sample_set(samples[:1]), sample_set(samples[1:]), None, progress=False)
    saturated = [f for f in findings if f.kind == "saturates_8bit"]
    assert [f.image_id for f in saturated] == ["scan"]
    with Image.open(files["scan"]) as im:  # what the upstream loader sees: PIL clips above 255
        white = np.mean(np.asarray(im.convert("RGB"))[..., 0] == 255)
    assert f"{white:.1%} of its pixels exceed 255" in saturated[0].detail and white > 0.9
    assert "train image is 16-bit greyscale" in saturated[0].detail


def test_saturation_share_limit(tmp_path):
    from fmtest.data.io import read_image

    pixels = np.full((10, 10), 100, np.uint16)
    pixels[0, :3] = 1000  # 3 % of the pixels would clip
    s = sample("few", read_image(_png(tmp_path / "few.png", pixels)))
    found = lambda share: [f.kind for f in check_data_quality(
        sample_set([]), sample_set([s]), None, max_saturated_share=share, progress=False)]
    assert "saturates_8bit" in found(0.01) and "saturates_8bit" not in found(0.05)
    with pytest.raises(ConfigError, match="max_saturated_share"):
        found(1.0)


def test_stored_bit_depth_is_read_from_the_values():
    from fmtest.run.guardrails import stored_bit_depth

    assert stored_bit_depth(np.array([0, 17, 255], np.float32) / np.float32(255)) == 8
    assert stored_bit_depth(np.array([0, 300, 65535], np.float32) / np.float32(65535)) == 16
    assert stored_bit_depth(np.array([0.1234567, 0.5], np.float32)) is None
