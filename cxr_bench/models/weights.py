"""Pretrained backbone weights: a local file, a populated cache, or ImageNet weights fetched on first use.

``pretrained`` is a local file, ``"cache"`` or ``"imagenet"``:

- a file: ``.safetensors`` (read with safetensors), anything else as a torch checkpoint read with
  ``torch.load(weights_only=True)``, which accepts tensors and plain containers and refuses to unpickle
  any other object (a checkpoint from an untrusted source cannot run code). The file may be the native
  checkpoint (``resnet50-0676ba61.pth``, a timm ``model.safetensors``), a dict wrapping one under
  ``state_dict`` / ``model``, a DataParallel (``module.``) or ``torch.compile`` (``_orig_mod.``) save, or a
  cxr-bench checkpoint (its ``backbone.net.`` keys are taken, the head is not).
- ``"cache"``: the official checkpoint as torchvision / timm would have downloaded it: the torch hub
  ``checkpoints`` directory (``torch.hub.get_dir()``, moved by ``TORCH_HOME``) and the Hugging Face hub
  cache (moved by ``HF_HUB_CACHE`` / ``HF_HOME``). Files are only looked up, never downloaded; any of the
  backbone's published checkpoints that is there is taken.
- ``"imagenet"``: exactly one checkpoint per backbone (:data:`cxr_bench.models.backbones.PRETRAINED_CFGS`, registered with each backbone), taken from those caches
  and, when absent, downloaded into them the way torchvision and timm do it themselves: torch hub's
  ``download_url_to_file`` (checking the sha256 prefix the published file name carries, as
  ``load_state_dict_from_url(check_hash=True)`` does) and the Hugging Face hub's ``hf_hub_download``. A
  second use reads the cached file and makes no network call. ``CXR_BENCH_WEIGHTS_MIRROR`` (or ``mirror=``)
  replaces the download host by a mirror serving the same paths (``/models/resnet50-0676ba61.pth``; the
  hub's ``/<repo>/resolve/main/<file>``). Downloads are off with ``CXR_BENCH_OFFLINE=1``, ``HF_HUB_OFFLINE=1``
  or ``offline=True`` (``--offline``), and when the host cannot be reached within
  :data:`CONNECT_TIMEOUT_S`: then the error names the model, the URL and the command that pre-fetches it
  (``cxr-bench weights fetch``), for clusters whose compute nodes have no network.

Loading is strict for the backbone: a missing key, an unknown key or a shape mismatch is an error naming
them. Keys of the parts a backbone drops (classifier, auxiliary heads) are ignored, since every head brings
its own classifier. BatchNorm's ``num_batches_tracked`` counters may be missing (checkpoints older than
PyTorch 0.4.1, such as torchvision's ResNet-50 V1, have none). A NaN or infinite value in any loaded tensor
is an error naming the file and the tensor: training from it would only fail later, at the first loss.

The ImageNet checkpoints are torchvision's and timm's, not the Caffe models Wang et al. (CVPR 2017) used:
comparable in kind, not bit for bit (see docs/data.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import WeightsError
from ..utils.io import sha256_file
from ..utils.progress import progress_enabled
from .adapt import convert_first_conv_to_gray
from .backbones import PRETRAINED_CFGS, Backbone, CachedWeights, build_backbone

log = logging.getLogger(__name__)

CACHE = "cache"
IMAGENET = "imagenet"
MIRROR_ENV = "CXR_BENCH_WEIGHTS_MIRROR"
OFFLINE_ENV = "CXR_BENCH_OFFLINE"
CONNECT_TIMEOUT_S = 10.0

_HEX = re.compile(r"[0-9a-f]{8,64}")
_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")
_CXR_BENCH_PREFIX = "backbone.net."


# ---------------------------------------------------------------------------------------------- reading
def read_state_dict(path: str | os.PathLike, *, whole: bool = False) -> dict[str, Tensor]:
    """Read a weights file as ``{name: tensor}`` without unpickling arbitrary objects.

    A cxr-bench model's state dict is reduced to its backbone (``backbone.net.`` keys, prefix removed),
    unless ``whole``: then every key is kept (for scoring the whole model, head included)."""
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
            sd = load_file(str(path), device="cpu")
            return _strip_prefixes(sd, whole=True) if whole else sd
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise WeightsError(
            f"{path}: refused or unreadable as a weights-only torch checkpoint ({_load_error(e)}). Only "
            f"tensors and plain containers are loaded, never arbitrary pickled objects; re-save it as a "
            f"plain state dict (torch.save(model.state_dict(), path)) or as .safetensors"
        ) from e
    return _unwrap(obj, path, whole=whole)


def _load_error(e: Exception) -> str:
    # torch's message starts with advice to retry with weights_only=False, which is what must not be done;
    # keep only the unpickler's reason ("Unsupported global: GLOBAL getattr ...").
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    if m:
        return " ".join(m.group(1).split())
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _unwrap(obj: Any, path: Path, *, whole: bool = False) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
            return _strip_prefixes(dict(obj), whole=whole)
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], path, whole=whole)
        shown = ", ".join(repr(k) for k in list(obj)[:8])
        raise WeightsError(
            f"{path}: not a state dict (a mapping of parameter names to tensors) and no "
            f"{' / '.join(_WRAPPER_KEYS)} entry holding one; top-level keys: {shown or '(none)'}"
        )
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to "
                       "tensors)")


def _strip_prefixes(sd: dict[str, Tensor], *, whole: bool = False) -> dict[str, Tensor]:
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if not whole and any(k.startswith(_CXR_BENCH_PREFIX) for k in sd):
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
        f"pretrained='cache' downloads nothing: fetch the ImageNet checkpoint with "
        f"`{fetch_command([backbone.name])}` (or use pretrained='imagenet', which fetches it on first use), "
        f"copy one of these files here, or pass pretrained=<path to a .safetensors or state-dict file>"
    )


# ---------------------------------------------------------------------------------------------- integrity
def expected_sha256(ref: CachedWeights, path: Path | None = None) -> tuple[str, str] | None:
    """``(digest or prefix, where it comes from)`` that checkpoint file ``ref`` must have; None if nothing
    is known. Sources: the ``sha256`` pinned in the backbone's registered :class:`PretrainedCfg` (a full
    digest, or torchvision's published 8-hex prefix, which it verifies itself), the hash prefix of a torch
    hub file name, the sha256 a Hugging Face hub announced (the cache keeps the file under that name)."""
    pinned = next((c.sha256 for c in PRETRAINED_CFGS.values() if c.source == ref.source and c.sha256), None)
    if pinned:
        return pinned, "pinned with its backbone (cxr_bench.models.backbones.PRETRAINED_CFGS)"
    if ref.hub_repo is None:
        match = torch.hub.HASH_REGEX.search(ref.filename)
        if match:
            return match.group(1), f"the hash prefix of its published name {ref.filename}"
    elif path is not None:
        blob = Path(os.path.realpath(path)).name
        if len(blob) == 64 and _HEX.fullmatch(blob):
            return blob, f"the sha256 the hub announced for {ref.hub_repo}/{ref.filename}"
    return None


def verify_checkpoint(name: str, ref: CachedWeights, path: Path, sha: str | None = None, *,
                      remove: bool = False) -> str:
    """The sha256 of ``path``, checked against :func:`expected_sha256`; a mismatch is a WeightsError (and,
    with ``remove``, for a file just fetched, the file is deleted so it is never found as cached)."""
    sha = sha or sha256_file(path)
    expected = expected_sha256(ref, path)
    if expected is not None and not sha.startswith(expected[0].lower()):
        what = f"{ref.source} ({path})"
        if remove:
            _remove_cached(path)
            what += "; it was deleted, nothing is cached"
        raise WeightsError(f"{name}: the checkpoint file is not {what}: its sha256 is {sha}, {expected[1]} "
                           f"says {expected[0]}. Check the mirror or proxy (or replace the cached file), then "
                           "run again")
    return sha


def _remove_cached(path: Path) -> None:
    """Delete a cached file and, for a Hugging Face snapshot link, the blob it points to."""
    real = Path(os.path.realpath(path))
    with contextlib.suppress(OSError):
        path.unlink()
    with contextlib.suppress(OSError):
        real.unlink()


# ---------------------------------------------------------------------------------------------- fetching
def offline_reason(offline: bool | None = None) -> str | None:
    """What turns downloads off (``--offline`` or the variable set), or None when they are allowed."""
    if offline:
        return "--offline"
    if offline is None:
        for var in (OFFLINE_ENV, "HF_HUB_OFFLINE"):
            if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
                return f"{var}={os.environ[var]}"
    return None


def weights_mirror(mirror: str | None = None) -> str | None:
    """The mirror base URL: ``mirror``, else ``$CXR_BENCH_WEIGHTS_MIRROR``, else None (the official hosts)."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is not None:
        parsed = urllib.parse.urlparse(mirror)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise WeightsError(f"weights mirror {mirror!r} ({MIRROR_ENV} / --mirror) must be an http(s):// "
                               "URL")
    return mirror


