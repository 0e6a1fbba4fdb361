"""An example third-party plugin for xai-bridge (see docs/plugin-tutorial.md)."""
