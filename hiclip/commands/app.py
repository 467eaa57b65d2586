"""``hiclip app``: serve the Streamlit app (``app.py`` at the repository root), headless.

The app binds to 127.0.0.1 by default: it loads checkpoints and reads local datasets, so expose
it on another interface only on purpose (``--host 0.0.0.0``).

The command replaces itself with the Streamlit server (``exec``), so the PID it started with is
the server's: stopping that PID (SIGTERM, SIGINT, even SIGKILL) stops the server, and no child is
left serving on the port.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hiclip.errors import HiCLIPError
from hiclip.paths import REPO_ROOT

APP = REPO_ROOT / "app.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder of checkpoints (subfolders with config.json); default "
                             "$HICLIP_CHECKPOINTS or checkpoints/ in the repository")
    parser.add_argument("--data", action="append", default=None, metavar="SPEC",
                        help="dataset to browse (repeatable; any format open_dataset reads); "
                             "default runs/demo/data or a generated 16-sample synthetic set")
    parser.add_argument("--port", type=int, default=8501, help="port (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--max-upload-mb", type=int, default=16,
                        help="streamlit's upload limit in MB; the app itself refuses images over 10 MB")


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args`` (headless, no usage statistics)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.headless", "true",
            "--server.address", str(args.host),
            "--server.port", str(args.port),
            "--server.maxUploadSize", str(args.max_upload_mb),
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]


def app_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the app process: checkpoint folder and datasets from the options."""
    env = dict(os.environ)
    if args.checkpoints is not None:
        if not args.checkpoints.is_dir():
            raise HiCLIPError(f"--checkpoints {args.checkpoints}: not a folder")
        env["HICLIP_CHECKPOINTS"] = str(args.checkpoints.resolve())
    if args.data:
        env["HICLIP_APP_DATA"] = os.pathsep.join(str(Path(d).resolve()) if "://" not in d else d
                                                 for d in args.data)
    return env


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise HiCLIPError(f"--port must be in 1..65535, got {args.port}")
    if not APP.is_file():
        raise HiCLIPError(f"{APP}: the app script is missing")
    env = app_environment(args)
    command = streamlit_command(args)
    print(f"serving the HiCLIP app on http://{args.host}:{args.port} (Ctrl-C stops it; "
          f"pid {os.getpid()})", flush=True)
    sys.stderr.flush()
    try:
        os.chdir(REPO_ROOT)
        os.execve(command[0], command, env)
    except OSError as error:
        raise HiCLIPError(f"cannot start the Streamlit server {command[0]}: {error.strerror}") from None
    return 0  # not reached: exec replaced this process