def checkpoint_url(ref: CachedWeights) -> str:
    """Where ``ref`` is published (the Hugging Face hub's resolve URL for hub files)."""
    if ref.hub_repo is None:
        return ref.url or ref.filename
    return f"https://huggingface.co/{ref.hub_repo}/resolve/main/{ref.filename}"


def _mirrored(url: str, mirror: str | None) -> str:
    if not mirror:
        return url
    path = urllib.parse.urlparse(url).path
    return mirror.rstrip("/") + path


def imagenet_weights(name: str, refs: Sequence[CachedWeights]) -> list[CachedWeights]:
    """The files of the one checkpoint ``pretrained="imagenet"`` means for backbone ``name``."""
    cfg = PRETRAINED_CFGS.get(name)
    pinned = cfg.source if cfg is not None else None
    source = pinned or (refs[0].source if refs else None)
    chosen = [r for r in refs if r.source == source]
    if not chosen:
        raise WeightsError(f"backbone {name!r} has no ImageNet checkpoint to fetch "
                           f"({pinned or 'none published'}); pass pretrained=<path to a .safetensors or "
                           "state-dict file>")
    return chosen


def fetch_command(backbones: Iterable[str] = (), suite: str | None = None, profile: str | None = None) -> str:
    """The ``cxr-bench weights fetch`` command line that pre-fetches these checkpoints."""
    if suite:
        return f"cxr-bench weights fetch --suite {suite}" + (f" --profile {profile}" if profile else "")
    return " ".join(["cxr-bench weights fetch", *sorted(set(backbones))])


