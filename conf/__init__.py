"""The Hydra configs of unsup3d. This folder (the checkout's top-level ``conf/``) is installed as the
package ``unsup3d.conf`` (``pyproject.toml`` maps it), so the installed commands find the configs from
any folder; see :mod:`unsup3d.config`."""
