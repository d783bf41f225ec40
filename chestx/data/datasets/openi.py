"""Open-i (Indiana University chest X-rays): the NLM report archive -> `LabelTable`, the PNG images, a patient split.

Sources: Demner-Fushman et al. 2016, "Preparing a collection of radiology examinations for distribution and
retrieval", JAMIA 23(2) (doi:10.1093/jamia/ocv080): 3,955 reports, 7,470 images (https://openi.nlm.nih.gov/faq);
torchxrayvision `datasets.py`, `Openi_Dataset`, whose label rule is reproduced here row for row.

Files, as NLM and torchxrayvision ship them under `data.root`:
    NLMCXR_reports.tgz               the reports, one XML per report (`ecgen-radiology/N.xml`): `uId` (CXRn, the
                                     report), `MeSH/automatic` terms, one `parentImage id=...` per image
    nlmcxr_dicom_metadata.csv.gz     torchxrayvision's dump of the images' DICOM headers (`imageid`, `View Position`)
    <image_dir>/<imageid>.png        the PNG images (NLMCXR_png.tgz unpacked; default: `<root>/images`)

Labels (torchxrayvision's rule): a finding is 1 when its lower-cased name, or one of its synonyms (`OPENI_SYNONYMS`),
is a substring of the report's automatic MeSH terms (unique, lower-cased, `|`-joined), else 0; never unknown. Each
image gets its report's labels. `frame.no_finding`: the report's major MeSH terms are exactly `normal` (the
report's own "normal"; its automatic terms are then empty). Patients: the
report (`uId`), as torchxrayvision takes it (the release has no other patient id). Views: the header's `View
Position` (PA, AP, LL, LATERAL, RL; 2,586 images have none). torchxrayvision's `unique_patients=True` (one image per
report, `groupby('uid').first()`) is not done: every image is a row, the split keeps a report's images together.
"""
from __future__ import annotations

import logging
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.datasets.base import ChestXData, LabelFile
from chestx.data.datasets.registry import register_dataset
from chestx.data.errors import DataError, DataFileNotFoundError
from chestx.data.labels.table import LabelTable, select_pathologies

log = logging.getLogger(__name__)

OPENI_REPORTS = "NLMCXR_reports.tgz"
OPENI_METADATA = "nlmcxr_dicom_metadata.csv.gz"
# torchxrayvision's 18 findings in its order (its names, sorted, then Opacity -> Lung Opacity, Lesion -> Lung Lesion)
OPENI_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Calcified Granuloma", "Cardiomegaly", "Edema", "Effusion", "Emphysema", "Fibrosis", "Fracture",
    "Granuloma", "Hernia", "Infiltration", "Lung Lesion", "Mass", "Nodule", "Lung Opacity", "Pleural_Thickening",
    "Pneumonia", "Pneumothorax",
)
# finding -> the substrings of the MeSH terms that set it (torchxrayvision: its own name lower-cased, and synonyms)
OPENI_PATTERNS: dict[str, tuple[str, ...]] = {name: (name.lower(),) for name in OPENI_FINDINGS}
OPENI_PATTERNS.update({"Lung Lesion": ("lesion",), "Lung Opacity": ("opacity",),
                       "Pleural_Thickening": ("pleural_thickening", "pleural thickening"),
                       "Infiltration": ("infiltration", "infiltrate"), "Atelectasis": ("atelectasis", "atelectases")})
NORMAL_TERMS = "normal"


