"""Generated scenes: the controlled testbed for the SigLIP 2 objectives (LocCa, SILC, TIPS, NaFlex).

Each scene holds 1-3 non-overlapping objects (shape, colour, size or orientation, texture) on a plain
background, at one of five aspect ratios, with exact boxes and a per-pixel class mask, and captions in
English, German, French and Chinese about attributes, positions, counts and (for bars) aspect. A small
ViT learns them in minutes on a CPU, and localisation and dense features can be scored exactly -- which
Flickr8k, from scratch on 6k photos, cannot show.

Written in the formats the rest of the project reads: a caption file in the Crossmodal-3600 layout
(`python -m train`, `python -m eval xm3600`), one caption file per caption kind for the test split,
COCO-style instances (boxes, with a referring expression per language) and PNG class masks.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

SHAPES = ("circle", "square", "triangle", "bar")  # mask class = index + 1; 0 is the background
COLOURS = {"red": (214, 48, 49), "green": (39, 174, 96), "blue": (41, 98, 210), "yellow": (241, 196, 15)}
SIZES = ("small", "large")          # circles, squares, triangles
ORIENTATIONS = ("tall", "wide")     # bars: a 1:3 box standing up or lying down
TEXTURES = ("plain", "striped", "dotted")
ASPECTS = ((2, 1), (3, 2), (1, 1), (2, 3), (1, 2))  # width : height
LONG_SIDE = 128
LANGUAGES = ("en", "de", "fr", "zh")
KINDS = ("objects", "count", "single")  # every object with its place; counts per kind of object; one object


@dataclass
class Thing:
    shape: str
    colour: str
    size: str          # "small"/"large", or "tall"/"wide" for a bar
    texture: str
    box: tuple[int, int, int, int]  # x, y, width, height in pixels
    place: str         # left/centre/right across a landscape or square scene; top/centre/bottom down a portrait

    def same_kind(self, other: "Thing") -> bool:
        return (self.shape, self.colour) == (other.shape, other.colour)


def generate(out: str | Path, splits: dict[str, int], seed: int = 0) -> Path:
    """Render `splits` ({"train": 6000, ...}) into `out`: images/, masks/, captions_*.jsonl, instances_*.json."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    rng = random.Random(seed)
    for split, count in splits.items():
        records, instances = [], {"images": [], "annotations": [], "categories": [
            {"id": index + 1, "name": shape} for index, shape in enumerate(SHAPES)]}
        for number in tqdm(range(count), desc=f"scenes ({split})", unit="scene"):
            key = f"{split}-{number:06d}"
            image, mask, things = render(rng)
            focus = rng.randrange(len(things))  # the object of the "single" captions, the same in every language
            image.save(out / "images" / f"{key}.jpg", quality=95)
            mask.save(out / "masks" / f"{key}.png")
            records.append({"image/key": key, **{
                lang: {"caption": [caption(things, kind, lang, focus) for kind in KINDS]} for lang in LANGUAGES}})
            _add_instances(instances, key, image.size, things)
        _write_captions(out / f"captions_{split}.jsonl", records)
        if split == "test":
            for index, kind in enumerate(KINDS):
                _write_captions(out / f"captions_{split}_{kind}.jsonl", [
                    {"image/key": r["image/key"],
                     **{lang: {"caption": [r[lang]["caption"][index]]} for lang in LANGUAGES}} for r in records])
        (out / f"instances_{split}.json").write_text(json.dumps(instances), encoding="utf-8")
    return out


def render(rng: random.Random) -> tuple[Image.Image, Image.Image, list[Thing]]:
    """One scene: (RGB image, class mask, its objects)."""
    aspect_w, aspect_h = rng.choice(ASPECTS)
    scale = LONG_SIDE / max(aspect_w, aspect_h)
    width, height = round(aspect_w * scale), round(aspect_h * scale)
    short = min(width, height)
    background = tuple(rng.randint(225, 250) for _ in range(3))
    image = Image.new("RGB", (width, height), background)
    mask = Image.new("L", (width, height), 0)
    things: list[Thing] = []
    for _ in range(rng.randint(1, 3)):
        shape = rng.choice(SHAPES)
        size = rng.choice(ORIENTATIONS if shape == "bar" else SIZES)
        if shape == "bar":
            box_w, box_h = (round(0.16 * short), round(0.5 * short))[:: 1 if size == "tall" else -1]
        else:
            box_w = box_h = round((0.22 if size == "small" else 0.4) * short)
        for _ in range(50):  # rejection sampling: no overlaps, 3 px apart
            x, y = rng.randint(0, width - box_w), rng.randint(0, height - box_h)
            if all(_apart((x, y, box_w, box_h), t.box, 3) for t in things):
                break
        else:
            continue
        centre = (x + box_w / 2) / width if width >= height else (y + box_h / 2) / height
        ends = ("left", "right") if width >= height else ("top", "bottom")
        place = ends[0] if centre < 1 / 3 else ends[1] if centre > 2 / 3 else "centre"
        thing = Thing(shape, rng.choice(list(COLOURS)), size, rng.choice(TEXTURES), (x, y, box_w, box_h), place)
        _draw(image, mask, thing)
        things.append(thing)
    return image, mask, things


