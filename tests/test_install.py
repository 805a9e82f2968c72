"""`pip install .` gives a working agent: a fresh venv, then `voice-agent --help` and the packaged
default config and web client, run from outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(".venv", ".git", "artifacts", "__pycache__", "build", "*.egg-info", ".pytest_cache")


def test_pip_install_gives_the_voice_agent_command(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies are the ones this test run already has (no download, no 15-minute build of
    # llama-cpp-python): the fresh venv sees them through a .pth file, and pip, with no index,
    # must find every declared dependency there.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The venv's bundled setuptools (65 on Python 3.11) cannot build wheels without `wheel`; use
    # the project's newer one (seen through the .pth file) as the build backend.
    subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation",
                    "--no-cache-dir", str(source)], check=True, cwd=tmp_path)
    shutil.rmtree(source)  # the installed agent must not need the source tree

    help_text = subprocess.run([str(venv / "bin" / "voice-agent"), "--help"], check=True, capture_output=True,
                               text=True, cwd=tmp_path).stdout
    assert "serve" in help_text and "bench" in help_text
    assert "turns.hangover_ms" in help_text  # read from the packaged default config
    where = subprocess.run([str(python), "-c", "import agent.config, signaling.app; "
                            "print(agent.config.DEFAULT_TOML); print(signaling.app.WEB_DIR)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert all(path.startswith(site) for path in where), where
    assert (Path(where[1]) / "index.html").is_file() and (Path(where[1]) / "app.js").is_file()
