"""Frozen-backbone features, computed once and cached on disk.

When the backbone never trains (``linear_probe``), every epoch, every fold of a cross-validation and
every point of a learning curve would repeat the same backbone forward pass. Instead the pooled
features (the input of the classification head) are computed once per example and stored as safetensors,
and the head trains on them. No library offers this for a Trainer: ``Trainer`` always runs the whole model.

The store is keyed in two levels. A *feature space* is everything but the rows: the adapter, the backbone
weights' sha256 and the preprocessing (and, where the task preprocesses training rows differently, whether the
rows are training rows). Within a space, each example is keyed by a hash of its input values (the text, the
image's encoded bytes), not by the split it came in: a fold, a learning-curve point or a re-split holding the same
examples reads their features back instead of extracting them again. A space is a set of shard files
``<space>.<shard>.safetensors`` (``features`` and the rows' ``digests``), each written once, atomically; misses are
computed and added as a new shard, so concurrent runs never rewrite a file another one reads.

A head adapter says how a model splits into "features" and "head". Before the cache is used, the
adapter is checked on one batch: the head applied to the features must give the model's own logits,
otherwise the run falls back to the normal path (and says so), so an unusual architecture can only
be slower, never wrong.
"""

from __future__ import annotations

import hashlib
import json
from array import array
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .cache import cache_root
from .data.prepare import LABEL, column_values
from .tasks.base import get_task

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2


def cache_dir() -> Path:
    """``features/`` in the hf-transfer cache (``hf_transfer.cache.cache_root``)."""
    return cache_root() / "features"


# ------------------------------------------------------------------------------------------ head adapters

class HeadAdapter(ABC):
    """Splits a classification model into a frozen feature extractor and a trainable head."""

    name: ClassVar[str]

    @staticmethod
    @abstractmethod
    def applies_to(model: nn.Module) -> bool:
        """Could this adapter fit ``model``? (``adapter_reproduces_model`` then checks that it does.)"""

    @abstractmethod
    def features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen part: what gets cached."""

    @abstractmethod
    def logits(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """The trainable part, applied to cached features."""

    @abstractmethod
    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        """The modules ``logits`` runs: all that a training step over cached features needs to see."""


class TimmPooledHead(HeadAdapter):
    """timm models: ``forward_head(pre_logits=True)`` is exactly the classifier's input."""

    name = "timm-pre-logits"

    @staticmethod
    def applies_to(model: nn.Module) -> bool:
        return hasattr(getattr(model, "timm_model", None), "forward_head")

    def features(self, model, batch):
        timm_model = model.timm_model
        return timm_model.forward_head(timm_model.forward_features(batch["pixel_values"]), pre_logits=True)

    def logits(self, model, features):
        return model.timm_model.get_classifier()(features)

    def head_modules(self, model):
        return [model.timm_model.get_classifier()]


class FirstTokenHead(HeadAdapter):
    """Encoders whose head reads the first token (BERT's pooler, RoBERTa's classification head).

    The cached feature is the last hidden state of that token, kept as a length-1 sequence so both
    head styles can consume it unchanged.
    """

    name = "first-token"

    @staticmethod
    def applies_to(model: nn.Module) -> bool:
        return getattr(model, "base_model", model) is not model and hasattr(model, "classifier")

    def features(self, model, batch):
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return model.base_model(**inputs).last_hidden_state[:, :1]

    def logits(self, model, features):
        pooler = getattr(model.base_model, "pooler", None)
        return model.classifier(pooler(features) if pooler is not None else features)

    def head_modules(self, model):
        pooler = getattr(model.base_model, "pooler", None)
        return [pooler, model.classifier] if pooler is not None else [model.classifier]


class OwnSplitHead(HeadAdapter):
    """Models that name their own split (a fused model): ``tower_features`` is frozen, ``logits_from_features``
    and ``head_modules`` are the head."""

    name = "own-split"

    @staticmethod
    def applies_to(model: nn.Module) -> bool:
        return all(callable(getattr(model, m, None)) for m in ("tower_features", "logits_from_features", "head_modules"))

    def features(self, model, batch, part: str | None = None):
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return model.tower_features(**inputs, **({"towers": (part,)} if part else {}))

    def logits(self, model, features):
        return model.logits_from_features(features)

    def head_modules(self, model):
        return list(model.head_modules())

    @staticmethod
    def parts(model) -> dict[str, str]:
        """Part -> parameter prefix, when the model caches its features part by part (``feature_parts``)."""
        return model.feature_parts() if callable(getattr(model, "feature_parts", None)) else {}


