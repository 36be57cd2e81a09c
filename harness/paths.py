"""Where the harness's data lives: beside the package in its source tree."""

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONFIGS_DIR = PROJECT_DIR / "kernel-configs"
PATCHES_DIR = CONFIGS_DIR / "patches"
RECIPES_DIR = PROJECT_DIR / "guest-images"
