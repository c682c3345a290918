"""Which checkpoint files fmtest expects, where it looks for them, and how a file is opened safely.

Every model loader asks this module for its file, so a missing checkpoint is reported the same way
everywhere: the file, the folder searched, and the `fmtest weights download` command that fetches it.

Tests (and programs embedding fmtest) can `inject` an already-built model under a weight key: the
loaders return it instead of opening a file, and `require` treats the key as available. This is how
random-weight tiny models run the real pipelines without any checkpoint on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fmtest.errors import DataError, MissingWeights

WEIGHTS_ENV = "FMTEST_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/fmtest/weights")


@dataclass(frozen=True)
class PinnedFile:
    """One file of a folder entry, with the size and sha256 the download must deliver."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class WeightSpec:
    """One expected checkpoint.

    `filename` may name a folder (Hugging Face layout); then `main_file` inside it is the file that
    `size`/`sha256` describe and `files` pins everything the folder needs, fetched from `url` + name
    (a URL at a fixed revision, so the pins stay true).
    `size`/`sha256` are None where no trustworthy published value was available: such a file is
    reported as "unverified", never checked against an invented hash.
    """

    key: str
    filename: str
    size: int | None
    sha256: str | None
    url: str
    license: str
    description: str
    main_file: str | None = None
    files: tuple[PinnedFile, ...] = ()
    sha256_prefix: str | None = None  # the leading hex digits of its sha256 in its file name (torchvision's)

    @property
    def is_folder(self) -> bool:
        return self.main_file is not None

    def path_in(self, folder: Path) -> Path:
        return folder / self.filename

    def main_path_in(self, folder: Path) -> Path:
        """The file whose size and hash the registry records (the folder's weights file for HF layouts)."""
        path = self.path_in(folder)
        return path / self.main_file if self.main_file else path


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# A fixed revision of the Hugging Face repository, so the files' sizes and sha256 (the LFS oid for the
# weights) below cannot change under us; `main` would follow every later upload.
_GDINO_REVISION = "a2bb814dd30d776dcf7e30523b00659f4f141c71"
_GDINO_HF = f"https://huggingface.co/IDEA-Research/grounding-dino-tiny/resolve/{_GDINO_REVISION}/"
_GDINO_FILES = (
    PinnedFile("config.json", 1644, "eec82c5ab66e16df12a9a212e68ac011779927c2536cf9078658e35d85f0c67a"),
    PinnedFile("model.safetensors", 689_359_096, "1a2412ef99bd74bcd3c2a246fa1e48581f8889a1300c9051974741314fc042f3"),
    PinnedFile("preprocessor_config.json", 457, "8454179ba95e2ad22947835aad7b45862a601fc0055ab88bf1ee70892d3aea60"),
    PinnedFile("tokenizer_config.json", 1237, "d40ab645b68211910b9170d22433d43186a6ec8ee6fd10ba170524b25bf4fb56"),
    PinnedFile("special_tokens_map.json", 125, "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3"),
    PinnedFile("tokenizer.json", 711_396, "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66"),
    PinnedFile("vocab.txt", 231_508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
)
_TORCHVISION_URL = "https://download.pytorch.org/models/"
_BERT_VOCAB = PinnedFile("vocab.txt", 231_508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3")
_GDINO_RELEASES = "https://github.com/IDEA-Research/GroundingDINO/releases/download/"

WEIGHTS: dict[str, WeightSpec] = {
    spec.key: spec
    for spec in (
        WeightSpec(
            key="sam_vit_h", filename="sam_vit_h_4b8939.pth", size=2_564_550_879,
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            url=_SAM_URL + "sam_vit_h_4b8939.pth", license="Apache-2.0",
            description="Segment Anything ViT-H (the study's SAM in every pipeline)",
        ),
        WeightSpec(
            key="sam_vit_l", filename="sam_vit_l_0b3195.pth", size=1_249_524_607,
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            url=_SAM_URL + "sam_vit_l_0b3195.pth", license="Apache-2.0",
            description="Segment Anything ViT-L (optional, smaller)",
        ),
        WeightSpec(
            key="sam_vit_b", filename="sam_vit_b_01ec64.pth", size=375_042_383,
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            url=_SAM_URL + "sam_vit_b_01ec64.pth", license="Apache-2.0",
            description="Segment Anything ViT-B (optional, smallest)",
        ),
        WeightSpec(
            key="groundingdino_swint_ogc", filename="grounding-dino-tiny", size=_GDINO_FILES[1].size,
            sha256=_GDINO_FILES[1].sha256, url=_GDINO_HF, license="Apache-2.0",
            description="GroundingDINO Swin-T OGC, converted to the Hugging Face layout "
                        "(IDEA-Research/grounding-dino-tiny; includes the BERT text encoder and vocabulary)",
            main_file="model.safetensors", files=_GDINO_FILES,
        ),
        WeightSpec(
            key="groundingdino_swint_ogc_pth", filename="groundingdino_swint_ogc.pth", size=693_997_677,
            sha256="3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799",
            url=_GDINO_RELEASES + "v0.1.0-alpha/groundingdino_swint_ogc.pth", license="Apache-2.0",
            description="GroundingDINO Swin-T OGC, the original release file (converted at load time; used "
                        "when grounding-dino-tiny/ is absent; needs bert_base_uncased_vocab)",
        ),
        WeightSpec(
            key="groundingdino_swinb_cogcoor_pth", filename="groundingdino_swinb_cogcoor.pth", size=938_057_991,
            sha256="46270f7a822e6906b655b729c90613e48929d0f2bb8b9b76fd10a856f3ac6ab7",
            url=_GDINO_RELEASES + "v0.1.0-alpha2/groundingdino_swinb_cogcoor.pth", license="Apache-2.0",
            description="GroundingDINO Swin-B COGCOOR, the original release file (optional, via gdino_checkpoint; "
                        "needs bert_base_uncased_vocab)",
        ),
        WeightSpec(
            key="bert_base_uncased_vocab", filename="bert-base-uncased", size=_BERT_VOCAB.size,
            sha256=_BERT_VOCAB.sha256,
            url="https://huggingface.co/bert-base-uncased/resolve/86b5e0934494bd15c9632b12f734a8a67f723594/",
            license="Apache-2.0",
            description="bert-base-uncased WordPiece vocabulary: the tokenizer of the original GroundingDINO .pth files",
            main_file="vocab.txt",
            files=(_BERT_VOCAB,),
        ),
        WeightSpec(
            key="clip_vit_b16_openai", filename="ViT-B-16.pt", size=None,
            sha256="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
            url="https://openaipublic.azureedge.net/clip/models/"
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
            license="MIT",
            description="CLIP ViT-B/16, OpenAI weights (also run as CS-ViT-B/16 by CLIP Surgery)",
        ),
        # torchvision names its files by the first 8 hex digits of their sha256; the loader checks that
        # prefix (as torch.hub does), the only published hash.
        WeightSpec(
            key="resnet50_imagenet", filename="resnet50-0676ba61.pth", size=None, sha256=None,
            sha256_prefix="0676ba61",
            url=_TORCHVISION_URL + "resnet50-0676ba61.pth", license="BSD-3-Clause",
            description="torchvision ResNet-50, ImageNet (IMAGENET1K_V1): features of the supervised "
                        "reference (without it: the bundled EfficientNet-Lite0)",
        ),
        WeightSpec(
            key="wide_resnet50_2_imagenet", filename="wide_resnet50_2-95faca4d.pth", size=None, sha256=None,
            sha256_prefix="95faca4d",
            url=_TORCHVISION_URL + "wide_resnet50_2-95faca4d.pth", license="BSD-3-Clause",
            description="torchvision Wide ResNet-50-2, ImageNet (IMAGENET1K_V1): SAA+'s saliency network with "
                        "other weights than SAA+'s (saa_plus saliency_weights = \"torchvision\")",
        ),
        # SAA+ builds its saliency network with timm.create_model("wide_resnet50_2", pretrained=True); timm's
        # weights for that name are these (timm 0.6.13, current when SAA+ was published; timm 1.0's racm_in1k).
        # No published sha256: "unverified".
        WeightSpec(
            key="wide_resnet50_2_timm", filename="wide_resnet50_racm-8234f177.pth", size=None, sha256=None,
            url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
                "wide_resnet50_racm-8234f177.pth",
            license="Apache-2.0",
            description="timm Wide ResNet-50-2, ImageNet (racm_in1k, what timm's pretrained=True loads): SAA+'s "
                        "saliency network (saa_plus saliency = \"wideresnet50\")",
        ),
    )
}


def spec(key: str) -> WeightSpec:
    try:
        return WEIGHTS[key]
    except KeyError:
        raise MissingWeights(f"unknown weights {key!r}; known: {', '.join(WEIGHTS)}") from None


def weights_dir(explicit: Path | None = None) -> Path:
    """--fm-weights, else $FMTEST_WEIGHTS, else ~/.cache/fmtest/weights."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else DEFAULT_WEIGHTS_DIR.expanduser()


_weights_folder = weights_dir  # `resolve` takes a parameter named weights_dir (the agreed signature)


def resolve(key: str, weights_dir: Path | None = None) -> Path:
    """The path of a present checkpoint (file or HF folder), or MissingWeights saying how to get it."""
    entry = spec(key)
    folder = _weights_folder(weights_dir)
    path = entry.path_in(folder)
    main = entry.main_path_in(folder)
    if not main.is_file():
        what = f"{entry.filename}/{entry.main_file}" if entry.is_folder else entry.filename
        raise MissingWeights(  # the message names file and folder: no path prefix repeating them
            f"{what} not found in {folder} (set --fm-weights or ${WEIGHTS_ENV}); "
            f"get it with `fmtest weights download {key}`"
        )
    return path


# --- injected models -------------------------------------------------------------------------------

_INJECTED: dict[str, object] = {}
_INJECT_LOCK = threading.Lock()


@contextmanager
def inject(key: str, model: object) -> Iterator[object]:
    """Make the loader for `key` return `model` (no file needed) until the block ends."""
    spec(key)
    with _INJECT_LOCK:
        previous = _INJECTED.get(key)
        _INJECTED[key] = model
    try:
        yield model
    finally:
        with _INJECT_LOCK:
            if previous is None:
                _INJECTED.pop(key, None)
            else:
                _INJECTED[key] = previous


def injected(key: str) -> object | None:
    return _INJECTED.get(key)


def user_injected_or_registry(key: str, checkpoint: Path | None,
                              registry_file: Callable[[], Path]) -> tuple[object | None, Path | None]:
    """What a model loader takes, in this order: the user's `checkpoint` when given, else the model injected
    under `key` (tests), else the registry's file (`registry_file()`, which raises MissingWeights when it is
    absent). Returns (the injected model, None) or (None, the file's resolved path)."""
    if checkpoint is None:
        model = injected(key)
        if model is not None:
            return model, None
        checkpoint = registry_file()
    return None, Path(checkpoint).resolve()


def require(key: str, weights_dir: Path | None = None) -> None:
    """Raise MissingWeights unless the checkpoint is present or a model is injected for it."""
    if injected(key) is None:
        resolve(key, weights_dir)


# --- hashing and safe opening ----------------------------------------------------------------------

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime): ViT-H is 2.5 GB and is hashed once per process."""
    path = Path(path)
    st = path.stat()
    cache_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if cache_key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[cache_key] = h.hexdigest()
    return _SHA_CACHE[cache_key]


def identify(path: Path, option: str) -> str:
    """The sha256 that identifies a checkpoint file (the pipeline's model id).

    A file carrying the name of an official registry file must BE that file: a fine-tuned model saved
    under the official name would otherwise be reported as the official one. Such a file (or a corrupt
    download) is refused with what to do; under any other name a file is the user's own and its hash
    says which model produced the results.
    """
    path = Path(path)
    sha = file_sha256(path)
    for entry in WEIGHTS.values():
        if not entry.is_folder and entry.sha256 is not None and path.name == entry.filename and sha != entry.sha256:
            raise DataError(f"sha256 is {sha}, expected {entry.sha256} for the official {entry.key} checkpoint: "
                            f"re-download it (`fmtest weights download {entry.key}`), or, if it is your own "
                            f"(e.g. fine-tuned) model, give the file another name and set {option} to it "
                            "in the suite config", path)
    return sha


def combined_id(*hashes: str) -> str:
    """One model id for a pipeline built from several checkpoints."""
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("+".join(hashes).encode()).hexdigest()


# Some official GroundingDINO .pth files pickle the training `argparse.Namespace` next to the weights.
# torch.load stays weights_only=True (no arbitrary code from a checkpoint); Namespace alone is allowed
# because it is a plain attribute bag that cannot execute anything when unpickled.
SAFE_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def load_state_dict(path: Path, nested_key: str | None = "model") -> dict:
    """Read a checkpoint's tensors (.pth/.pt via torch.load(weights_only=True), or .safetensors).

    A dict holding the state dict under `nested_key` (official GroundingDINO, training checkpoints)
    is unwrapped. Anything else that is not a name -> tensor mapping raises DataError naming the file.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingWeights("checkpoint file not found", path) from None
    except Exception as e:  # unpickling / format errors come in many types; all mean "not a checkpoint"
        raise DataError(f"not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                        path) from None
    if nested_key and isinstance(data, dict) and isinstance(data.get(nested_key), dict):
        data = data[nested_key]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise DataError("checkpoint holds no state dict of tensors", path)
    return data


def load_into(module, state: dict, path: Path) -> None:
    """Load a state dict strictly; a key mismatch means a wrong file, reported with examples."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: a checkpoint of another model size
        raise DataError(f"checkpoint does not match {type(module).__name__}: {str(e).splitlines()[-1][:300]}",
                        path) from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing keys (e.g. {', '.join(result.missing_keys[:3])})")
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {', '.join(result.unexpected_keys[:3])})")
    if problems:
        raise DataError(f"checkpoint does not match {type(module).__name__}: " + "; ".join(problems), path)