class _OnePart:
    """One part of a model that caches its features part by part: what ``extract_features`` and ``feature_key``
    read of an adapter (its name and its features), no head."""

    def __init__(self, adapter: OwnSplitHead, part: str) -> None:
        self.adapter, self.part, self.name = adapter, part, f"{adapter.name}:{part}"

    def features(self, model, batch):
        return self.adapter.features(model, batch, self.part)


HEAD_ADAPTERS: tuple[type[HeadAdapter], ...] = (OwnSplitHead, TimmPooledHead, FirstTokenHead)


def head_adapter_for(model: nn.Module) -> HeadAdapter | None:
    return next((cls() for cls in HEAD_ADAPTERS if cls.applies_to(model)), None)


# ----------------------------------------------------------------------------------------- cache keys

def backbone_digest(model: nn.Module, head_parameters: tuple[str, ...]) -> str:
    """sha256 of every weight and buffer outside the head (the features depend on nothing else)."""
    head = set(head_parameters)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in head:
            continue
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy
    return digest.hexdigest()


def part_digest(model: nn.Module, prefix: str) -> str:
    """sha256 of the weights and buffers under ``prefix`` (one tower), names taken relative to it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(prefix):
            digest.update(f"{name[len(prefix):]}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def part_preprocessing(description: str, part: str, parts: dict[str, str]) -> str:
    """The preprocessing description one part's features depend on: its own entry and the shared ones."""
    described = json.loads(description)
    return json.dumps({k: v for k, v in described.items() if k == part or k not in parts}, sort_keys=True)


def feature_key(adapter: HeadAdapter | _OnePart, backbone: str, split_fingerprint: str, preprocessing: str) -> str:
    """One whole split's key (``cached_features``; backbone ranking scores a split at a time)."""
    payload = json.dumps({"version": FORMAT_VERSION, "adapter": adapter.name, "backbone": backbone,
                          "data": split_fingerprint, "preprocessing": preprocessing}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


#: ``feature_space(rows=...)``: evaluation and training rows share a space unless the task preprocesses them apart.
ANY_ROWS = "any"


def feature_space(adapter: HeadAdapter | _OnePart, backbone: str, preprocessing: str, rows: str = ANY_ROWS) -> str:
    """The key of everything the features depend on besides the example itself (module docstring)."""
    payload = json.dumps({"version": FORMAT_VERSION, "adapter": adapter.name, "backbone": backbone,
                          "preprocessing": preprocessing, "rows": rows}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


DIGEST_SIZE = 16
"""Bytes of an example's content digest (blake2b): 128 bits, no collision among any realistic number of rows."""


def _feed(digest, value: Any) -> None:
    """Hash one input value with its type and length, so that ``["ab"]`` and ``["a", "b"]`` differ. An encoded
    image (``{bytes, path}``) counts by its bytes, read from the file when only the path is stored."""
    if value is None:
        digest.update(b"N")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        digest.update(b"B%d:" % len(value))
        digest.update(value)
    elif isinstance(value, str):
        encoded = value.encode("utf-8", "surrogatepass")
        digest.update(b"S%d:" % len(encoded))
        digest.update(encoded)
    elif isinstance(value, dict) and {"bytes", "path"} <= set(value):
        content = value["bytes"]
        if content is None and value["path"]:
            try:
                content = Path(value["path"]).read_bytes()
            except OSError:  # extraction names the unreadable file; its key is its path meanwhile
                content = f"unreadable:{value['path']}"
        _feed(digest, content)
    elif isinstance(value, dict):
        digest.update(b"D%d:" % len(value))
        for key in sorted(value):
            _feed(digest, str(key))
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)) and value and all(type(item) is int for item in value):
        try:  # token ids: one C-level conversion instead of one update per id
            packed = array("q", value).tobytes()
        except OverflowError:
            packed = repr(value).encode()
        digest.update(b"I%d:" % len(value))
        digest.update(packed)
    elif isinstance(value, (list, tuple)):
        digest.update(b"L%d:" % len(value))
        for item in value:
            _feed(digest, item)
    else:  # numbers, booleans
        _feed(digest, f"{type(value).__name__}:{value!r}")


