"""Export meshes, maps and videos for photos with a trained model (same as the `unsup3d-export` command).

    python scripts/export.py --checkpoint model.ckpt --output out/ photo.jpg photos/ "more/*.png" [--video]

See `python scripts/export.py --help` and :mod:`unsup3d.export`.
"""

from __future__ import annotations

import sys

from unsup3d.export import main

if __name__ == "__main__":
    sys.exit(main())
