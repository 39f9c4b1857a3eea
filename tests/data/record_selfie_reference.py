"""Record MediaPipe's own output of the selfie model on three real frames, once, for
`tests/test_selfie.py`.

Three frames of `sample:carphone` at 256x256 (decoded and sized by the toolkit itself) go through
MediaPipe's runtime in a throwaway virtual environment: `mediapipe==0.10.14` from PyPI, whose
legacy `SelfieSegmentation` solution runs its bundled selfie graph, with the bundled model file
replaced by the one the toolkit reads (the npm package's), so both sides run the same weights.
A 256x256 frame is the model's own size, so MediaPipe's resizing is the identity. Writes
`tests/data/selfie_reference.npz`: the frames (uint8, H x W x 3), MediaPipe's masks (float32),
the frame indexes, the model's SHA-256 and MediaPipe's version.

    python tests/data/record_selfie_reference.py [--venv DIR]   # DIR reused if it exists
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from nas.data import load_frames, open_video
from nas.teachers.base import file_sha256
from nas.teachers.selfie import selfie_path

MEDIAPIPE = "mediapipe==0.10.14"
FRAMES = (0, 45, 90)
OUT = Path(__file__).with_name("selfie_reference.npz")

RUN = """
import os, shutil, sys
import numpy as np
import mediapipe as mp
from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

model, frames, out = sys.argv[1:4]
bundled = os.path.join(os.path.dirname(mp.__file__), "modules", "selfie_segmentation")
shutil.copy(model, os.path.join(bundled, "selfie_segmentation.tflite"))
masks = []
for frame in np.load(frames):
    with SelfieSegmentation(model_selection=0) as solution:  # fresh: nothing from other frames
        masks.append(np.array(solution.process(frame).segmentation_mask, dtype=np.float32))
np.savez(out, masks=np.stack(masks), version=mp.__version__)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, help="the throwaway environment (kept if given)")
    args = parser.parse_args()
    stack = load_frames(open_video("sample:carphone", max_frames=max(FRAMES) + 1), size=(256, 256))
    frames = np.stack([stack.frames[i].permute(1, 2, 0).numpy() for i in FRAMES]).astype(np.uint8)
    model = selfie_path()
    with tempfile.TemporaryDirectory() as tmp:
        venv = args.venv or Path(tmp) / "venv"
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", MEDIAPIPE], check=True)
        np.save(Path(tmp) / "frames.npy", frames)
        script = Path(tmp) / "run.py"
        script.write_text(RUN)
        result = Path(tmp) / "masks.npz"
        subprocess.run(
            [str(python), str(script), str(model), str(Path(tmp) / "frames.npy"), str(result)],
            check=True,
        )
        found = np.load(result)
        np.savez_compressed(
            OUT,
            frames=frames,
            masks=found["masks"],
            indexes=np.array(FRAMES),
            model_sha256=file_sha256(model),
            mediapipe=str(found["version"]),
        )
    print(f"wrote {OUT}: masks {found['masks'].shape} from MediaPipe {found['version']}")


if __name__ == "__main__":
    main()
