"""Rendered resources (PS3.18 8.3.5, 10.4.1.1.3): every renderable file of pydicom's corpus
against a reference made here from the original file with pydicom, and the parameters."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import io
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut

from tests import stores
from tests.conftest import corpus_files, corpus_id
from tests.factory import write_series
from tests.serving import Http, Reply, serving
from tests.stores import ingested
from tests.test_corpus import NOT_INGESTED

#: Renderable files whose reference cannot be compared pixel for pixel, and why
NOT_COMPARED = {
    "JPEG-lossy.dcm": "pydicom's decoders (pylibjpeg) refuse its 12-bit lossy JPEG: no reference",
    "JPEG2000-embedded-sequence-delimiter.dcm": (
        "OpenJPEG (imagecodecs) refuses its frame (opj_read_header): it is rendered as a 500"
    ),
    "MR_truncated.dcm": "ends inside Pixel Data: no whole frame, its rendered resource is 404",
}
#: Lossy JPEG originals: two JPEG decoders (libjpeg-turbo in imagecodecs, pydicom's own) may
#: differ by a few levels (IDCT and colour conversion precision, ITU-T T.81 allows it): these
#: are compared within MAX_LOSSY_DIFFERENCE per pixel and a mean absolute difference
#: below MEAN_LOSSY_DIFFERENCE
LOSSY_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
MAX_LOSSY_DIFFERENCE = 3
MEAN_LOSSY_DIFFERENCE = 0.2
#: a JPEG rendering (quality 90) against the PNG reference: mean absolute difference
JPEG_TOLERANCE = 1.5
CORPUS = [p for p in corpus_files() if corpus_id(p) not in NOT_INGESTED]


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return Path(path)


def reference(ds: pydicom.Dataset, window: tuple[float, float, str] | None = None) -> np.ndarray:
    """The first frame as 8-bit display values, from pydicom alone: Modality LUT, VOI (the
    window given, else the first window, else the VOI LUT, else the frame's range), scaled
    linearly from the VOI output range to 0..255 (PS3.3 C.11.2.1.2), MONOCHROME1 inverted;
    palette colour through its LUTs; colour scaled from Bits Stored."""
    if not str(ds.get("NumberOfFrames", "1")).isdigit():
        del ds.NumberOfFrames  # badVR.dcm's '1A': one frame, as the store reads it
    arr = ds.pixel_array
    grayscale = ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
    if arr.ndim == (3 if grayscale else 4):
        arr = arr[0]
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        bits = 16 if ds.RedPaletteColorLookupTableDescriptor[2] > 8 else 8
        return _eight_bits(apply_color_lut(arr, ds), 0, 2**bits - 1)
    if not grayscale:
        return arr if ds.BitsStored == 8 else _eight_bits(arr, 0, 2**ds.BitsStored - 1)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = window
    values = apply_modality_lut(arr, ds)
    if "WindowWidth" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=False)
        bits = ds.BitsStored  # pydicom's window output: the stored range after rescale
        low, high = (
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if ds.PixelRepresentation
            else (0, 2**bits - 1)
        )
        if ds.get("ModalityLUTSequence"):
            low, high = 0, 2 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1
        elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
            low = low * ds.RescaleSlope + ds.RescaleIntercept
            high = high * ds.RescaleSlope + ds.RescaleIntercept
    elif "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
        low, high = 0, 2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1
    else:
        low, high = float(values.min()), float(values.max())
    display = _eight_bits(values, low, high)
    return 255 - display if ds.PhotometricInterpretation == "MONOCHROME1" else display


def _eight_bits(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _decoded(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _path(ds: pydicom.Dataset, suffix: str = "/rendered") -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}{suffix}"
    )


Get = Callable[..., Reply]


def _getter(base_url: str) -> Get:
    """GET a path (from /dicomweb on) with query parameters and headers."""
    http = Http(base_url)

    def get(path: str, params: dict[str, str] | None = None, **headers: str) -> Reply:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        return http.get(path + query, {k.replace("_", "-"): v for k, v in headers.items()})

    return get


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, Get]]:
    """Every ingestible corpus file in a store served by our server (files sharing a SOP
    Instance UID go to different stores): file -> its server's GET."""
    groups: list[dict[str, Path]] = []
    for path in CORPUS:
        sop = str(pydicom.dcmread(path, force=True, stop_before_pixels=True).SOPInstanceUID)
        group = next((g for g in groups if sop not in g), None)
        if group is None:
            group = {}
            groups.append(group)
        group[sop] = path
    root = tmp_path_factory.mktemp("rendered")
    with contextlib.ExitStack() as stack:
        served: dict[Path, Get] = {}
        for number, group in enumerate(groups):
            location = stores.location(root, f"store{number}")
            stack.callback(stores.forget, location)
            assert ingested(location, list(group.values())).ok
            get = _getter(stack.enter_context(serving(location)))
            served.update(dict.fromkeys(group.values(), get))
        yield served


@pytest.mark.slow
@pytest.mark.parametrize("path", CORPUS, ids=corpus_id)
def test_rendered_png_equals_reference(path: Path, corpus: dict[Path, Get]) -> None:
    """A file's rendered PNG equals, pixel for pixel, pydicom's rendering of the original
    (lossy JPEG originals within a few levels); a file without Pixel Data has none (404)."""
    name = corpus_id(path)
    ds = pydicom.dcmread(path, force=True)
    reply = corpus[path](_path(ds), {"accept": "image/png"})
    if "PixelData" not in ds or name == "MR_truncated.dcm":
        assert reply.status_code == 404
        return
    if name in NOT_COMPARED:
        return
    assert reply.status_code == 200, reply.content
    assert reply.headers["content-type"] == "image/png"
    got, expected = _decoded(reply.content), reference(ds)
    assert got.shape == expected.shape
    difference = np.abs(got.astype(int) - expected.astype(int))
    if ds.file_meta.TransferSyntaxUID in LOSSY_JPEG:
        assert difference.max() <= MAX_LOSSY_DIFFERENCE
        assert difference.mean() < MEAN_LOSSY_DIFFERENCE
    else:
        assert difference.max() == 0


def test_not_compared_files_exist() -> None:
    """The exclusion table names only files of pydicom's corpus."""
    assert set(NOT_COMPARED) <= {corpus_id(p) for p in CORPUS}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Get, list[Path]]]:
    """CT_small, a two-frame RGB file and a series of three CT slices, served; the files."""
    root = tmp_path_factory.mktemp("parameters")
    files = [_testdata("CT_small.dcm"), _testdata("SC_rgb_rle_2frame.dcm")]
    files += write_series(root / "in", count=3)
    location = stores.location(root, "store")
    assert ingested(location, files).ok
    with serving(location) as url:
        yield _getter(url), files
    stores.forget(location)