def read_reports(path: str | Path) -> pd.DataFrame:
    """One row per image of the report archive: report (uId), image_id, terms (automatic MeSH, unique, sorted,
    lower-cased, `|`-joined, as torchxrayvision joins them), major (the major MeSH terms, alike), in the archive's
    order. An XML that does not parse -> DataError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(f"Open-i report archive not found: {str(path)!r}; set data.reports (default "
                                    f"<data.root>/{OPENI_REPORTS})")
    rows = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive.getmembers():
                if not (member.isfile() and member.name.endswith(".xml")):
                    continue
                handle = archive.extractfile(member)
                try:
                    root = ET.parse(handle).getroot()
                except ET.ParseError as err:
                    raise DataError(f"{str(path)!r}: {member.name} is not XML ({err}); use NLM's archive") from err
                uid = root.find("uId")
                if uid is None or not uid.attrib.get("id"):
                    raise DataError(f"{str(path)!r}: {member.name} has no <uId id=...>; use NLM's archive unchanged")
                terms = "|".join(sorted({(n.text or "").lower() for n in root.findall(".//MeSH/automatic")}))
                major = "|".join(sorted({(n.text or "").lower() for n in root.findall(".//MeSH/major")}))
                for image in root.findall(".//parentImage"):
                    rows.append({"report": uid.attrib["id"], "image_id": image.attrib["id"], "terms": terms,
                                 "major": major})
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read the Open-i report archive {str(path)!r}: {err}") from err
    frame = pd.DataFrame(rows, columns=["report", "image_id", "terms", "major"])
    twice = frame["image_id"].duplicated()
    if twice.any():
        raise DataError(f"{str(path)!r}: images {frame['image_id'][twice].head(3).tolist()} are in two reports")
    return frame


def read_openi(reports: str | Path, metadata: str | Path | None, findings: Sequence[str] | None = None,
               image_dir: str = "images") -> LabelTable:
    """The report archive (and the header dump, for views) -> one row per image, labels of `findings` (None: all
    18) by torchxrayvision's rule; `frame.path` is `<image_dir>/<image_id>.png`."""
    names = select_pathologies(list(OPENI_FINDINGS) if findings is None else list(findings), OPENI_FINDINGS,
                               "data.findings (Open-i)")
    images = read_reports(reports)
    view = pd.Series(np.nan, index=images.index, dtype="object")
    if metadata is not None:
        metadata = Path(metadata).expanduser()
        if not metadata.is_file():
            raise DataFileNotFoundError(f"Open-i header dump not found: {str(metadata)!r}; set data.metadata, or "
                                        "null for unknown views")
        dump = pd.read_csv(metadata, usecols=["imageid", "View Position"], dtype=str).drop_duplicates("imageid")
        text = dump.set_index("imageid")["View Position"].reindex(images["image_id"]).str.strip()
        view = text.where(text.notna() & (text != ""), np.nan).astype(object).reset_index(drop=True)
    terms = images["terms"]
    labels = np.zeros((len(images), len(names)), dtype=np.float32)  # (N, K)
    for k, name in enumerate(names):
        hit = np.zeros(len(images), dtype=bool)
        for pattern in OPENI_PATTERNS[name]:
            hit |= terms.str.contains(pattern, regex=False).to_numpy()
        labels[:, k] = hit
    frame = pd.DataFrame({
        "image_id": images["image_id"], "patient_id": images["report"],
        "path": image_dir + "/" + images["image_id"] + ".png", "view": view,
        "age": np.full(len(images), np.nan), "sex": pd.Series(np.nan, index=images.index, dtype="object"),
        "no_finding": (images["major"] == NORMAL_TERMS).to_numpy(), "mesh_terms": terms,
    })
    log.info("Read %d Open-i images of %d reports from %s (%d with a view)", len(frame),
             frame["patient_id"].nunique(), reports, int(frame["view"].notna().sum()))
    return LabelTable(frame=frame, labels=labels, uncertain=np.zeros(labels.shape, dtype=bool), pathologies=names)


def _left_out() -> str:
    return ("the automatic MeSH terms that contain none of the 18 findings' names (e.g. `degenerative change`, "
            "`scoliosis`): no finding reads them. The major MeSH terms (`MeSH/major`) set no finding "
            "(torchxrayvision reads the automatic ones); a major term of exactly `normal` sets frame.no_finding.")


@register_dataset("openi", findings=OPENI_FINDINGS, left_out=_left_out)
class OpenIData(ChestXData):
    """Open-i as NLM ships it (`data=openi`); keys documented in conf/data/openi.yaml."""

    label_files = {"reports": LabelFile((OPENI_REPORTS,), key="reports"),
                   "metadata": LabelFile(key="metadata", required=False)}  # data.metadata=null: views unknown

    def __init__(self, root: str, reports: str | None = None, metadata: str | None = OPENI_METADATA,
                 image_dir: str = "images", findings: Sequence[str] | None = None,
                 views: Sequence[str] | None = ("PA",), **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.reports, self.metadata, self.image_dir = reports, metadata, image_dir
        self.findings = None if findings is None else list(findings)
        self.views = None if views is None else [str(v) for v in ([views] if isinstance(views, str) else views)]

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        table = read_openi(self.label_file("reports"), self.label_file("metadata"), self.findings, self.image_dir)
        table = self.keep_views(table, self.views)
        return table, self.make_split(table)