def _unavailable(name: str, ref: CachedWeights, why: str, command: str | None = None) -> WeightsError:
    return WeightsError(
        f"pretrained ImageNet weights for {name!r} ({ref.source}, {checkpoint_url(ref)}) are not in the "
        f"local cache and cannot be downloaded: {why}. Pre-fetch them on a machine with network access with "
        f"`{command or fetch_command([name])}` and share the cache ({_describe(ref)}), or pass "
        f"pretrained=<path to the file>"
    )


def _reachable(url: str) -> str | None:
    """None if a TCP connection to ``url``'s host opens within CONNECT_TIMEOUT_S, else why not."""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        return f"no network: cannot connect to {parsed.hostname}:{port} ({e.strerror or e})"
    return None


def ensure_weights(name: str, refs: Sequence[CachedWeights], *, offline: bool | None = None,
                   mirror: str | None = None, show_progress: bool | None = None,
                   command: str | None = None) -> tuple[Path, CachedWeights, bool]:
    """The local file of checkpoint ``refs`` (one checkpoint's candidate files), downloading it if absent.

    Returns ``(path, ref, fetched)``. ``command`` is the pre-fetch command the offline error suggests.
    """
    for ref in refs:
        path = _locate(ref)
        if path is not None:
            return path, ref, False
    reason = offline_reason(offline)
    if reason is not None:
        raise _unavailable(name, refs[0], f"downloads are off ({reason})", command)
    mirror = weights_mirror(mirror)
    hub = [r for r in refs if r.hub_repo is not None]
    urls = [r for r in refs if r.hub_repo is None]
    found = _fetch_hub(name, hub, mirror, command, last=not urls) if hub else None
    if found is None:  # timm also publishes some weights at a URL only
        path, ref = _fetch_url(name, urls[0], mirror, show_progress, command), urls[0]
    else:
        path, ref = found
    verify_checkpoint(name, ref, path, remove=True)
    log.info("fetched %s weights %s into %s", name, ref.source, path)
    return path, ref, True