@pytest.fixture
def ct(served: tuple[Get, list[Path]]) -> tuple[Get, pydicom.Dataset]:
    return served[0], pydicom.dcmread(served[1][0])


def test_jpeg_within_tolerance(ct: tuple[Get, pydicom.Dataset]) -> None:
    """JPEG is the default type: the image is the reference within JPEG_TOLERANCE (mean
    absolute difference at the default quality)."""
    get, ds = ct
    reply = get(_path(ds))
    assert reply.headers["content-type"] == "image/jpeg"
    got = _decoded(reply.content)
    assert np.abs(got.astype(int) - reference(ds).astype(int)).mean() < JPEG_TOLERANCE


@pytest.mark.parametrize(
    ("query", "window"),
    [
        ("40,400", (40, 400, "LINEAR")),
        ("40,400,linear-exact", (40, 400, "LINEAR_EXACT")),
        ("100,300,SIGMOID", (100, 300, "SIGMOID")),
    ],
)
def test_window_parameter(
    ct: tuple[Get, pydicom.Dataset], query: str, window: tuple[float, float, str]
) -> None:
    """window=center,width,function replaces the instance's window (PS3.3 C.11.2.1.2, .3)."""
    get, ds = ct
    reply = get(_path(ds), {"window": query, "accept": "image/png"})
    np.testing.assert_array_equal(_decoded(reply.content), reference(ds, window))


