"""Pretrained backbone weights, offline only.

``pretrained`` is either a local file or ``"cache"``:

- a file: ``.safetensors`` (read with safetensors), anything else as a torch checkpoint read with
  ``torch.load(weights_only=True)``, which accepts tensors and plain containers and refuses to unpickle
  any other object (a checkpoint from an untrusted source cannot run code). The file may be the native
  checkpoint (``resnet50-0676ba61.pth``, a timm ``model.safetensors``), a dict wrapping one under
  ``state_dict`` / ``model``, a DataParallel (``module.``) or ``torch.compile`` (``_orig_mod.``) save, or a
  cxr-bench checkpoint (its ``backbone.net.`` keys are taken, the head is not).
- ``"cache"``: the official checkpoint as torchvision / timm would have downloaded it: the torch hub
  ``checkpoints`` directory (``torch.hub.get_dir()``, moved by ``TORCH_HOME``) and the Hugging Face hub
  cache (moved by ``HF_HUB_CACHE`` / ``HF_HOME``). Files are only looked up, never downloaded.

Loading is strict for the backbone: a missing key, an unknown key or a shape mismatch is an error naming
them. Keys of the parts a backbone drops (classifier, auxiliary heads) are ignored, since every head brings
its own classifier. BatchNorm's ``num_batches_tracked`` counters may be missing (checkpoints older than
PyTorch 0.4.1, such as torchvision's ResNet-50 V1, have none).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import WeightsError
from ..utils.io import sha256_file
from .adapt import convert_first_conv_to_gray
from .backbones import Backbone, CachedWeights

log = logging.getLogger(__name__)

CACHE = "cache"
_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")
_CXR_BENCH_PREFIX = "backbone.net."


# ---------------------------------------------------------------------------------------------- reading
def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a weights file as ``{name: tensor}`` without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass the path of a .safetensors file or a torch state "
            f"dict (.pt/.pth), or pretrained='cache' to use a populated torchvision/timm cache"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise WeightsError(
            f"{path}: refused or unreadable as a weights-only torch checkpoint ({_load_error(e)}). Only tensors and "
            f"plain containers are loaded, never arbitrary pickled objects; re-save it as a plain state "
            f"dict (torch.save(model.state_dict(), path)) or as .safetensors"
        ) from e
    return _unwrap(obj, path)


def _load_error(e: Exception) -> str:
    # torch's message starts with advice to retry with weights_only=False, which is what must not be done;
    # keep only the unpickler's reason ("Unsupported global: GLOBAL getattr ...").
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    if m:
        return " ".join(m.group(1).split())
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
            return _strip_prefixes(dict(obj))
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], path)
        shown = ", ".join(repr(k) for k in list(obj)[:8])
        raise WeightsError(
            f"{path}: not a state dict (a mapping of parameter names to tensors) and no "
            f"{' / '.join(_WRAPPER_KEYS)} entry holding one; top-level keys: {shown or '(none)'}"
        )
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")


def _strip_prefixes(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if any(k.startswith(_CXR_BENCH_PREFIX) for k in sd):
        # A cxr-bench model checkpoint: its backbone, without the old run's head.
        sd = {k[len(_CXR_BENCH_PREFIX):]: v for k, v in sd.items() if k.startswith(_CXR_BENCH_PREFIX)}
    return sd


# ---------------------------------------------------------------------------------------------- caches
def torch_hub_checkpoints_dir() -> Path:
    """Where torch.hub (torchvision, timm's URL weights) keeps downloaded checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (so it can be redirected)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _locate(ref: CachedWeights) -> Path | None:
    if ref.hub_repo is None:
        path = torch_hub_checkpoints_dir() / ref.filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    # Reads refs/main and snapshots/ of the local cache; makes no network call.
    found = try_to_load_from_cache(ref.hub_repo, ref.filename, cache_dir=hf_hub_cache_dir())
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _describe(ref: CachedWeights) -> str:
    if ref.hub_repo is None:
        where = torch_hub_checkpoints_dir() / ref.filename
        how = f"download {ref.url} there" if ref.url else "copy the file there"
        return f"{where} (torch hub checkpoints; TORCH_HOME moves it; {how})"
    folder = "models--" + ref.hub_repo.replace("/", "--")
    return (f"{ref.filename} of {ref.hub_repo} in {hf_hub_cache_dir() / folder}/snapshots/*/ (Hugging Face "
            f"cache; HF_HUB_CACHE or HF_HOME moves it; `hf download {ref.hub_repo} {ref.filename}` fills it)")


def find_cached_weights(backbone: Backbone) -> tuple[Path, CachedWeights]:
    """The first of ``backbone.cached_weights`` present in a local cache, or a WeightsError naming all."""
    for ref in backbone.cached_weights:
        path = _locate(ref)
        if path is not None:
            return path, ref
    if not backbone.cached_weights:
        raise WeightsError(
            f"backbone {backbone.name!r} has no published checkpoint to look for in a cache; pass "
            f"pretrained=<path to a .safetensors or state-dict file>"
        )
    looked = "\n  ".join(_describe(ref) for ref in backbone.cached_weights)
    raise WeightsError(
        f"no cached pretrained weights for {backbone.name!r}; looked for:\n  {looked}\n"
        f"Provide one of these files (fetched on a machine with network access and copied here), or pass "
        f"pretrained=<path to a .safetensors or state-dict file>. Nothing is downloaded."
    )


# ---------------------------------------------------------------------------------------------- loading
def load_pretrained(backbone: Backbone, pretrained: str | os.PathLike, *, stem: bool) -> dict[str, str]:
    """Load ``pretrained`` (a file or ``"cache"``) into ``backbone``; return ``{"path", "sha256", "source"}``.

    With ``stem=True`` the first convolution ends up with one input channel: a 3-channel file is loaded
    first and then summed; a file that already has a 1-channel stem (saved from a ``channels="stem"``
    model) is loaded after the conversion.
    """
    if os.fspath(pretrained) == CACHE:
        path, ref = find_cached_weights(backbone)
        source = ref.source
    else:
        path, source = Path(pretrained).expanduser(), "file"
    state_dict = backbone.remap_state_dict(read_state_dict(path))
    file_chans = _first_conv_in_channels(backbone, state_dict)
    if file_chans == 1:
        if not stem:
            raise WeightsError(
                f"{path}: its first convolution {backbone.first_conv!r} has 1 input channel (saved from a "
                f"channels='stem' model); build this model with channels='stem'"
            )
        convert_first_conv_to_gray(backbone.net, backbone.first_conv)
    load_backbone_state(backbone, state_dict, origin=str(path))
    if stem and file_chans != 1:
        convert_first_conv_to_gray(backbone.net, backbone.first_conv)
    info = {"path": str(path.resolve()), "sha256": sha256_file(path), "source": source}
    log.info("loaded %s weights from %s (%s, sha256 %s)", backbone.name, info["path"], source, info["sha256"][:12])
    return info


def _first_conv_in_channels(backbone: Backbone, state_dict: Mapping[str, Tensor]) -> int | None:
    weight = state_dict.get(f"{backbone.first_conv}.weight") if backbone.first_conv else None
    return int(weight.shape[1]) if weight is not None and weight.ndim == 4 else None


def load_backbone_state(backbone: Backbone, state_dict: Mapping[str, Tensor], *, origin: str) -> None:
    """Strict load of a native state dict into ``backbone.net``, ignoring its dropped (classifier) keys."""
    own = backbone.net.state_dict()
    ignored = sorted(k for k in state_dict if k not in own and k in backbone.dropped_keys)
    unexpected = sorted(k for k in state_dict if k not in own and k not in backbone.dropped_keys)
    missing = sorted(k for k in own if k not in state_dict and not k.endswith("num_batches_tracked"))
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_first(mismatched)}")
    if problems:
        raise WeightsError(
            f"{origin} does not match backbone {backbone.name!r} ({type(backbone.net).__name__}): "
            + "; ".join(problems)
            + ". Is it a checkpoint of this architecture?"
        )
    if ignored:
        log.info("%s: ignored %d classifier/auxiliary key(s) of %s: %s", origin, len(ignored), backbone.name,
                 _first(ignored))
    backbone.net.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)


def _first(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")