def caption(things: list[Thing], kind: str, language: str, focus: int = 0) -> str:
    """A caption of `kind` in `language`: every object and its place, counts per kind, or object `focus` alone."""
    words = WORDS[language]
    if kind == "objects":
        return _join([_phrase(t, 1, language, place=True) for t in things], words)
    if kind == "count":
        groups: list[list[Thing]] = []
        for thing in things:
            group = next((g for g in groups if g[0].same_kind(thing)), None)
            group.append(thing) if group else groups.append([thing])
        return _join([_phrase(g[0], len(g), language, details=False) for g in groups], words)
    return _phrase(things[focus], 1, language, place=True)


def referring_expression(thing: Thing, language: str) -> str:
    """The phrase that names one object of a scene (for LocCa's Ref and GCap tasks)."""
    return _phrase(thing, 1, language, place=True)


# Words per language. German and French adjectives agree with the noun's gender and number; the
# Chinese phrases use the measure word 个 throughout. Templated, not native prose: enough for a testbed.
WORDS = {
    "en": {"numbers": ["a", "two", "three"], "and": " and ",
           "shape": {"circle": "circle", "square": "square", "triangle": "triangle", "bar": "bar"},
           "colour": {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow"},
           "size": {"small": "small", "large": "large", "tall": "tall", "wide": "wide"},
           "texture": {"plain": "", "striped": "striped", "dotted": "dotted"},
           "place": {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                     "centre": "in the middle"}},
    "de": {"numbers": ["ein", "zwei", "drei"], "and": " und ",
           "shape": {"circle": ("Kreis", "Kreise", "m"), "square": ("Quadrat", "Quadrate", "n"),
                     "triangle": ("Dreieck", "Dreiecke", "n"), "bar": ("Balken", "Balken", "m")},
           "colour": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb"},
           "size": {"small": "klein", "large": "groß", "tall": "hoh", "wide": "breit"},
           "texture": {"plain": "", "striped": "gestreift", "dotted": "gepunktet"},
           "place": {"left": "links", "right": "rechts", "top": "oben", "bottom": "unten", "centre": "in der Mitte"}},
    "fr": {"numbers": ["un", "deux", "trois"], "and": " et ",
           "shape": {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
                     "bar": ("barre", "f")},
           "colour": {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
                      "yellow": ("jaune", "jaune")},
           "size": {"small": ("petit", "petite"), "large": ("grand", "grande"), "tall": ("verticale", "verticale"),
                    "wide": ("horizontale", "horizontale")},
           "texture": {"plain": ("", ""), "striped": ("rayé", "rayée"), "dotted": ("à pois", "à pois")},
           "place": {"left": "à gauche", "right": "à droite", "top": "en haut", "bottom": "en bas",
                     "centre": "au milieu"}},
    "zh": {"numbers": ["一", "两", "三"], "and": "和",
           "shape": {"circle": "圆形", "square": "正方形", "triangle": "三角形", "bar": "长条"},
           "colour": {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"},
           "size": {"small": "小", "large": "大", "tall": "竖", "wide": "横"},
           "texture": {"plain": "", "striped": "条纹", "dotted": "圆点"},
           "place": {"left": "左边", "right": "右边", "top": "上面", "bottom": "下面", "centre": "中间"}},
}


def _phrase(thing: Thing, count: int, language: str, place: bool = False, details: bool = True) -> str:
    """`count` objects like `thing`: with size/orientation and texture when `details`, its place when `place`."""
    w = WORDS[language]
    size = w["size"][thing.size] if details else ""
    texture = w["texture"][thing.texture] if details else ""
    where = w["place"][thing.place] if place else ""
    if language == "en":
        words = [w["numbers"][count - 1], size, texture, w["colour"][thing.colour],
                 w["shape"][thing.shape] + ("s" if count > 1 else ""), where]
    elif language == "de":
        singular, plural, gender = w["shape"][thing.shape]
        ending = "e" if count > 1 else "er" if gender == "m" else "es"
        article = w["numbers"][count - 1]
        adjectives = [a + ending for a in (size, texture, w["colour"][thing.colour]) if a]
        words = [article, *adjectives, plural if count > 1 else singular, where]
    elif language == "fr":
        noun, gender = w["shape"][thing.shape]
        female, plural = gender == "f", "s" if count > 1 else ""
        article = "une" if count == 1 and female else w["numbers"][count - 1]
        size_word = w["size"][thing.size][female] if details else ""
        before = size_word if thing.shape != "bar" else ""   # petit/grand go before the noun
        after = size_word if thing.shape == "bar" else ""    # verticale/horizontale after it
        colour = w["colour"][thing.colour][female]
        texture_word = w["texture"][thing.texture][female] if details else ""
        words = [article, _plural_fr(before, count), noun + plural, _plural_fr(colour, count),
                 _plural_fr(texture_word, count), _plural_fr(after, count), where]
    else:
        words = [where + w["numbers"][count - 1] + "个" + size + w["colour"][thing.colour] + texture
                 + w["shape"][thing.shape]]
    return " ".join(word for word in words if word)


def _plural_fr(word: str, count: int) -> str:
    return word + "s" if count > 1 and word and not word.endswith(("s", "pois")) else word


def _join(phrases: list[str], words: dict) -> str:
    separator = "，" if words is WORDS["zh"] else ", "
    return phrases[0] if len(phrases) == 1 else separator.join(phrases[:-1]) + words["and"] + phrases[-1]


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return (a[0] + a[2] + gap <= b[0] or b[0] + b[2] + gap <= a[0]
            or a[1] + a[3] + gap <= b[1] or b[1] + b[3] + gap <= a[1])


def _draw(image: Image.Image, mask: Image.Image, thing: Thing) -> None:
    """Paint the object's texture through its shape onto the image, and its class onto the mask."""
    x, y, w, h = thing.box
    shape = Image.new("L", image.size, 0)
    pen = ImageDraw.Draw(shape)
    if thing.shape == "circle":
        pen.ellipse((x, y, x + w - 1, y + h - 1), fill=255)
    elif thing.shape == "triangle":
        pen.polygon([(x + w / 2, y), (x + w - 1, y + h - 1), (x, y + h - 1)], fill=255)
    else:
        pen.rectangle((x, y, x + w - 1, y + h - 1), fill=255)
    colour = COLOURS[thing.colour]
    fill = Image.new("RGB", image.size, colour)
    if thing.texture != "plain":
        dark = tuple(c // 2 for c in colour)
        brush = ImageDraw.Draw(fill)
        for step in range(0, max(image.size), 6):
            if thing.texture == "striped":
                brush.line((x, y + step, x + w, y + step), fill=dark, width=2)
            else:
                for dot_x in range(x + 2, x + w, 6):
                    brush.ellipse((dot_x, y + step + 2, dot_x + 2, y + step + 4), fill=dark)
    image.paste(fill, (0, 0), shape)
    mask.paste(SHAPES.index(thing.shape) + 1, (0, 0), shape)


def _add_instances(instances: dict, key: str, size: tuple[int, int], things: list[Thing]) -> None:
    """COCO-style records; an object gets referring expressions only if its phrase is unique in the scene."""
    image_id = len(instances["images"]) + 1
    instances["images"].append({"id": image_id, "file_name": f"{key}.jpg", "width": size[0], "height": size[1]})
    phrases = [referring_expression(t, "en") for t in things]
    for thing, phrase in zip(things, phrases, strict=True):
        annotation = {"id": len(instances["annotations"]) + 1, "image_id": image_id,
                      "category_id": SHAPES.index(thing.shape) + 1, "bbox": list(thing.box),
                      "area": thing.box[2] * thing.box[3]}
        if phrases.count(phrase) == 1:
            annotation["refs"] = {lang: referring_expression(thing, lang) for lang in LANGUAGES}
        instances["annotations"].append(annotation)


def _write_captions(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
