"""The study's pre-processing, fmtest's against a faithful re-statement of the upstream code, on the same images.

Each upstream function below restates what the published code does, line by line, with the libraries
it used (torchvision transforms, PIL, cv2, timm); random weights stand in for the checkpoints.
Sources: Text2Seg `text2seg/text2seg.py` (`predict_CLIPS`, `predict_CLIP`) and `text2seg/utils.py`
(`segment_image`); GroundingDINO's `load_image` transform (`datasets/transforms.py`, DETR's resize);
CLIP Surgery `clip/clip.py` (`clip_feature_surgery`, `similarity_map_to_points`); Segment-Any-Anomaly
`SAA/model.py` (`single_object_similarity`) and `SAA/modelinet.py` (`ModelINet`).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from fm_fixtures import tiny_encoder
from PIL import Image

from fmtest.models import imagenet_cnn, registry
from fmtest.models.clip_surgery import ClipSurgery
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.clip_surgery_sam import similarity_points
from fmtest.pipelines.saa_plus import SaaPlus
from fmtest.pipelines.sam_clip import text2seg_crop

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(smooth * 255 * 2 - 64 + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- Text2Seg's CLIP Surgery + SAM


def upstream_load_image_tensor(image_rgb: np.ndarray) -> torch.Tensor:
    """GroundingDINO's load_image: T.RandomResize([800], max_size=1333) (DETR's get_size_with_aspect_ratio,
    then torchvision's resize of the PIL image), ToTensor, Normalize with ImageNet's mean/std."""
    pil = Image.fromarray(image_rgb)
    w, h = pil.size
    size, max_size = 800, 1333
    min_original, max_original = float(min((w, h))), float(max((w, h)))
    if max_original / min_original * size > max_size:
        size = int(round(max_size * min_original / max_original))
    if (w <= h and w == size) or (h <= w and h == size):
        oh, ow = h, w
    elif w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    resized = TF.resize(pil, [oh, ow])
    return T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(resized))


def upstream_clips_input(image_rgb: np.ndarray, n_px: int) -> torch.Tensor:
    """Text2Seg's predict_CLIPS: `preprocess(image)` on load_image's tensor, with
    preprocess = Compose([Resize((224, 224), interpolation=BICUBIC), Normalize(CLIP mean, CLIP std)])."""
    preprocess = T.Compose([T.Resize((n_px, n_px), interpolation=T.InterpolationMode.BICUBIC, antialias=False),
                            T.Normalize(CLIP_MEAN, CLIP_STD)])
    return preprocess(upstream_load_image_tensor(image_rgb))


@pytest.fixture(scope="module")
def surgery():
    return ClipSurgery(tiny_encoder(image_size=64, layers=3, seed=3), depth=2)


@pytest.mark.parametrize("hw", [(90, 130), (40, 300), (600, 450), (800, 1000)])
def test_text2seg_clip_input_is_groundingdinos_tensor_normalised_twice(surgery, hw):
    """(40, 300) takes DETR's longest-side limit; (800, 1000) already has its shortest side at 800."""
    image = random_image(*hw, seed=sum(hw))
    ours = surgery.clip_input([image], "text2seg")[0]
    torch.testing.assert_close(ours, upstream_clips_input(image, 64), atol=1e-4, rtol=1e-4)
    assert (ours - surgery.clip_input([image], "clip")[0]).abs().max() > 0.1  # CLIP's own input is another


def test_text2seg_token_norm_divides_along_the_token_axis(surgery):
    """predict_CLIPS: image_features / image_features.norm(dim=1), then clip_feature_surgery with the
    empty string's ensemble as the redundant feature; the map is similarity[1:, 0]."""
    images = [random_image(70, 90, seed=1), random_image(64, 64, seed=2)]
    tokens = surgery.vision(upstream_clips_input(images[0], 64)[None])  # CS-ViT-B/16's encode_image
    tokens = tokens / tokens.norm(dim=1, keepdim=True)
    text = surgery.text_features(["defect"])
    redundant = surgery.text_features([""])
    upstream = (tokens @ (text - redundant).t())[0, 1:, 0]
    ours = surgery.patch_similarity(images, ["defect"], redundant_texts=[""], clip_input="text2seg",
                                    token_norm="across_tokens")
    torch.testing.assert_close(ours[0, 0].flatten(), upstream, atol=1e-5, rtol=1e-4)
    per_token = surgery.patch_similarity(images, ["defect"], redundant_texts=[""], clip_input="text2seg")
    assert (per_token[0, 0].flatten() - upstream).abs().max() > 1e-3


