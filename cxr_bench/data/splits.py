"""Train / validation / test splits of an NIH release, as sorted int64 row positions into ``release.metadata``.

Protocols (registry :data:`PROTOCOLS`):

- ``official``: the NIH lists. Test = ``test_list.txt``; train and validation are carved from
  ``train_val_list.txt`` **by patient** (a seeded draw of ``val_fraction`` of its patients), so no patient is
  in two sets. A listed name missing from the metadata, a name on both lists, or a patient on both lists is
  a :class:`SplitError`. Images in the metadata but on neither list are left out, with a warning, and
  reported in :attr:`Splits.unassigned`.
- ``random-image``: the CVPR 2017 protocol of Wang et al.: images shuffled and cut 70/10/20 regardless of
  patient. The same patient lands in train and test, so the split is flagged ``patient_leaky=True`` and a
  warning is logged; its numbers are optimistic and not comparable with patient-wise ones.
- ``random-patient``: patients shuffled and cut 70/10/20 (by patient count), all images of a patient in
  one set.

The population is every image of the metadata (PA and AP views, all follow-ups). Each split is a pure
function of (release metadata and lists, protocol, fractions, seed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ConfigError, SplitError
from ..registry import Registry
from .release import NIHRelease

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Splits:
    """Row positions (sorted int64) into ``release.metadata`` for each set."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    protocol: str
    patient_leaky: bool
    seed: int
    val_fraction: float | None = None
    fractions: tuple[float, float, float] | None = None
    # Rows in the metadata but in no set (official protocol: names on neither list).
    unassigned: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def sets(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def sizes(self) -> dict[str, int]:
        return {k: int(len(v)) for k, v in self.sets().items()}

    def names(self, release: NIHRelease) -> dict[str, list[str]]:
        """Image names of each set."""
        images = release.metadata["image"].to_numpy(dtype=object)
        return {k: images[v].tolist() for k, v in self.sets().items()}

    def patients(self, release: NIHRelease) -> dict[str, np.ndarray]:
        """Sorted unique patient ids of each set."""
        pid = release.metadata["patient_id"].to_numpy()
        return {k: np.unique(pid[v]) for k, v in self.sets().items()}

    def shared_patients(self, release: NIHRelease) -> dict[str, int]:
        """Number of patients shared by each pair of sets (all 0 unless the split is patient-leaky)."""
        p = self.patients(release)
        return {
            "train/val": int(np.intersect1d(p["train"], p["val"]).size),
            "train/test": int(np.intersect1d(p["train"], p["test"]).size),
            "val/test": int(np.intersect1d(p["val"], p["test"]).size),
        }

    def summary(self, release: NIHRelease) -> dict:
        """JSON-able description (sizes, patients, leakage)."""
        p = self.patients(release)
        return {
            "protocol": self.protocol, "seed": self.seed, "patient_leaky": self.patient_leaky,
            "val_fraction": self.val_fraction, "fractions": list(self.fractions) if self.fractions else None,
            "images": self.sizes(), "patients": {k: int(v.size) for k, v in p.items()},
            "shared_patients": self.shared_patients(release), "unassigned_images": int(len(self.unassigned)),
        }


PROTOCOLS: Registry[Callable[..., Splits]] = Registry("split protocol")


def make_splits(release: NIHRelease, protocol: str = "official", val_fraction: float = 0.1, seed: int = 0,
                random_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> Splits:
    """Split ``release`` by ``protocol`` (``official``, ``random-image``, ``random-patient``).

    ``val_fraction`` (official) is the share of train_val *patients* drawn into validation; ``random_fractions``
    (random-*) are the (train, val, test) shares of images or patients. Deterministic for a seed.
    """
    fn = PROTOCOLS.get(protocol)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"split seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    return fn(release, val_fraction=val_fraction, seed=seed, random_fractions=random_fractions)


def _rows(a) -> np.ndarray:
    return np.sort(np.asarray(a, dtype=np.int64))


def _check_fractions(fr: tuple[float, float, float]) -> tuple[float, float, float]:
    try:
        fr = tuple(float(x) for x in fr)  # type: ignore[assignment]  # length checked just below
    except (TypeError, ValueError):
        raise ConfigError(f"random_fractions must be three numbers (train, val, test), got {fr!r}") from None
    if len(fr) != 3 or any(not np.isfinite(x) or x < 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"random_fractions must be three non-negative numbers summing to 1, got {fr!r}")
    if fr[0] == 0 or fr[2] == 0:
        raise ConfigError(f"random_fractions {fr!r}: train and test must be non-empty")
    return fr


def _cut(n: int, fr: tuple[float, float, float]) -> tuple[int, int]:
    """(n_train, n_val) of n items for fractions fr; test gets the rest."""
    n_train = int(round(fr[0] * n))
    n_val = int(round(fr[1] * n))
    n_val = min(n_val, n - n_train)
    return n_train, n_val


@PROTOCOLS.register("official")
def official_splits(release: NIHRelease, *, val_fraction: float = 0.1, seed: int = 0, **_: object) -> Splits:
    if not (0.0 <= float(val_fraction) < 1.0):
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    md = release.metadata
    images = md["image"].to_numpy(dtype=object)
    pid = md["patient_id"].to_numpy()
    index = pd.Index(images)

    def rows_of(names: list[str], path) -> np.ndarray:
        pos = index.get_indexer(pd.Index(names, dtype=object)) if names else np.zeros(0, dtype=np.int64)
        if (pos < 0).any():
            missing = [names[i] for i in np.flatnonzero(pos < 0)]
            raise SplitError(f"{path}: {len(missing)} listed image(s) are not in {release.data_entry_path.name}, "
                             f"e.g. {missing[:5]}; are the lists and the Data_Entry file from the same release?")
        return _rows(pos)

    tv = rows_of(release.train_val_names, release.train_val_list_path)
    test = rows_of(release.test_names, release.test_list_path)
    both = np.intersect1d(tv, test)
    if both.size:
        raise SplitError(f"{release.train_val_list_path.name} and {release.test_list_path.name} share "
                         f"{both.size} image(s), e.g. {images[both[:5]].tolist()}; an image must be on one list")
    shared = np.intersect1d(pid[tv], pid[test])
    if shared.size:
        example = images[test[np.isin(pid[test], shared[:1])]][:3].tolist()
        raise SplitError(f"{shared.size} patient(s) have images on both {release.train_val_list_path.name} and "
                         f"{release.test_list_path.name}, e.g. patient {int(shared[0])} ({example}); the official "
                         "split is by patient")
    listed = np.zeros(len(md), dtype=bool)
    listed[tv] = True
    listed[test] = True
    unassigned = np.flatnonzero(~listed).astype(np.int64)
    if unassigned.size:
        log.warning("%d image(s) of %s are on neither split list (e.g. %s); they are left out of the official "
                    "split", unassigned.size, release.data_entry_path.name, images[unassigned[:3]].tolist())

    patients = np.unique(pid[tv])
    n_val = int(round(val_fraction * patients.size))
    if val_fraction > 0 and n_val == 0 and patients.size >= 2:
        n_val = 1
    n_val = min(n_val, max(patients.size - 1, 0))
    rng = np.random.default_rng(seed)
    val_patients = rng.permutation(patients)[:n_val]
    in_val = np.isin(pid[tv], val_patients)
    return Splits(train=_rows(tv[~in_val]), val=_rows(tv[in_val]), test=test, protocol="official",
                  patient_leaky=False, seed=seed, val_fraction=float(val_fraction), unassigned=unassigned)


@PROTOCOLS.register("random-image")
def random_image_splits(release: NIHRelease, *, seed: int = 0,
                        random_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), **_: object) -> Splits:
    fr = _check_fractions(random_fractions)
    n = len(release.metadata)
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    n_train, n_val = _cut(n, fr)
    s = Splits(train=_rows(order[:n_train]), val=_rows(order[n_train:n_train + n_val]),
               test=_rows(order[n_train + n_val:]), protocol="random-image", patient_leaky=True, seed=seed,
               fractions=fr)
    shared = s.shared_patients(release)
    log.warning("random-image split (CVPR 2017 protocol) is patient-leaky: %d patient(s) are in both train and "
                "test; its scores are optimistic and not comparable with patient-wise splits",
                shared["train/test"])
    return s


@PROTOCOLS.register("random-patient")
def random_patient_splits(release: NIHRelease, *, seed: int = 0,
                          random_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), **_: object) -> Splits:
    fr = _check_fractions(random_fractions)
    pid = release.metadata["patient_id"].to_numpy()
    patients = np.unique(pid)
    order = np.random.default_rng(seed).permutation(patients)
    n_train, n_val = _cut(patients.size, fr)
    train_p, val_p = order[:n_train], order[n_train:n_train + n_val]
    in_train = np.isin(pid, train_p)
    in_val = np.isin(pid, val_p)
    return Splits(train=_rows(np.flatnonzero(in_train)), val=_rows(np.flatnonzero(in_val)),
                  test=_rows(np.flatnonzero(~in_train & ~in_val)), protocol="random-patient",
                  patient_leaky=False, seed=seed, fractions=fr)
