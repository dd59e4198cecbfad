"""The Hydra configs of unsup3d (packaged so that the installed commands find them from any folder)."""