def example_digests(split, columns: list[str], batch_size: int = 1024) -> list[bytes]:
    """A content digest per row of ``split`` over the input ``columns`` (never the label), read from Arrow
    (an image column as its stored bytes: nothing is decoded)."""
    digests: list[bytes] = []
    table = split.select_columns(columns).with_format("arrow")
    for start in range(0, len(split), batch_size):
        batch = table[start:start + batch_size]
        for values in zip(*(batch.column(column).to_pylist() for column in columns)):
            digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
            for value in values:
                _feed(digest, value)
            digests.append(digest.digest())
    return digests


# -------------------------------------------------------------------------------------- extraction

@dataclass
class FeatureSet(torch.utils.data.Dataset):
    """Features and labels of one split, in the split's order."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "labels": self.labels[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one indexing operation (``DataLoader`` calls this instead of ``__getitem__`` per
        example): the head's steps take microseconds, so per-example Python work would dominate them."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"features": self.features[index], "labels": self.labels[index]}


def collate_features(examples: list[dict[str, torch.Tensor]] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(examples, dict):  # already a batch (``FeatureSet.__getitems__``)
        return examples
    return {"features": torch.stack([e["features"] for e in examples]),
            "labels": torch.stack([e["labels"] for e in examples])}


def _length_order(split) -> list[int] | None:
    """Text: extract in order of length so that each batch carries little padding."""
    if "input_ids" not in split.column_names:
        return None
    lengths = [len(ids) for ids in split["input_ids"]]
    return sorted(range(len(lengths)), key=lengths.__getitem__)


@torch.inference_mode()
def extract_features(model: nn.Module, adapter: HeadAdapter | _OnePart, split, collator: Callable, batch_size: int,
                     num_workers: int = 0, description: str = "features") -> torch.Tensor:
    """Run the frozen backbone once over ``split`` (in eval mode) and return its features in split order."""
    from tqdm.auto import tqdm

    order = _length_order(split)
    ordered = split.select(order) if order is not None else split
    loader = torch.utils.data.DataLoader(ordered, batch_size=batch_size, collate_fn=collator,
                                         num_workers=num_workers)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for batch in tqdm(loader, desc=f"Extracting {description}", leave=False):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        chunks.append(adapter.features(model, batch).float().cpu())
    model.train(was_training)
    features = torch.cat(chunks)
    if order is not None:
        restored = torch.empty_like(features)
        restored[torch.tensor(order)] = features
        features = restored
    return features


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors under a temporary name, then one rename: a reader sees the whole file or none."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def cached_features(key: str, compute: Callable[[], torch.Tensor], directory: Path | None = None) -> tuple[torch.Tensor, bool]:
    """The features stored under ``key``, computing and storing them (atomically) on a miss."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = (directory or cache_dir()) / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(path)["features"], True
        except (SafetensorError, KeyError, OSError) as error:
            logger.warning("Feature cache file %s is unreadable (%s); computing the features again.", path, error)
    features = compute()
    _save_atomic({"features": features}, path, {"key": key})
    return features, False


def _read_shards(space: str, wanted: dict[bytes, list[int]], directory: Path) -> list[tuple[torch.Tensor, list[bytes]]]:
    """(features, digests) of the ``wanted`` rows found in the space's shards, each digest once."""
    from safetensors import SafetensorError, safe_open

    found: set[bytes] = set()
    parts = []
    for shard in sorted(directory.glob(f"{space}.*.safetensors")):
        try:
            with safe_open(str(shard), framework="pt") as handle:
                raw = handle.get_tensor("digests").numpy().tobytes()
                keys = [raw[i:i + DIGEST_SIZE] for i in range(0, len(raw), DIGEST_SIZE)]
                take = [i for i, key in enumerate(keys) if key in wanted and key not in found]
                if not take:
                    continue
                features = handle.get_tensor("features")[torch.tensor(take)]
        except (SafetensorError, KeyError, OSError, RuntimeError, ValueError) as error:
            logger.warning("Feature cache file %s is unreadable (%s); its rows are computed again.", shard, error)
            continue
        taken = [keys[i] for i in take]
        found.update(taken)
        parts.append((features, taken))
    return parts