def _fetch_url(name: str, ref: CachedWeights, mirror: str | None, show_progress: bool | None,
               command: str | None) -> Path:
    if not ref.url:
        raise WeightsError(f"{name}: {ref.source} has no download URL; copy {ref.filename} into "
                           f"{torch_hub_checkpoints_dir()}")
    url = _mirrored(ref.url, mirror)
    why = _reachable(url)
    if why is not None:
        raise _unavailable(name, ref, why, command)
    dst = torch_hub_checkpoints_dir() / ref.filename
    match = torch.hub.HASH_REGEX.search(ref.filename)
    prefix = match.group(1) if match else None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=prefix,
                                       progress=progress_enabled(show_progress))
    except urllib.error.HTTPError as e:
        raise WeightsError(f"{name}: {url} answered HTTP {e.code} {e.reason} for {ref.source}") from None
    except urllib.error.URLError as e:
        raise _unavailable(name, ref, f"{url}: {e.reason}", command) from None
    except OSError as e:
        raise WeightsError(f"{name}: cannot write {dst}: {e.strerror or e} (TORCH_HOME moves the torch hub "
                           f"cache)") from None
    except RuntimeError as e:  # torch.hub's hash check; the partial file is already removed
        raise WeightsError(f"{name}: the file served at {url} is not {ref.source}: {e}, while its "
                           f"published name {ref.filename} promises a sha256 starting with {prefix}. Nothing "
                           "was saved; check the mirror or proxy, then run again") from None
    return dst


def _fetch_hub(name: str, refs: Sequence[CachedWeights], mirror: str | None, command: str | None, *,
               last: bool) -> tuple[Path, CachedWeights] | None:
    """The first of ``refs`` (hub files) the hub serves; None when it has none of them and ``last`` is
    False (another source follows)."""
    import timm
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    endpoint = mirror.rstrip("/") if mirror else None
    why = _reachable(endpoint or constants.ENDPOINT)
    if why is not None:
        raise _unavailable(name, refs[0], why, command)
    for ref in refs:
        assert ref.hub_repo is not None
        try:
            path = hf_hub_download(ref.hub_repo, ref.filename, cache_dir=hf_hub_cache_dir(),
                                   endpoint=endpoint, library_name="timm", library_version=timm.__version__,
                                   etag_timeout=CONNECT_TIMEOUT_S)
        except EntryNotFoundError:
            continue  # timm publishes model.safetensors or pytorch_model.bin: try the next name
        except OfflineModeIsEnabled:
            raise _unavailable(name, ref, "downloads are off (HF_HUB_OFFLINE)", command) from None
        except LocalEntryNotFoundError as e:  # the hub could not be reached and nothing is cached
            raise _unavailable(name, ref, f"{endpoint or constants.ENDPOINT}: {e}", command) from None
        except HfHubHTTPError as e:
            raise WeightsError(f"{name}: the Hugging Face hub ({endpoint or constants.ENDPOINT}) refused "
                               f"{ref.hub_repo}/{ref.filename}: {' '.join(str(e).split())}") from None
        except OSError as e:
            raise WeightsError(f"{name}: cannot write into {hf_hub_cache_dir()}: {e.strerror or e} "
                               "(HF_HUB_CACHE or HF_HOME moves the cache)") from None
        return Path(path), ref
    if not last:
        return None
    files = ", ".join(r.filename for r in refs)
    raise WeightsError(f"{name}: none of {files} exists in {refs[0].hub_repo} at "
                       f"{endpoint or constants.ENDPOINT}")


