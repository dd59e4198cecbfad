"""unsup3d: Wu, Rupprecht and Vedaldi, *Unsupervised Learning of Probably Symmetric Deformable 3D Objects
from Images in the Wild* (CVPR 2020) in PyTorch Lightning.

``unsup3d.load_pretrained("celeba")`` gives a pretrained model of the original release
(:mod:`unsup3d.pretrained`); importing the package itself loads nothing heavy.
"""

__all__ = ["load_pretrained"]


def __getattr__(name: str):
    """``load_pretrained`` on first use (it imports torch), so ``import unsup3d.files.images`` stays light."""
    if name == "load_pretrained":
        from unsup3d.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'unsup3d' has no attribute {name!r}")
