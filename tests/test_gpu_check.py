"""scripts/gpu_check.sh parses and runs every part the GPU check promises (its CPU dry run,
``DEVICE=cpu STEPS=2 NUM_TRAIN=64``, takes minutes and is run by hand, README Speed)."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_gpu_check_script_parses_and_covers_its_parts():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    for part in ("pytest", "bench_train.py", "bench_renderer.py", "32-true bf16-mixed", "experiment=synface",
                 "scripts/eval.py", "gpu_check_steps_per_second=", "gpu_check_side="):
        assert part in text, part