# ---------------------------------------------------------------------------------------------- planning
@cache
def _published(name: str) -> tuple[CachedWeights, ...]:
    # A shapes-only build is enough to learn which checkpoints a backbone has (no init, no memory).
    with torch.device("meta"):
        return tuple(build_backbone(name).cached_weights)


@dataclass(frozen=True)
class MissingWeights:
    """Pretrained weights a run needs that are not on this machine."""

    backbone: str
    pretrained: str  # "imagenet", "cache" or a file path
    source: str | None  # the checkpoint (torchvision enum member / timm tag); None for a user's file
    url: str | None  # where it is published; None when it cannot be fetched (a user's file)
    where: str  # where it was looked for

    def describe(self) -> str:
        if self.url is None:
            return f"{self.backbone}: weights file {self.pretrained} does not exist"
        return f"{self.backbone} ({self.source}, {self.url})"


def _as_model_pair(cfg: Any) -> tuple[str, Any]:
    model = getattr(cfg, "model", cfg)
    if isinstance(model, tuple):
        return model[0], model[1]
    return model.backbone, model.pretrained


def missing_weights(configs: Iterable[Any]) -> list[MissingWeights]:
    """What of the pretrained weights ``configs`` need is not on this machine; [] when nothing is missing.

    Each config is a ``RunConfig``, a ``ModelConfig`` or a ``(backbone, pretrained)`` pair. Looks only at
    local files and caches (no network); ``pretrained=None`` needs nothing. A missing ``"cache"`` or
    ``"imagenet"`` checkpoint is fetchable (``url`` set) with :func:`fetch_command`; a missing file is not.
    """
    out: list[MissingWeights] = []
    seen: set[tuple[str, str]] = set()
    for cfg in configs:
        name, pretrained = _as_model_pair(cfg)
        if pretrained is None or (name, os.fspath(pretrained)) in seen:
            continue
        pretrained = os.fspath(pretrained)
        seen.add((name, pretrained))
        if pretrained not in (CACHE, IMAGENET):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                out.append(MissingWeights(name, pretrained, None, None, str(path)))
            continue
        refs = _published(name)
        wanted = list(refs) if pretrained == CACHE else imagenet_weights(name, refs)
        if not wanted or any(_locate(r) is not None for r in wanted):
            continue
        target = imagenet_weights(name, refs)[0]
        out.append(MissingWeights(name, pretrained, target.source, checkpoint_url(target), _describe(target)))
    return out


def format_missing_weights(missing: Sequence[MissingWeights], command: str | None = None) -> str:
    """One message for a run pre-check: every missing checkpoint, and the one command that fetches them."""
    fetchable = [m for m in missing if m.url is not None]
    files = [m for m in missing if m.url is None]
    parts = []
    if fetchable:
        cmd = command or fetch_command(m.backbone for m in fetchable)
        parts.append(f"{len(fetchable)} pretrained checkpoint(s) are not in the local caches: "
                     + "; ".join(m.describe() for m in fetchable)
                     + f". Fetch them on a machine with network access with `{cmd}` "
                     "(TORCH_HOME and HF_HOME choose the caches; share them with the compute nodes)")
    if files:
        parts.append("; ".join(m.describe() for m in files))
    return ". ".join(parts)


