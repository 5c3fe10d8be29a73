"""Command-line twin of the app: `python -m vae edit PHOTO... --strength 2 --out DIR`.

Same alignment, model and vectors as the web app. For each photo writes `<name>_less.png`,
`<name>_more.png`, `<name>_strip.png` (less -> more), `<name>_strip.gif` and, when a face was found,
`<name>_in_photo.png`. A photo that cannot be used is reported and skipped; the exit code is 1 if any was.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from .editor import ModelLoadError, SmileEditor
from .export import atomic_save, save_gif, strip_image
from .preprocess import ImageError

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets"


def edit_command(args: argparse.Namespace) -> int:
    try:
        editor = SmileEditor.from_pretrained(args.model)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    strength = editor.settings["default_strength"] if args.strength is None else args.strength
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for photo in tqdm(args.photos, desc="Editing", unit="photo", disable=len(args.photos) < 2):
        try:
            prepared = editor.prepare(photo, align=not args.no_align)
        except ImageError as err:
            print(f"{photo}: skipped: {err}", file=sys.stderr)
            failed += 1
            continue
        for note in prepared.notes:
            print(f"{photo}: {note}", file=sys.stderr)
        result = editor.render(prepared, strength, args.attribute)
        stem = args.out / Path(photo).stem
        atomic_save(result.less, f"{stem}_less.png")
        atomic_save(result.more, f"{stem}_more.png")
        atomic_save(strip_image(result.strip), f"{stem}_strip.png")
        save_gif(result.strip, f"{stem}_strip.gif")
        if result.in_photo is not None:
            atomic_save(result.in_photo, f"{stem}_in_photo.png")
    print(f"Wrote {len(args.photos) - failed} result set(s) to {args.out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    edit = commands.add_parser("edit", help="make less/more versions of face photos")
    edit.add_argument("photos", nargs="+", help="image files")
    edit.add_argument("--strength", type=float, default=None, help="alpha in std of the projection (default: the model's)")
    edit.add_argument("--attribute", default=None, help="vector name (default: the model's, Smiling)")
    edit.add_argument("--out", type=Path, default=Path("edits"))
    edit.add_argument("--no-align", action="store_true", help="skip face detection; plain centre crop")
    edit.add_argument("--model", default=os.environ.get("SMILE_MODEL") or str(DEFAULT_MODEL), help="model folder or Hub repo id")
    args = parser.parse_args(argv)
    return edit_command(args)


if __name__ == "__main__":
    sys.exit(main())