def content_cached_features(space: str, digests: list[bytes], compute: Callable[[list[int]], torch.Tensor],
                            directory: Path | None = None) -> tuple[torch.Tensor, int]:
    """Features of the rows with these content ``digests``, in their order, and how many examples were computed.

    Rows found in the space's shards are read; the others (each distinct example once) are computed by
    ``compute(row indices)`` and stored as one new shard, named by its digests.
    """
    directory = directory or cache_dir()
    rows: dict[bytes, list[int]] = {}
    for row, key in enumerate(digests):
        rows.setdefault(key, []).append(row)
    parts = _read_shards(space, rows, directory)
    found = {key for _, keys in parts for key in keys}
    missing = [key for key in rows if key not in found]
    if missing:
        computed = compute([rows[key][0] for key in missing])
        joined = b"".join(missing)
        name = hashlib.sha256(joined).hexdigest()[:16]
        _save_atomic({"features": computed,
                      "digests": torch.frombuffer(bytearray(joined), dtype=torch.uint8).reshape(-1, DIGEST_SIZE)},
                     directory / f"{space}.{name}.safetensors", {"space": space, "format": str(FORMAT_VERSION)})
        parts.append((computed, missing))
    if not parts:
        return compute([]), 0
    first = parts[0][0]
    features = torch.empty((len(digests), *first.shape[1:]), dtype=first.dtype)
    for part, keys in parts:
        source = [i for i, key in enumerate(keys) for _ in rows[key]]
        target = [row for key in keys for row in rows[key]]
        features[torch.tensor(target)] = part[torch.tensor(source)].to(first.dtype)
    return features, len(missing)


# ------------------------------------------------------------------------------------ training the head

