"""GroundingDINO through transformers: offline tokenizer, thresholds vs upstream post-processing, folder loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_grounding_dino, uncased_vocab_folder

from fmtest.errors import DataError, MissingWeights
from fmtest.models import grounding_dino as gd
from fmtest.models import registry


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return gd.load_bert_tokenizer(uncased_vocab_folder(tmp_path_factory.mktemp("vocab")))


@pytest.fixture(scope="module")
def detector(tokenizer):
    return build_tiny_grounding_dino(tokenizer, seed=0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [(rng.random((100, 150, 3)) * 255).astype(np.uint8), (rng.random((120, 90, 3)) * 255).astype(np.uint8)]


def test_tokenizer_has_full_uncased_vocabulary(tokenizer):
    assert len(tokenizer) == 30_522
    assert tokenizer("defect .")["input_ids"] == [101, 21262, 1012, 102]


def test_truncated_vocabulary_fails_loudly(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(DataError, match=r"5 entries, expected 30522") as e:
        gd.load_bert_tokenizer(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(MissingWeights, match="vocab.txt nor tokenizer.json"):
        gd.load_bert_tokenizer(tmp_path / "nowhere")


def test_caption_format():
    assert gd.caption_for("Defect") == "defect ."
    assert gd.caption_for(["crack", " Hole. "]) == "crack . hole ."
    with pytest.raises(DataError, match="non-empty"):
        gd.caption_for(["  ", "."])


@pytest.mark.parametrize("box_threshold,text_threshold", [(0.35, 0.25), (0.9, 0.5), (0.999, 0.1)])
def test_thresholds_agree_with_transformers_post_processing(detector, images, box_threshold, text_threshold):
    from transformers import GroundingDinoProcessor

    caption = gd.caption_for(["crack", "hole"])
    outputs, input_ids = detector.forward(images, caption)
    processor = GroundingDinoProcessor(image_processor=detector.image_processor, tokenizer=detector.tokenizer)
    reference = processor.post_process_grounded_object_detection(
        outputs, input_ids, threshold=box_threshold, text_threshold=text_threshold,
        target_sizes=[im.shape[:2] for im in images])
    ours = detector.detect(images, ["crack", "hole"], box_threshold, text_threshold)
    n_kept = 0
    for found, ref in zip(ours, reference, strict=True):
        np.testing.assert_allclose(found.scores, ref["scores"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(found.boxes_xyxy, ref["boxes"].numpy(), rtol=1e-5, atol=1e-3)
        for phrase, label in zip(found.phrases, ref["text_labels"], strict=True):
            # transformers decodes the separator and [SEP] into its label; ours names only the words
            assert phrase == " ".join(label.replace("[SEP]", " ").replace(".", " ").split())
        n_kept += len(found)
    if box_threshold < 0.99:
        assert n_kept > 0  # the comparison covered real boxes


def test_threshold_above_every_score_gives_empty_detections(detector, images):
    found = detector.detect(images, "defect", box_threshold=1.0, text_threshold=0.25)
    assert [len(f) for f in found] == [0, 0]
    assert found[0].boxes_xyxy.shape == (0, 4) and found[0].phrases == ()


def test_rejects_greyscale(detector, images):
    with pytest.raises(DataError, match="uint8 RGB"):
        detector.detect([images[0][..., 0]], "defect", 0.35, 0.25)


def _save_folder(detector, folder: Path) -> Path:
    detector.model.save_pretrained(folder)
    detector.tokenizer.save_pretrained(folder)
    detector.image_processor.save_pretrained(folder)
    return folder


def test_folder_round_trip_through_registry(detector, images, tmp_path):
    folder = _save_folder(detector, tmp_path / registry.spec(gd.WEIGHT_KEY).filename)
    loaded = gd.grounding_dino(tmp_path, "cpu")
    assert loaded.model_id == registry.file_sha256(folder / "model.safetensors")
    expected = detector.model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    a = detector.detect(images, "defect", 0.35, 0.25)
    b = loaded.detect(images, "defect", 0.35, 0.25)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.boxes_xyxy, y.boxes_xyxy)
    assert gd.grounding_dino(tmp_path, "cpu") is loaded  # loaded once per process


def test_garbage_weights_file_is_named(detector, tmp_path):
    folder = _save_folder(detector, tmp_path / "grounding-dino-tiny")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(DataError, match="cannot load GroundingDINO") as e:
        gd.load_grounding_dino(folder)
    assert str(folder) in str(e.value)


def test_missing_model_message_names_both_layouts(tmp_path):
    with pytest.raises(MissingWeights) as e:
        gd.require(tmp_path)
    message = str(e.value)
    assert "grounding-dino-tiny/model.safetensors" in message and str(tmp_path) in message
    assert "fmtest weights download groundingdino_swint_ogc`" in message
    assert "fmtest weights download groundingdino_swint_ogc_pth bert_base_uncased_vocab" in message
    (tmp_path / "groundingdino_swint_ogc.pth").write_bytes(b"x")
    with pytest.raises(MissingWeights, match="groundingdino_swint_ogc.pth is there but not its tokenizer vocabulary: "
                                             "bert-base-uncased/vocab.txt not found"):
        gd.require(tmp_path)
    (tmp_path / "bert-base-uncased").mkdir()
    shutil.copy(uncased_vocab_folder(tmp_path / "vocab") / "vocab.txt", tmp_path / "bert-base-uncased")
    gd.require(tmp_path)  # the original file and its vocabulary are enough


def test_injected_detector_needs_no_file(detector, tmp_path):
    with registry.inject(gd.WEIGHT_KEY, detector):
        gd.require(tmp_path)
        assert gd.grounding_dino(tmp_path, "cpu") is detector
    with pytest.raises(MissingWeights):
        gd.require(tmp_path)


def test_bf16_batched_boxes_agree_with_fp32(detector, images):
    """bf16 autocast on the same weights and the same batch: (almost) every fp32 box is found again.

    Box sets, not queries, are compared: the two-stage decoder picks its queries by top-k over the
    encoder's proposals, so a near tie may swap one query for another under a different rounding.
    """
    from torchvision.ops import box_iou

    fp32 = detector.detect(images, ["crack", "hole"], 0.35, 0.25)
    bf16 = detector.detect(images, ["crack", "hole"], 0.35, 0.25, precision="bf16")
    matched = total = 0
    for a, b in zip(fp32, bf16, strict=True):
        assert abs(len(a) - len(b)) <= max(1, len(a) // 10)
        if len(a) and len(b):
            iou = box_iou(torch.as_tensor(a.boxes_xyxy), torch.as_tensor(b.boxes_xyxy))
            matched += int((iou.max(dim=1).values >= 0.9).sum())
        total += len(a)
    assert total > 0 and matched / total >= 0.9
    outputs, _ = detector.forward(images, gd.caption_for("defect"), precision="bf16")
    assert outputs.pred_boxes.dtype == torch.float32  # boxes leave autocast in float32 either way