def upstream_similarity_map_to_points(sm: torch.Tensor, shape: tuple[int, int], t: float = 0.8,
                                      down_sample: int = 2) -> tuple[list[list[int]], np.ndarray]:
    """CLIP Surgery's similarity_map_to_points, as Text2Seg calls it with `similarity[1:, 0]`."""
    side = int(sm.shape[0] ** 0.5)
    sm = sm.reshape(1, 1, side, side)
    down_side = side // down_sample
    sm = torch.nn.functional.interpolate(sm, (down_side, down_side), mode="bilinear")[0, 0, :, :]
    h, w = sm.shape
    sm = sm.reshape(-1)
    sm = (sm - sm.min()) / (sm.max() - sm.min())
    rank = sm.sort(0)[1]
    scale_h = float(shape[0]) / h
    scale_w = float(shape[1]) / w
    num = min((sm >= t).sum(), sm.shape[0] // 2)
    labels = np.ones(num * 2).astype("uint8")
    labels[num:] = 0
    points = []
    for idx in list(rank[-num:]) + list(rank[:num]):
        x = min((idx % w + 0.5) * scale_w, shape[1] - 1)
        y = min((idx // w + 0.5) * scale_h, shape[0] - 1)
        points.append([int(x.item()), int(y.item())])
    return points, labels


@pytest.mark.parametrize("shape", [(375, 500), (333, 517), (250, 300)])
def test_integer_points_are_clip_surgerys_truncated_points(shape):
    torch.manual_seed(sum(shape))
    grid = torch.rand(14, 14)
    expected, expected_labels = upstream_similarity_map_to_points(grid.flatten(), shape)
    points, labels = similarity_points(grid, shape, integer=True)
    np.testing.assert_array_equal(points, expected)
    np.testing.assert_array_equal(labels, expected_labels)
    exact, _ = similarity_points(grid, shape)
    assert not np.array_equal(exact, expected)  # fmtest's default prompts SAM at the patch centres


# --------------------------------------------------------------------------- Text2Seg's SAM + CLIP crop


def upstream_crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """text2seg/utils.py segment_image(image, mask).crop(convert_box_xywh_to_xyxy(bbox)), with SAM's record
    bbox (segment_anything.utils.amg: box_xyxy_to_xywh(batched_mask_to_box(mask)))."""
    from segment_anything.utils.amg import batched_mask_to_box, box_xyxy_to_xywh

    segmented = np.zeros_like(image)
    segmented[mask] = image[mask]
    black_image = Image.new("RGB", image.shape[:2], (0, 0, 0))
    transparency = np.zeros_like(mask, dtype=np.uint8)
    transparency[mask] = 255
    black_image.paste(Image.fromarray(segmented), mask=Image.fromarray(transparency, mode="L"))
    x, y, w, h = box_xyxy_to_xywh(batched_mask_to_box(torch.as_tensor(mask)[None])[0]).tolist()
    return np.asarray(black_image.crop([x, y, x + w, y + h]))


@pytest.mark.parametrize("hw, box", [
    ((40, 100), (10, 20, 60, 90)),  # landscape, the mask right of the shorter side: Text2Seg's crop is black
    ((40, 100), (5, 35, 20, 70)),  # straddling it
    ((120, 50), (30, 110, 5, 45)),  # portrait, below it
    ((64, 64), (3, 60, 7, 40)),  # square: only the last row and column go
])
def test_text2seg_crop_is_what_segment_image_hands_clip(hw, box):
    image = random_image(*hw, seed=hw[0])
    mask = np.zeros(hw, bool)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = True
    mask[top, left] = False  # not a plain rectangle
    np.testing.assert_array_equal(text2seg_crop(image, mask), upstream_crop(image, mask))


# --------------------------------------------------------------------------- SAA+'s saliency input


def upstream_saa_features(backbone: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    """SAA/model.py single_object_similarity's input through ModelINet (SAA/modelinet.py): unit features (1, C, h, w)."""
    resize_image = cv2.resize(image, (256, 256))
    input_image = np.array(TF.resize(TF.to_pil_image(resize_image), (256, 256)))  # ResizeLongestSide(256)
    x = torch.as_tensor(input_image).permute(2, 0, 1).contiguous()[None, :, :, :]
    pixel_mean = torch.tensor([0.485 * 255, 0.456 * 255, 0.406 * 255]).view(-1, 1, 1)
    pixel_std = torch.tensor([0.229 * 255, 0.224 * 255, 0.225 * 255]).view(-1, 1, 1)
    x = (x - pixel_mean) / pixel_std  # no padding: the image is 256 x 256 already
    with torch.no_grad():
        features = backbone(x)
    size_0 = features[0].shape[2:]
    features = torch.cat([features[0]] + [F.interpolate(f, size_0) for f in features[1:]], dim=1)
    return F.normalize(features, dim=1)


def upstream_saa_saliency(backbone: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The rest of single_object_similarity: the mean of the 400 largest self-dissimilarities, resized back."""
    features = upstream_saa_features(backbone, image)
    b, c, h, w = features.shape
    flat = features.view(b * c, h * w)
    similarity = 0.5 * (1 - flat.T @ flat)
    similarity = similarity.sort(dim=1, descending=True)[0]
    heat = torch.mean(similarity[:, :400], dim=1).view(h, w).numpy()
    return cv2.resize(heat, (image.shape[1], image.shape[0]))


@pytest.fixture(scope="module")
def timm_resnet():
    """A timm ResNet-18 (random weights) as fmtest loads it, and the same weights as SAA+'s features_only model."""
    torch.manual_seed(0)
    full = timm.create_model("resnet18", pretrained=False).eval()
    features_only = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3)).eval()
    missing, _ = features_only.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    return imagenet_cnn.ImageNetCnn(full, "random-timm-resnet18"), features_only


def test_saa_saliency_features_are_modelinets_on_the_same_image(timm_resnet):
    """Bilinear resize to 256 (cv2's default; an area resize would differ on this image, larger than 256 both
    ways), ImageNet normalisation in the channel order given, timm's stages 1-3 on stage 1's grid."""
    cnn, features_only = timm_resnet
    image = random_image(320, 400, seed=5)
    ours = F.normalize(imagenet_cnn.stage_maps(cnn, image, 256), dim=1)
    torch.testing.assert_close(ours, upstream_saa_features(features_only, image), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_saa_saliency_map_is_saas_on_the_same_image(timm_resnet):
    cnn, features_only = timm_resnet
    image = random_image(320, 400, seed=5)
    with registry.inject(imagenet_cnn.WIDE_RESNET50_TIMM_KEY, cnn):
        pipeline = SaaPlus(PipelineContext(dataset="mvtec", options={"saliency": "wideresnet50"}))
        ours = pipeline.saliency(image, "k")
    np.testing.assert_allclose(ours, upstream_saa_saliency(features_only, image), atol=1e-5)


@pytest.mark.slow
def test_timms_wide_resnet_file_loads_into_timms_architecture(tmp_path):
    """The registry's timm file (random weights here, saved under its name) is built by timm, not torchvision."""
    torch.manual_seed(1)
    reference = timm.create_model("wide_resnet50_2", pretrained=False).eval()
    torch.save(reference.state_dict(), tmp_path / registry.spec(imagenet_cnn.WIDE_RESNET50_TIMM_KEY).filename)
    loaded = imagenet_cnn.load_resnet(imagenet_cnn.WIDE_RESNET50_TIMM_KEY, tmp_path)
    assert type(loaded.module) is type(reference)
    features_only = timm.create_model("wide_resnet50_2", pretrained=False, features_only=True, out_indices=(1, 2, 3))
    features_only.load_state_dict(reference.state_dict(), strict=False)
    image = random_image(200, 260, seed=2)
    ours = F.normalize(imagenet_cnn.stage_maps(loaded, image, 256), dim=1)
    x = (torch.as_tensor(cv2.resize(image, (256, 256))).permute(2, 0, 1)[None] - torch.tensor(
        [0.485 * 255, 0.456 * 255, 0.406 * 255]).view(-1, 1, 1)) / torch.tensor([0.229 * 255, 0.224 * 255,
                                                                               0.225 * 255]).view(-1, 1, 1)
    with torch.no_grad():
        maps = features_only.eval()(x)
    upstream = F.normalize(torch.cat([maps[0]] + [F.interpolate(m, maps[0].shape[2:]) for m in maps[1:]], 1), dim=1)
    torch.testing.assert_close(ours, upstream, atol=1e-4, rtol=1e-4)
