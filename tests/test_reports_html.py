"""The HTML report per patient: key images read from a file:// archive, the growth plot, opened in headless
Chromium (Debian's ``chromium`` package); through the CLI and the API; no PatientID in the page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from db.engine import make_engine, make_sessionmaker, transaction
from nightscan.cli import main
from nightscan.settings import Settings
from nightscan.storage import open_storage
from reports.api import create_app
from reports.key_images import pixel_of
from reports.tokens import Scope, create_token
from tests.conftest import unavailable
from tests.reports_seed import MODEL, PATIENT_IDS, SECRET, seed
from workers.decode import decode_object

PROBE = """<script>
window.addEventListener('load', () => {
  const found = [...document.images].map(i => (i.id || i.alt) + '=' + i.naturalWidth + 'x' + i.naturalHeight);
  document.body.setAttribute('data-probe', found.join(';'));
});
</script>"""
"""Added to a copy of the page (the report itself has no script): lists each image as Chromium decoded it."""


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom")


def chromium_images(page: Path) -> dict[str, list[tuple[int, int]]]:
    """The images Chromium loaded from ``page``: (width, height) in pixels, by id or alt text."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("chromium", "not installed (apt-get install chromium)")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = subprocess.run(
        [executable, *CHROMIUM_FLAGS, probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    match = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert match, result.stdout[-2000:]
    images: dict[str, list[tuple[int, int]]] = {}
    for item in match.group(1).split(";"):
        name, size = item.rsplit("=", 1)
        width, height = (int(v) for v in size.split("x"))
        images.setdefault(name, []).append((width, height))
    return images


@pytest.fixture(params=["postgres", "sqlite"])
def archive_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    url = request.getfixturevalue("postgres_url" if request.param == "postgres" else "sqlite_url")
    archive = tmp_path / "archive"
    return url, archive


def test_html_report_opens_in_chromium_with_plot_and_key_images(archive_db: tuple[str, Path], tmp_path: Path) -> None:
    url, archive = archive_db
    seeded = seed(url, archive=archive)
    env = {"NIGHTSCAN_DATABASE_URL": url, "NIGHTSCAN_PSEUDONYM_KEY": SECRET, "NIGHTSCAN_DATA_DIR": str(tmp_path)}
    out = tmp_path / "PAT-0002.html"  # the file name is the caller's business; the page holds no PatientID
    result = CliRunner().invoke(
        main, ["report", "patient", "PAT-0002", "--format", "html", "--every-study", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    for pid in PATIENT_IDS:
        assert pid not in page and quote(pid) not in page
    assert seeded.keys["PAT-0002"] in page
    assert 'id="growth-plot"' in page and page.count('class="key-image"') == 4  # 2 lesions x 2 studies
    images = chromium_images(out)
    assert images["growth-plot"] == [(800, 450)]
    assert images["L1 key image"] == [(800, 420)] * 2 and images["L2 key image"] == [(800, 420)] * 2


def test_key_image_centre_lands_on_the_nodule(sqlite_url: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    seeded = seed(sqlite_url, archive=archive)
    storage = open_storage(archive.as_uri())
    uid = seeded.studies[("PAT-0001", 1)]
    decoded = decode_object("x", storage.get("PAT-0001/1/1.dcm"))
    frame = decoded.frames[0]
    assert decoded.frames[0].sop_instance_uid == f"{uid}.1.1"
    row, col = pixel_of(np.array([-50.0, 10.0, 1.0]), frame.position, frame.orientation, frame.pixel_spacing)
    assert (row, col) == (74.0, 14.0)  # 1 mm pixels from (-64, -64)
    hu = decoded.values(0)
    assert hu[74, 14] == 30 and hu[74, 14 + 6] == -850  # the 9.5 mm nodule, and lung beside it


def test_missing_slice_is_reported_without_the_object_key(sqlite_url: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    seed(sqlite_url, archive=archive)
    (archive / "O'Brien/77/1/1.dcm").unlink()
    env = {"NIGHTSCAN_DATABASE_URL": sqlite_url, "NIGHTSCAN_PSEUDONYM_KEY": SECRET}
    result = CliRunner().invoke(main, ["report", "patient", "O'Brien/77", "--format", "html"], env=env)
    assert result.exit_code == 0, result.output
    page = result.stdout
    assert 'class="missing"' in page and "could not be read (StorageError)" in page
    assert "O'Brien" not in page and "O&#x27;Brien" not in page and 'class="key-image"' not in page
    assert "O'Brien" not in result.stderr


def test_html_report_from_the_api(postgres_url: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    seeded = seed(postgres_url, archive=archive)
    engine = make_engine(postgres_url)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        token, _ = create_token(session, "viewer", [Scope.REPORTS_READ])
        worklist_only, _ = create_token(session, "nurse", [Scope.WORKLIST_READ])
    settings = Settings(database_url=postgres_url, pseudonym_key=SECRET, data_dir=tmp_path)
    with TestClient(create_app(settings, factory)) as client:
        path = f"/patients/{quote('PAT-0001', safe='')}/report.html"
        response = client.get(path, headers={"Authorization": f"Bearer {token}"}, params={"model": MODEL})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.text.count('class="key-image"') == 1 and "PAT-0001" not in response.text
        by_key = client.get(
            f"/pseudonyms/{seeded.keys['PAT-0001']}/report.html", headers={"Authorization": f"Bearer {token}"}
        )
        assert by_key.status_code == 200
        assert client.get(path, headers={"Authorization": f"Bearer {worklist_only}"}).status_code == 403
        assert client.get(path).status_code == 401
    engine.dispose()
