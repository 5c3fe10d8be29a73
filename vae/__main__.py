"""Command-line twin of the app: `python -m vae edit PHOTO... --strength 2 --out DIR`.

Same alignment, model, vectors and transfer (editor.json) as the web app. For each photo writes the whole
photo edited, at its own resolution (up to 2048 px): `<name>_less.png` and `<name>_more.png`, and the
face region from less to more as `<name>_strip.png` and `<name>_strip.gif` (a name that repeats, as in
a/me.jpg b/me.png, becomes me_2, ...: no result overwrites another). A photo that cannot be used
is reported and skipped; the exit code is 1 if any was, 2 if nothing could run (model, attribute, strength).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from .editor import SmileEditor
from .files import atomic_save
from .hub import ModelLoadError
from .image_file import ImageError
from .strip import save_gif, strip_image

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets"


def result_names(photos: list[str]) -> list[str]:
    """Each photo's file stem, numbered where it repeats, so that no two photos' results share a name."""
    taken = {Path(photo).stem for photo in photos}
    names: list[str] = []
    for photo in photos:
        stem = name = Path(photo).stem
        n = 1
        while name in names or (name != stem and name in taken):
            n += 1
            name = f"{stem}_{n}"
        names.append(name)
    return names


def edit_command(args: argparse.Namespace) -> int:
    try:
        editor = SmileEditor.from_pretrained(args.model)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        attribute = editor.check_attribute(args.attribute)
        strength = editor.check_strength(editor.settings.default_strength if args.strength is None else args.strength)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    names = result_names(args.photos)
    for photo, name in zip(tqdm(args.photos, desc="Editing", unit="photo", disable=len(args.photos) < 2), names):
        try:
            result = editor.edit(photo, strength, attribute, align=not args.no_align, frames=editor.strip_strengths(strength))
        except ImageError as err:
            tqdm.write(f"{photo}: skipped: {err}", file=sys.stderr)
            failed += 1
            continue
        for note in result.info.notes:
            tqdm.write(f"{photo}: {note}", file=sys.stderr)
        frames = [Image.fromarray(view) for view in result.frames]
        stem = args.out / name
        atomic_save(Image.fromarray(result.less), f"{stem}_less.png")
        atomic_save(Image.fromarray(result.more), f"{stem}_more.png")
        atomic_save(strip_image(frames), f"{stem}_strip.png")
        save_gif(frames, f"{stem}_strip.gif")
    print(f"Wrote {len(args.photos) - failed} result set(s) to {args.out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vae", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    edit = commands.add_parser("edit", help="make less/more versions of face photos")
    edit.add_argument("photos", nargs="+", help="image files")
    edit.add_argument(
        "--strength",
        type=float,
        default=None,
        help="alpha in std of the projection (default: default_strength in the model's editor.json)",
    )
    edit.add_argument(
        "--attribute",
        default=None,
        help="vector name (default: default_attribute in the model's editor.json, e.g. assets/editor.json)",
    )
    edit.add_argument("--out", type=Path, default=Path("edits"), help="output folder (default: %(default)s)")
    edit.add_argument("--no-align", action="store_true", help="skip face detection; plain centre crop")
    edit.add_argument(
        "--model",
        default=os.environ.get("SMILE_MODEL") or str(DEFAULT_MODEL),
        help="model folder or Hub repo id (default: $SMILE_MODEL if set, else the shipped assets/; now %(default)s)",
    )
    args = parser.parse_args(argv)
    return edit_command(args)


if __name__ == "__main__":
    sys.exit(main())