def test_viewport_scales_crops_and_flips(ct: tuple[Get, pydicom.Dataset]) -> None:
    """viewport=vw,vh fits the image keeping its aspect; a source region cuts it, a negative
    width flips it (PS3.18 8.3.5.1.3)."""
    get, ds = ct
    expected = reference(ds)  # 128 x 128

    def image(viewport: str) -> np.ndarray:
        reply = get(_path(ds), {"viewport": viewport, "accept": "image/png"})
        assert reply.status_code == 200
        return _decoded(reply.content)

    assert image("64,32").shape == (32, 32)
    assert image("64,64,0,0,128,64").shape == (32, 64)
    np.testing.assert_array_equal(image("64,32,10,20,64,32"), expected[20:52, 10:74])
    np.testing.assert_array_equal(image("64,64,64,0,-64,64"), expected[0:64, 0:64][:, ::-1])
    np.testing.assert_array_equal(image("64,64,0,64,64,-64"), expected[0:64, 0:64][::-1])


def test_quality_parameter(ct: tuple[Get, pydicom.Dataset]) -> None:
    """quality=1..100 sets the JPEG quality: a lower quality gives a smaller image."""
    get, ds = ct
    sizes = [len(get(_path(ds), {"quality": q}).content) for q in ("10", "95")]
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize(
    "params",
    [
        {"window": "40"},
        {"window": "40,0"},
        {"window": "40,0.5,linear"},
        {"window": "40,400,cubic"},
        {"window": "a,b"},
        {"viewport": "0,10"},
        {"viewport": "10"},
        {"viewport": "10,10,0,0,0,10"},
        {"viewport": "10,10,-1,0,5,5"},
        {"viewport": "10,10,500,0,5,5"},
        {"viewport": "4097,10"},
        {"quality": "0"},
        {"quality": "101"},
        {"quality": "high"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_invalid_parameters_are_400(
    ct: tuple[Get, pydicom.Dataset], params: dict[str, str]
) -> None:
    """An invalid window, viewport or quality is 400 with a sentence naming it."""
    get, ds = ct
    reply = get(_path(ds), params=params)
    assert reply.status_code == 400
    assert next(iter(params)) in reply.content.decode()


def test_unsupported_types_are_406(ct: tuple[Get, pydicom.Dataset]) -> None:
    """image/gif (Accept or accept=) is 406; the accept parameter wins over the header."""
    get, ds = ct
    assert get(_path(ds), accept="image/gif").status_code == 406
    assert get(_path(ds), {"accept": "image/gif"}).status_code == 406
    reply = get(_path(ds), {"accept": "image/png"}, accept="image/gif")
    assert reply.headers["content-type"] == "image/png"
    assert get(_path(ds), accept="image/gif, image/*").status_code == 200


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("image/png;q=0.5, image/jpeg", "image/jpeg"),
        ("image/jpeg;q=0.4, image/png;q=0.9", "image/png"),
        ("image/jpeg;q=0, */*", "image/png"),
        ("image/*;q=0.2, image/png", "image/png"),
        ("image/png;q=0.5, */*", "image/jpeg"),
        ("image/png, image/jpeg", "image/png"),
    ],
)
def test_accept_weights_choose_the_type(
    ct: tuple[Get, pydicom.Dataset], accept: str, expected: str
) -> None:
    """Accept weights decide (RFC 9110 12.5.1): the most specific range gives each type its
    weight, the heavier wins, q=0 refuses; of two alike the first listed."""
    get, ds = ct
    assert get(_path(ds), accept=accept).headers["content-type"] == expected
    assert get(_path(ds), {"accept": accept}).headers["content-type"] == expected


def test_406_names_what_asked(ct: tuple[Get, pydicom.Dataset]) -> None:
    """A 406 names the accept parameter when it asked, else the Accept header."""
    get, ds = ct
    by_parameter = get(_path(ds), {"accept": "image/gif"}, accept="image/png")
    assert by_parameter.status_code == 406
    assert by_parameter.content.decode().startswith("cannot answer accept=image/gif;")
    by_header = get(_path(ds), accept="image/gif")
    assert by_header.content.decode().startswith("cannot answer Accept: image/gif;")


def test_frame_zero_is_400(ct: tuple[Get, pydicom.Dataset]) -> None:
    """Frame numbers start at 1: a frame list naming 0 is a bad request (400), at rendered,
    thumbnail and frames alike."""
    get, ds = ct
    for suffix in ("/frames/0/rendered", "/frames/1,0/thumbnail", "/frames/0"):
        reply = get(_path(ds, suffix))
        assert reply.status_code == 400, suffix
        assert "start at 1" in reply.content.decode()


def test_unknown_uids_are_404(ct: tuple[Get, pydicom.Dataset]) -> None:
    """An unknown study, series, instance or frame is 404, at rendered and thumbnail; the
    answer says which was not found, without repeating a UID."""
    get, ds = ct
    study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
    for path, says in (
        ("/dicomweb/studies/1.2.3/rendered", "the study is not in the store"),
        (f"/dicomweb/studies/{study}/series/1.2.3/thumbnail", "the series is not in the store"),
        (
            f"/dicomweb/studies/{study}/series/{series}/instances/1.2.3/rendered",
            "the instance is not in the store",
        ),
        (
            f"/dicomweb/studies/{study}/series/{series}/instances/1.2.3/frames/1/rendered",
            "the instance is not in the store",
        ),
        (f"/dicomweb/studies/1.2.3/series/{series}/rendered", "the study is not in the store"),
        (_path(ds, "/frames/2/rendered"), "frame 2 (the instance has 1 frame)"),
    ):
        reply = get(path)
        assert reply.status_code == 404, path
        assert reply.text == f"not found: {says}\n", path
        assert "1.2.3" not in reply.text and study not in reply.text
    assert get("/dicomweb/studies/..%2F/thumbnail").status_code == 404


def test_series_and_study_show_the_middle_instance(
    served: tuple[Get, list[Path]],
) -> None:
    """A series' and a study's rendered resource is the middle instance by InstanceNumber."""
    get = served[0]
    ds = [pydicom.dcmread(f) for f in served[1][2:]]
    ds.sort(key=lambda d: int(d.InstanceNumber))
    middle = get(_path(ds[1]), {"accept": "image/png"}).content
    series = f"/dicomweb/studies/{ds[0].StudyInstanceUID}/series/{ds[0].SeriesInstanceUID}"
    assert get(series + "/rendered", {"accept": "image/png"}).content == middle
    study = f"/dicomweb/studies/{ds[0].StudyInstanceUID}/rendered"
    assert get(study, {"accept": "image/png"}).content == middle
    assert get(_path(ds[0]), {"accept": "image/png"}).content != middle


def test_multiframe_instance_is_its_first_frame(served: tuple[Get, list[Path]]) -> None:
    """A multi-frame instance's rendered resource is frame 1; a frame list gives one image
    per frame in a multipart/related body."""
    get, ds = served[0], pydicom.dcmread(served[1][1])
    first = get(_path(ds), {"accept": "image/png"})
    assert first.content == get(_path(ds, "/frames/1/rendered?accept=image/png")).content
    second = get(_path(ds, "/frames/2/rendered"), {"accept": "image/png"})
    np.testing.assert_array_equal(_decoded(second.content), ds.pixel_array[1])
    both = get(_path(ds, "/frames/1,2/rendered"), {"accept": "image/png"})
    head = f"Content-Type: {both.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + both.content)
    parts = [part.get_payload(decode=True) for part in message.iter_parts()]
    assert parts == [first.content, second.content]
