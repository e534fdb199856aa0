"""External sets: label mapping on real metadata rows (expected labels written by hand from the raw rows),
the frontal filter, patients, and the one-line errors for a wrong layout, missing images or missing xrv."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from external_sets import external_fixtures  # tests/helpers is on pytest's pythonpath
from PIL import Image

from cxr_bench.data.external import (
    DATASETS,
    ExternalDataError,
    mapping_table,
    open_external,
    release_list,
    require_xrv,
)
from cxr_bench.data.grayscale import decode_gray
from cxr_bench.data.labels import CHESTXRAY14
from cxr_bench.errors import ImageError


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return external_fixtures(tmp_path_factory.mktemp("external"))


@pytest.fixture(scope="module")
def sets(roots: dict[str, Path]) -> dict[str, object]:
    return {name: open_external(name, root) for name, root in roots.items()}


def _row(ext, image: str) -> dict:
    m = ext.metadata.set_index("image")
    assert image in m.index, f"{image} not among the scored images"
    return m.loc[image].to_dict()


def _labels(ext, image: str) -> set[str]:
    v = _row(ext, image)["finding_labels"]
    return set() if v == "No Finding" else set(v.split("|"))


def test_shared_label_counts_match_the_issue() -> None:
    shared = {name: len(spec.shared) for name, spec in DATASETS.items()}
    assert shared == {"openi": 13, "padchest": 14, "chexpert": 7, "rsna": 1, "siim": 1}
    table = mapping_table()
    assert len(table) == 5 * 14
    dropped = table[~table["scored"]]
    assert (dropped["note"].str.len() > 0).all(), "every dropped label says why"
    assert set(table.loc[(table["dataset"] == "openi") & ~table["scored"], "nih_label"]) == {"Consolidation"}
    assert set(mapping_table("chexpert").query("scored")["nih_label"]) == {
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumonia", "Pneumothorax"}


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_padchest_labels_views_and_patients(sets) -> None:
    pc = sets["padchest"]
    # ['aortic elongation', ..., 'alveolar pattern', ..., 'cardiomegaly', 'interstitial pattern', 'pleural effusion']
    assert _labels(pc, "184768585622747149847312236491996945269_hpn97q.png") == {
        "Cardiomegaly", "Effusion", "Infiltration"}
    row = _row(pc, "184768585622747149847312236491996945269_hpn97q.png")
    assert (row["sex"], row["age"], row["view"]) == ("F", 2015 - 1928, "PA")
    assert row["patient_id"] == "171403570617762599369403212566887886545"
    assert _labels(pc, "20536686640136348236148679891455886468_k6ga29.png") == set()  # ['normal']
    # 'pseudonodule' counts as a nodule under xrv's substring rule; 'ground glass pattern' is an infiltrate.
    assert _labels(pc, "135803415504923515076821959678074435083_fzis7b.png") == {"Fibrosis", "Infiltration", "Nodule"}
    # AP_horizontal (supine) is frontal: atelectasis, pleural effusion, consolidation, air bronchogram
    supine = "211098384400672666381592841782955166530_5_f74m01.png"
    assert _labels(pc, supine) == {"Atelectasis", "Effusion", "Infiltration", "Consolidation"}
    assert _row(pc, supine)["view"] == "AP"
    # the lateral of the same study is left out and counted
    assert "135803415504923515076821959678074435083_fzis7d.png" not in set(pc.metadata["image"])
    assert pc.summary()["excluded"] == {"not frontal (lateral or unknown view)": 1}


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_openi_labels_and_view_filter(sets) -> None:
    oi = sets["openi"]
    # report 1102: MeSH 'Cardiomegaly', 'Pleural Effusion', 'Edema'; images 12012 and 4004 are AP, 2001 and 3001
    # have no view anywhere (DICOM nor t-SNE): left out. Report 1 has no frontal image at all.
    assert _labels(oi, "CXR1102_IM-0069-12012.png") == {"Cardiomegaly", "Effusion", "Edema"}
    assert _labels(oi, "CXR1102_IM-0069-4004.png") == {"Cardiomegaly", "Effusion", "Edema"}
    row = _row(oi, "CXR1102_IM-0069-4004.png")
    assert (row["patient_id"], row["view"], row["age"], row["sex"]) == ("CXR1102", "AP", 2011 - 1933, "unknown")
    images = set(oi.metadata["image"])
    assert not images & {"CXR1102_IM-0069-2001.png", "CXR1102_IM-0069-3001.png", "CXR1_1_IM-0001-3001.png",
                         "CXR1_1_IM-0001-4001.png"}
    assert oi.summary()["excluded"]["not frontal (lateral or unknown view)"] >= 4
    assert "Consolidation" not in oi.shared_labels
    assert oi.summary()["bootstrap_unit"] == "report"


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_chexpert_uncertain_is_negative_and_lesion_is_dropped(sets) -> None:
    cx = sets["chexpert"]
    # Pleural Effusion 1, Cardiomegaly / Consolidation / Atelectasis -1 (uncertain), Lung Lesion 1 (no NIH label)
    image = "train/patient00023/study9/view1_frontal.jpg"
    assert _labels(cx, image) == {"Effusion"}
    row = _row(cx, image)
    assert (row["patient_id"], row["sex"], row["age"], row["view"]) == ("patient00023", "M", 67.0, "PA")
    assert "train/patient00002/study1/view2_lateral.jpg" not in set(cx.metadata["image"])
    assert cx.summary()["uncertain_scored_negative"]["Cardiomegaly"] >= 1
    assert (cx.root / "CheXpert-v1.0-small" / image).is_file()


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_rsna_and_siim_are_flagged_as_nih_images(sets) -> None:
    rs, si = sets["rsna"], sets["siim"]
    assert _labels(rs, "0ab261f9-4eb5-42ab-a9a5-e918904d6356.jpg") == {"Pneumonia"}  # 4 boxes, Target 1
    assert _labels(rs, "0004cfab-14fd-4e49-80ba-63a80b6bddd6.jpg") == set()
    row = _row(rs, "0ab261f9-4eb5-42ab-a9a5-e918904d6356.jpg")
    assert (row["sex"], row["age"], row["view"]) == ("F", 45.0, "PA")
    # 10 mask rows of one image are one positive image
    assert _labels(si, "1.2.276.0.7230010.3.1.4.8323329.1851.1517875169.919023.png") == {"Pneumothorax"}
    assert _labels(si, "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.png") == set()
    assert si.metadata["image"].is_unique
    for ext in (rs, si):
        note = ext.summary()["nih_overlap"]
        assert "NIH ChestX-ray14 images" in note and "86,524" in note
        assert ext.summary()["bootstrap_unit"] == "image"
    assert sets["padchest"].summary()["nih_overlap"] is None
    assert si.summary()["attributes"] == []


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_every_listed_image_has_a_file_and_decodes(sets) -> None:
    for ext in sets.values():
        paths = ext.image_paths()
        assert list(paths) == ext.metadata["image"].tolist()
        first = next(iter(paths.values()))
        assert decode_gray(first).shape == (32, 32)


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_padchest_sixteen_bit_png_decodes_to_the_phantom(sets) -> None:
    pc = sets["padchest"]
    path = pc.image_paths()["20536686640136348236148679891455886468_k6ga29.png"]
    raw = np.asarray(Image.open(path))
    assert raw.dtype == np.uint16
    assert np.array_equal(decode_gray(path), (raw // 257).astype(np.uint8))


def test_jpeg_only_under_a_jpeg_name(tmp_path: Path) -> None:
    img = np.full((8, 8), 100, np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg", format="JPEG", quality=100)
    assert abs(int(decode_gray(tmp_path / "a.jpg").mean()) - 100) <= 1
    shutil.copy(tmp_path / "a.jpg", tmp_path / "b.png")  # NIH's .png names must hold PNGs
    with pytest.raises(ImageError, match="not a PNG"):
        decode_gray(tmp_path / "b.png")


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_missing_images_fail_before_work(roots, tmp_path: Path) -> None:
    root = shutil.copytree(roots["rsna"], tmp_path / "rsna")
    victim = next((root / "stage_2_train_images").iterdir())
    victim.unlink()
    with pytest.raises(ExternalDataError, match=r"RSNA.*1 of the \d+ frontal images .* are missing") as e:
        open_external("rsna", root)
    assert "\n" not in str(e.value) and victim.stem in str(e.value)


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_wrong_layout_names_the_set_and_what_to_do(roots, tmp_path: Path) -> None:
    # CheXpert's images flattened into one folder: the paths of train.csv no longer resolve.
    src = roots["chexpert"] / "CheXpert-v1.0-small"
    root = tmp_path / "chexpert" / "CheXpert-v1.0-small"
    root.mkdir(parents=True)
    shutil.copy(src / "train.csv", root / "train.csv")
    for f in (src / "train").rglob("*.jpg"):
        shutil.copy(f, root / f"{f.parent.parent.name}_{f.name}")
    with pytest.raises(ExternalDataError, match=r"CheXpert .*none of the .* expected layout: DIR/CheXpert-v1.0-small/train.csv") as e:
        open_external("chexpert", tmp_path / "chexpert")
    assert "\n" not in str(e.value)
    with pytest.raises(ExternalDataError, match="OpenI .*is not a folder"):
        open_external("openi", tmp_path / "nowhere")
    with pytest.raises(ExternalDataError, match="unknown external dataset 'vindr'; known: openi"):
        open_external("vindr", tmp_path)


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_dicom_files_get_a_convert_message(roots, tmp_path: Path) -> None:
    root = shutil.copytree(roots["siim"], tmp_path / "siim")
    for f in (root / "train_png").glob("*.png"):
        f.rename(f.with_suffix(".dcm"))
    with pytest.raises(ExternalDataError, match="is DICOM; .*convert the images to 8- or 16-bit PNG"):
        open_external("siim", root)


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_numpy_global_state_is_left_alone(roots) -> None:
    np.random.seed(1234)
    expected = np.random.get_state()[1].copy()
    open_external("rsna", roots["rsna"])  # xrv's constructors call np.random.seed(0)
    assert np.array_equal(np.random.get_state()[1], expected)


def test_missing_torchxrayvision_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchxrayvision", None)  # what `import` sees when it is not installed
    with pytest.raises(ExternalDataError, match=r"pip install 'cxr-bench\[external\]'"):
        require_xrv()


def test_openi_is_downloadable_the_others_are_not() -> None:
    import json

    from cxr_bench.data.download import load_part_list

    parts = load_part_list(release_list("openi"))
    assert [p.file for p in parts.parts] == ["NLMCXR_png.tgz", "NLMCXR_reports.tgz"]
    assert json.loads(release_list("openi").read_text())["schema"] == 1
    with pytest.raises(ExternalDataError, match="PadChest .*not openly downloadable: request access"):
        release_list("padchest")
    assert len(CHESTXRAY14) == 14


@pytest.mark.slow  # the fixtures parse PadChest's 160K-row metadata
def test_openi_download_then_open(roots, tmp_path: Path, capsys) -> None:
    import io
    import tarfile

    import range_server as rs

    from cxr_bench.cli import main

    src = roots["openi"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:  # NLM's archive: the PNGs at its top level
        for png in sorted((src / "images").glob("*.png")):
            tar.add(png, arcname=png.name)
    site = rs.Site(files={"/NLMCXR_png.tgz": buf.getvalue(),
                          "/NLMCXR_reports.tgz": (src / "NLMCXR_reports.tgz").read_bytes()})
    dest = tmp_path / "openi"
    with rs.serve(site) as base:
        assert main(["data", "download", "--dataset", "openi", "--base-url", base, "--data-root", str(dest), "-q"]) == 0
        assert main(["data", "download", "--dataset", "openi", "--base-url", base, "--data-root", str(dest), "-q"]) == 0
    assert [p for m, p, _ in site.log if m == "GET"].count("/NLMCXR_png.tgz") == 1  # the second call fetched nothing
    capsys.readouterr()
    assert main(["data", "download", "--data-root", str(dest), "--verify"]) == 0
    assert capsys.readouterr().out.startswith("OK")
    got = open_external("openi", dest)
    assert got.data_entry_path == dest / "NLMCXR_reports.tgz"
    assert got.metadata["image"].tolist() == open_external("openi", src).metadata["image"].tolist()

    assert main(["data", "download", "--dataset", "padchest", "--data-root", str(tmp_path / "pc")]) == 1
    out = capsys.readouterr().out
    assert "PadChest" in out and "bimcv" in out and "--dataset padchest" in out
