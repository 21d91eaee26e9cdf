"""Generated photos of printed pages (`python -m train pages`): the one everyday subject no public photo set here has.

People search their photos for documents, receipts and pages they photographed ("text", "Dokument"), and no
source of real labelled photos the project can use holds pages. These are rendered instead, and say so (the
folder is `printed_page/`, a label of `data/labels.json`, read by `python -m train data --tree` like any
other source): sentences of the given caption file set in the fonts matplotlib ships (DejaVu sans, serif
and mono, upright, bold and italic), in one or two columns under a bold heading, on paper of a random tone,
then photographed: turned a few degrees, placed on a table of a random colour, blurred and grainy, at times
in grey.
"""

import json
import random
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

FONTS = sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("DejaVu[SM]*.ttf"))


def generate_pages(sentences: list[str], out: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` photos of printed pages in `out/printed_page/`; returns their paths."""
    rng = random.Random(seed)
    folder = out / "printed_page"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(count), desc="pages", unit="page"):
        path = folder / f"page-{i:05d}.jpg"
        photographed(page(sentences, rng), rng).save(path, quality=rng.randint(70, 95))
        paths.append(path)
    return paths


def page(sentences: list[str], rng: random.Random) -> Image.Image:
    """A page set with a heading and paragraphs of `sentences`, in one or two columns."""
    width = rng.randint(500, 800)
    height = int(width * rng.uniform(1.2, 1.5))
    tone = rng.randint(225, 255)
    image = Image.new("RGB", (width, height), (tone, tone, max(tone - rng.randint(0, 20), 0)))
    draw = ImageDraw.Draw(image)
    size = rng.randint(13, 24)
    body = ImageFont.truetype(str(rng.choice(FONTS)), size)
    heading = ImageFont.truetype(str(rng.choice([f for f in FONTS if "Bold" in f.name])), int(size * 1.6))
    margin = rng.randint(25, 60)
    ink = (rng.randint(0, 60),) * 3
    draw.text((margin, margin), rng.choice(sentences).rstrip(" .")[:40], font=heading, fill=ink)
    columns = rng.choice([1, 1, 2])
    column_width = (width - 2 * margin) // columns
    for column in range(columns):
        x, y = margin + column * column_width, margin + int(size * 3.2)
        while y < height - margin - size:
            line = ""
            for word in " ".join(rng.choice(sentences) for _ in range(3)).split():
                if draw.textlength(f"{line} {word}", font=body) > column_width - 15:
                    break
                line = f"{line} {word}".strip()
            draw.text((x, y), line, font=body, fill=ink)
            y += int(size * rng.uniform(1.3, 1.7)) + (size if rng.random() < 0.12 else 0)  # a paragraph break
    return image


def photographed(image: Image.Image, rng: random.Random) -> Image.Image:
    """The page as a phone photographs it: turned, on a table, a little out of focus, grainy, at times grey."""
    table = tuple(rng.randint(40, 200) for _ in range(3))
    turned = image.rotate(rng.uniform(-6, 6), expand=True, fillcolor=table, resample=Image.BICUBIC)
    border = rng.randint(0, 80)
    canvas = Image.new("RGB", (turned.width + 2 * border, turned.height + 2 * border), table)
    canvas.paste(turned, (border, border))
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    pixels = np.asarray(canvas, dtype=np.float32) + np.random.default_rng(rng.randrange(2**32)).normal(
        0, rng.uniform(0, 8), (canvas.height, canvas.width, 1))
    canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return canvas.convert("L").convert("RGB") if rng.random() < 0.4 else canvas


def caption_sentences(captions_file: Path, language: str = "en") -> list[str]:
    """The sentences a page is set in: the captions of one language of a caption file."""
    sentences = []
    for line in captions_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        sentences += record.get(language, {}).get("caption", [])
    if not sentences:
        raise ValueError(f"{captions_file} has no {language} captions to set pages in")
    return sentences
