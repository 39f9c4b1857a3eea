"""MediaPipe's selfie segmentation (the person mask of video calls) as built-in teachers.

`selfie` (256x256) and `selfie_landscape` (144x256): person probability per pixel from RGB in
[0, 1], a MobileNetV3-style encoder-decoder of 54 convs and one transposed conv, about 59 MMACs
(Apache-2.0). Both files ship in the npm package `@mediapipe/selfie_segmentation` (the same
weights are inside the `mediapipe` wheels); `make install` fetches it with npm, without
MediaPipe's dependencies (`fetch_selfie`), and the teachers read it through `nas.teachers.tflite`.
Each runs at any size that is a multiple of 16.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from nas.core.errors import NasError
from nas.core.io import atomic_write_bytes
from nas.teachers.base import UNIT_RANGE, InputSpec, OutputKind, Teacher, file_sha256
from nas.teachers.onnx import check_no_weight_options
from nas.teachers.registry import TEACHERS

NPM_PACKAGE = "@mediapipe/selfie_segmentation@0.1.1675465747"
# The files and their SHA-256 as that package version ships them.
FILES = {
    "selfie_segmentation.tflite": (
        "8d13b7fae74af625c641226813616a2117bd6bca19eb3b75574621fc08557f27"
    ),
    "selfie_segmentation_landscape.tflite": (
        "4aafe6223bb8dac6fac8ca8ed56852870a33051ef3f6238822d282a109962894"
    ),
}
SIZES = {
    "selfie_segmentation.tflite": (256, 256),
    "selfie_segmentation_landscape.tflite": (144, 256),
}


def model_dir() -> Path:
    """Where the files are kept: `$NAS_MEDIAPIPE_DIR`, else beside the environment's packages
    (`share/nas/mediapipe` under `sys.prefix`, where `make install` puts them)."""
    found = os.environ.get("NAS_MEDIAPIPE_DIR")
    return Path(found) if found else Path(sys.prefix) / "share" / "nas" / "mediapipe"


def selfie_path(name: str = "selfie_segmentation.tflite") -> Path:
    path = model_dir() / name
    if not path.is_file():
        raise NasError(
            f"MediaPipe's {name} is not in {model_dir()}: run `make install`, or "
            f"`python -c 'from nas.teachers.selfie import fetch_selfie; fetch_selfie()'` "
            f"(needs npm), or set NAS_MEDIAPIPE_DIR to a folder holding the files of {NPM_PACKAGE}"
        )
    return path


def fetch_selfie(dest: Path | None = None) -> Path:
    """Fetch the npm package with npm (no dependencies, no scripts run) and keep its two model
    files in `dest` (default `model_dir()`), each checked against its SHA-256; files already
    there and correct are kept. Returns the folder."""
    dest = Path(dest) if dest is not None else model_dir()
    missing = [
        name
        for name, digest in FILES.items()
        if not (dest / name).is_file() or file_sha256(dest / name) != digest
    ]
    if not missing:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(
                ["npm", "pack", "--silent", "--ignore-scripts", NPM_PACKAGE],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            )
        except FileNotFoundError as exc:
            raise NasError(f"fetching {NPM_PACKAGE} needs npm, which is not installed") from exc
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:]
            raise NasError(f"npm could not fetch {NPM_PACKAGE}: {' '.join(said)}") from exc
        (archive,) = Path(tmp).glob("*.tgz")
        with tarfile.open(archive) as tar:
            for name in missing:
                member = tar.extractfile(f"package/{name}")
                data = member.read() if member is not None else b""
                digest = hashlib.sha256(data).hexdigest()
                if digest != FILES[name]:
                    raise NasError(
                        f"{name} from {NPM_PACKAGE} has SHA-256 {digest}, expected {FILES[name]}"
                    )
                atomic_write_bytes(dest / name, data)
    return dest


def _selfie(name: str, file: str, weights, num_classes, device: str) -> Teacher:
    from nas.teachers.tflite import tflite_teacher

    check_no_weight_options(name, weights, num_classes)
    spec = InputSpec(**UNIT_RANGE, size_multiple=16, default_size=SIZES[file])
    return tflite_teacher(
        selfie_path(file),
        name=name,
        input_spec=spec,
        output_kind=OutputKind.PROB_MAP,
        device=device,
    )


@TEACHERS.register("selfie")
def selfie(
    *,
    weights: Path | None = None,
    num_classes: int | None = None,
    aux: bool = False,
    device: str = "cpu",
) -> Teacher:
    """MediaPipe selfie segmentation (Apache-2.0): a person probability map, 256x256."""
    return _selfie("selfie", "selfie_segmentation.tflite", weights, num_classes, device)


@TEACHERS.register("selfie_landscape")
def selfie_landscape(
    *,
    weights: Path | None = None,
    num_classes: int | None = None,
    aux: bool = False,
    device: str = "cpu",
) -> Teacher:
    """MediaPipe selfie segmentation, landscape (Apache-2.0): a person probability map, 144x256."""
    return _selfie(
        "selfie_landscape", "selfie_segmentation_landscape.tflite", weights, num_classes, device
    )
