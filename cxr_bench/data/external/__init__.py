"""External test sets: other hospitals' radiographs, read as NIH-labelled, frontal-only image sets.

A model trained on NIH ChestX-ray14 is scored on another set through the same images pipeline as NIH
(cxr-bench's PNG/JPEG decoding, grayscale conversion, resize and cache), with that set's labels mapped to
NIH's names. What each adapter promises (``open_external(name, root)`` -> :class:`ExternalSet`):

- ``metadata``: one row per frontal image, columns ``image`` (the image's path under the data root, its
  name in caches and predictions), ``finding_labels`` (NIH names, ``|``-joined, of the *shared* labels only,
  or ``No Finding``), ``patient_id``, ``sex`` (``M``/``F``/``unknown``), ``age`` (years or NaN), ``view``
  (``PA``/``AP``), and the set's own columns after them;
- ``shared_labels``: the NIH labels the set also labels (:data:`MAPPINGS`); only those are scored;
- ``image_paths()``: name -> file, found before any work: a wrong layout or a missing image is one
  :class:`ExternalDataError` naming the set and what to do.

Labels, views and patient ids come from torchxrayvision's parsers and the metadata its wheel ships
(``pip install 'cxr-bench[external]'``); pixels never go through torchxrayvision (see docs/external.md).
"""

from __future__ import annotations

from .sets import (
    DATASETS,
    MAPPINGS,
    ExternalDataError,
    ExternalSet,
    ExternalSpec,
    LabelMap,
    get_spec,
    mapping_table,
    nih_overlap_note,
    open_external,
    release_list,
    require_xrv,
)

__all__ = ["DATASETS", "MAPPINGS", "ExternalDataError", "ExternalSet", "ExternalSpec", "LabelMap", "get_spec",
           "mapping_table", "nih_overlap_note", "open_external", "release_list", "require_xrv"]
