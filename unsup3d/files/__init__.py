"""Files: every file the package writes, and the image files it reads.

* :mod:`.atomic`: atomic writing of bytes, text, JSON, arrays, checkpoints and whole folders (a write
  never leaves a half-written file, a failure never destroys an existing one; a full disk says so);
* :mod:`.images`: finding and reading image files robustly, writing images;
* :mod:`.video`: ``.mp4`` / ``.gif`` videos;
* :mod:`.depth_encoding`: depth as grey values (near is bright), the one rule of depth PNGs and images;
* :mod:`.mesh`: grid meshes of depth maps and their OBJ (+MTL, PNG), GLB and PLY files.
"""