def fetch_pretrained(name: str, pretrained: str = IMAGENET, *, offline: bool | None = None,
                     mirror: str | None = None, show_progress: bool | None = None,
                     command: str | None = None) -> dict[str, Any]:
    """Make sure backbone ``name``'s ``pretrained`` weights are on this machine (fetching "imagenet" ones).

    Returns the record a run manifest keeps: ``{"path", "sha256", "source", "url", "fetched"}``.
    """
    pretrained = os.fspath(pretrained)
    if pretrained == CACHE:
        with torch.device("meta"):
            path, ref = find_cached_weights(build_backbone(name))
        fetched = False
    elif pretrained == IMAGENET:
        path, ref, fetched = ensure_weights(name, imagenet_weights(name, _published(name)), offline=offline,
                                            mirror=mirror, show_progress=show_progress, command=command)
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} for {name!r} does not exist")
        return {"path": str(path.resolve()), "sha256": sha256_file(path), "source": "file", "url": None,
                "fetched": False}
    # A cache file by the path the cache shows (a Hugging Face snapshot, not the blob it links to).
    return {"path": os.path.abspath(path), "sha256": verify_checkpoint(name, ref, path), "source": ref.source,
            "url": checkpoint_url(ref), "fetched": fetched}


# ---------------------------------------------------------------------------------------------- loading
def load_pretrained(backbone: Backbone, pretrained: str | os.PathLike, *, stem: bool,
                    offline: bool | None = None, mirror: str | None = None) -> dict[str, str | None]:
    """Load ``pretrained`` (a file, ``"cache"`` or ``"imagenet"``) into ``backbone``.

    Returns what the run manifest records: ``{"path", "sha256", "source", "url"}`` (``url``: where the
    checkpoint is published; None for a file).

    With ``stem=True`` the first convolution ends up with one input channel: a 3-channel file is loaded
    first and then summed; a file that already has a 1-channel stem (saved from a ``channels="stem"``
    model) is loaded after the conversion.
    """
    key = os.fspath(pretrained)
    url: str | None = None
    if key == CACHE:
        path, ref = find_cached_weights(backbone)
        source, url = ref.source, checkpoint_url(ref)
        verify_checkpoint(backbone.name, ref, path)
    elif key == IMAGENET:
        path, ref, fetched = ensure_weights(backbone.name, imagenet_weights(backbone.name,
                                                                            backbone.cached_weights),
                                            offline=offline, mirror=mirror)
        source, url = ref.source, checkpoint_url(ref)
        if not fetched:  # a file just fetched was checked then
            verify_checkpoint(backbone.name, ref, path)
    else:
        path, source = Path(pretrained).expanduser(), "file"
    state_dict = backbone.remap_state_dict(read_state_dict(path))
    _check_finite(backbone, state_dict, path)
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
    sha = sha256_file(path)
    shown = str(path.resolve()) if source == "file" else os.path.abspath(path)  # a snapshot, not its blob
    info = {"path": shown, "sha256": sha, "source": source, "url": url}
    log.info("loaded %s weights from %s (%s, sha256 %s)", backbone.name, info["path"], source, sha[:12])
    return info


def _check_finite(backbone: Backbone, state_dict: Mapping[str, Tensor], path: Path) -> None:
    """A NaN / inf in a tensor that will be loaded is the file's fault: say so now, naming the tensor."""
    for key, value in state_dict.items():
        if key in backbone.dropped_keys or not value.is_floating_point():
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad = int(finite.numel() - finite.sum())
            raise WeightsError(
                f"{path}: tensor {key!r} {tuple(value.shape)} holds {bad} non-finite value(s) (NaN or "
                f"inf); the weights file is damaged or was saved from a diverged run, and training from it "
                f"would fail whatever the learning rate. Replace the file (delete it and fetch it again, or "
                f"pass another one)"
            )


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