class CachedHeadModel(nn.Module):
    """The model's own head, fed cached features; the full model is kept for saving afterwards.

    Only the head's modules are registered as children: ``Trainer`` walks the module tree at every step
    (``train()``, ``zero_grad``, gradient clipping), and walking a frozen backbone's hundreds of modules
    took longer than the head's own forward and backward. Each is registered at its path in the full model
    (``classifier``, ``timm_model.fc``), so its parameters keep their names: the strategy's learning rates
    (``strategy.learning_rates``) and the weight-decay exclusions, both keyed by name, apply as without the cache.
    """

    def __init__(self, model: nn.Module, adapter: HeadAdapter) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)  # outside the module tree (shares the head's modules)
        self.adapter = adapter
        self.config = model.config
        paths = {id(module): name for name, module in model.named_modules() if name}
        for index, module in enumerate(adapter.head_modules(model)):
            self._mount(paths.get(id(module)) or f"head_{index}", module)

    def _mount(self, path: str, module: nn.Module) -> None:
        """Register ``module`` at the dotted ``path`` of the full model, with empty containers in between; at
        ``head_<n>`` where something of this wrapper's own (``model``, ``adapter``, ``config``) holds that name."""
        owner: nn.Module = self
        *parents, leaf = path.split(".")
        for part in parents:
            child = owner._modules.get(part)
            if child is None and not hasattr(owner, part):
                child = nn.Module()
                owner.add_module(part, child)
            if child is None:
                owner, leaf = self, f"head_{len(self._modules)}"
                break
            owner = child
        existing = owner._modules.get(leaf)
        if existing is module:
            return
        if existing is not None or hasattr(owner, leaf):
            owner, leaf = self, f"head_{len(self._modules)}"
        owner.add_module(leaf, module)

    def state_dict(self, *args, **kwargs):
        """Contiguous tensors: checkpoints go through safetensors, which refuses channels_last weights."""
        state = super().state_dict(*args, **kwargs)
        return type(state)((key, value.contiguous()) for key, value in state.items())

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        logits = self.adapter.logits(self.model, features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def adapter_reproduces_model(model: nn.Module, adapter: HeadAdapter, batch: dict[str, torch.Tensor]) -> bool:
    """Does ``head(features(x))`` equal the model's logits on this batch (eval mode)?"""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            expected = model(**inputs).logits
            actual = adapter.logits(model, adapter.features(model, inputs))
        return actual.shape == expected.shape and torch.allclose(actual, expected, atol=1e-4, rtol=1e-4)
    except Exception as error:  # an unusual forward signature: not this adapter's model
        logger.debug("Head adapter %s does not fit %s: %s", adapter.name, type(model).__name__, error)
        return False
    finally:
        model.train(was_training)


def _adapter_checked(model: nn.Module, adapter: HeadAdapter, backbone: str, inputs) -> bool:
    """``adapter_reproduces_model`` on two validation examples, remembered per backbone in the cache folder.

    A cached run would otherwise spend more time on this check (a first forward pass) than on its training.
    """
    token = hashlib.sha256(f"{adapter.name}:{type(model).__name__}:{backbone}".encode()).hexdigest()[:32]
    marker = cache_dir() / "checked" / token
    if marker.is_file():
        return True
    probe = inputs.collator([inputs.validation[i] for i in range(min(2, len(inputs.validation)))])
    if not adapter_reproduces_model(model, adapter, probe):
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


@dataclass
class CachedInputs:
    """What the trainer needs to train the head from features, plus cache statistics for metrics.json."""

    model: CachedHeadModel
    train: FeatureSet
    validation: FeatureSet
    test: FeatureSet | None
    hits: dict[str, bool]
    extract_s: float

    computed: dict[str, int] | None = None
    """Examples whose features were extracted, per split (0: all read from the cache)."""

    def report(self) -> dict[str, Any]:
        return {"adapter": self.model.adapter.name, "hits": self.hits, "computed": self.computed or {},
                "extract_s": round(self.extract_s, 2)}


# ------------------------------------------------------------------------------------------ the decision

def cache_disabled_reason(recipe, strategy, world_size: int) -> str | None:
    """Why this run cannot train its head from cached features (``None``: it can)."""
    if not strategy.freezes_backbone:
        return "the backbone trains"
    if not recipe.data.feature_cache:
        return "data.feature_cache is false"
    if recipe.method.name:
        return f"method '{recipe.method.name}' needs the full model in the loop"
    blocker = get_task(recipe.task).cache_blocker(recipe)
    if blocker is not None:
        return blocker
    if world_size > 1:
        return "it runs in several processes"
    return None


def preprocessing_description(recipe, data, model, processor) -> str:
    """Everything besides weights and rows that changes the features."""
    description: dict[str, Any] = {"task": recipe.task, "columns": data.columns,
                                   **get_task(recipe.task).preprocessing_identity(recipe, model, processor)}
    return json.dumps(description, sort_keys=True, default=str)


def build_cached_inputs(recipe, data, model, processor, strategy, inputs, args) -> CachedInputs | None:
    """Features of every split from the cache (computing the missing ones), or ``None`` with a log line."""
    import time

    reason = cache_disabled_reason(recipe, strategy, args.world_size)
    if reason is not None:
        if strategy.freezes_backbone:
            logger.info("Feature cache off: %s.", reason)
        return None
    started = time.perf_counter()
    model.to(args.device)  # extraction runs where training would (the Trainer moves only the head later)
    adapter = head_adapter_for(model)
    backbone = backbone_digest(model, strategy.layout.head) if adapter is not None else ""
    if adapter is None or not _adapter_checked(model, adapter, backbone, inputs):
        logger.info("Feature cache off: no head adapter reproduces %s's logits from pooled features.",
                    type(model).__name__)
        return None
    preprocessing = preprocessing_description(recipe, data, model, processor)
    task = get_task(recipe.task)
    parts = OwnSplitHead.parts(model) if isinstance(adapter, OwnSplitHead) else {}
    preprocessing = _space_description(preprocessing, task.row_captured_identity, parts)
    spaces = _feature_spaces(model, adapter, parts, backbone, preprocessing, task.train_preprocessing_differs)
    roles = {role: data.columns[role] for role in sorted(data.columns) if role in task.input_roles}  # never the label
    sets: dict[str, FeatureSet | None] = {}
    hits: dict[str, bool] = {}
    computed: dict[str, int] = {}
    for name in ("train", "validation", "test"):
        split, encoded = getattr(data, name), getattr(inputs, name)
        if split is None or encoded is None:
            sets[name] = None
            continue
        found = []
        for part, (part_adapter, space) in spaces[name == "train"].items():
            digests = (example_digests(split, _part_columns(part, roles)) if part is not None
                       else _row_digests(split, encoded, list(roles.values())))

            def extract(indices: list[int], part_adapter=part_adapter, part=part):
                rows = encoded if indices == list(range(len(encoded))) else encoded.select(indices)
                return extract_features(model, part_adapter, rows, inputs.collator, args.per_device_eval_batch_size,
                                        args.dataloader_num_workers, description=f"{name} ({part})" if part else name)

            found.append(content_cached_features(space, digests, extract))
        features = found[0][0] if len(found) == 1 else torch.cat([f for f, _ in found], dim=-1)
        computed[name] = max(count for _, count in found)
        hits[name] = computed[name] == 0
        labelled = split if len(encoded) == len(split) else encoded  # rows may be parts of examples (text windows)
        sets[name] = FeatureSet(features, torch.tensor(column_values(labelled, LABEL), dtype=torch.long))
    logger.info("Feature cache (%s): %s", cache_dir(), "; ".join(
        f"{name} {len(sets[name])} rows, {computed[name] or 'none'} extracted" for name in computed)
                + ("; nothing extracted, all read from the cache" if not any(computed.values()) else ""))
    return CachedInputs(model=CachedHeadModel(model, adapter), train=sets["train"], validation=sets["validation"],
                        test=sets["test"], hits=hits, extract_s=time.perf_counter() - started, computed=computed)


def _row_digests(split, encoded, input_columns: list[str]) -> list[bytes]:
    """Each row's digest: over the model inputs the task stored (a text's token ids after truncation, an image's
    bytes before its transform), else over the split's input columns (then a row must be an example)."""
    stored = getattr(encoded, "column_names", None)
    if stored is not None and hasattr(encoded, "select_columns"):
        columns = [column for column in stored if column != LABEL]
        if columns:
            return example_digests(encoded, columns)
    if len(encoded) != len(split):
        raise ValueError(f"{len(encoded)} preprocessed rows for {len(split)} examples, and no stored inputs to key them")
    return example_digests(split, input_columns)


def _part_columns(part: str, roles: dict[str, str]) -> list[str]:
    """The input columns one part's features depend on: those of the roles named like it (``text`` and
    ``text_pair`` for a ``text`` tower), so that a model sharing only that tower shares its examples; all of them
    when no role is."""
    own = [column for role, column in roles.items() if role == part or role.startswith(f"{part}_")]
    return own or list(roles.values())


def _space_description(description: str, captured: tuple[str, ...], parts: dict[str, str]) -> str:
    """The preprocessing description without what the rows' digests already show (``row_captured_identity``),
    at the top level and inside each part's entry."""
    if not captured:
        return description
    described = {key: value for key, value in json.loads(description).items() if key not in captured}
    for part in parts:
        if isinstance(described.get(part), dict):
            described[part] = {k: v for k, v in described[part].items() if k not in captured}
    return json.dumps(described, sort_keys=True)


def _feature_spaces(model: nn.Module, adapter: HeadAdapter, parts: dict[str, str], backbone: str, preprocessing: str,
                    train_differs: tuple[str, ...]) -> dict[bool, dict[str | None, tuple[Any, str]]]:
    """For evaluation rows (False) and training rows (True): part -> (what extracts it, its feature space).

    A model that caches its features part by part (a fused model's towers) gets one space per part, keyed on
    that part's weights and preprocessing, so that a model sharing a tower reuses it; others have one part,
    ``None``. Training rows get spaces of their own only for the parts whose preprocessing the task names in
    ``train_preprocessing_differs``.
    """
    spaces: dict[bool, dict[str | None, tuple[Any, str]]] = {False: {}, True: {}}
    if parts:
        for part, prefix in parts.items():
            one, weights = _OnePart(adapter, part), part_digest(model, prefix)
            described = part_preprocessing(preprocessing, part, parts)
            for training in (False, True):
                rows = "train" if training and part in train_differs else ANY_ROWS
                spaces[training][part] = (one, feature_space(one, weights, described, rows))
        return spaces
    differs = bool(set(train_differs) & set(json.loads(preprocessing)))
    for training in (False, True):
        rows = "train" if training and differs else ANY_ROWS
        spaces[training][None] = (adapter, feature_space(adapter, backbone, preprocessing, rows))
    return spaces
