"""A demo library from the real photos inside scikit-image's wheel (available without network)."""

import shutil
from pathlib import Path

# scikit-image's file name -> the name the demo library shows.
DEMO_PHOTOS = {
    "astronaut.png": "astronaut.png", "chelsea.png": "chelsea-the-cat.png", "coffee.png": "coffee.png",
    "rocket.jpg": "rocket.jpg", "motorcycle_left.png": "motorcycle-left.png",
    "motorcycle_right.png": "motorcycle-right.png", "hubble_deep_field.jpg": "hubble-deep-field.jpg",
    "camera.png": "cameraman.png", "coins.png": "coins.png", "moon.png": "moon.png",
    "horse.png": "horse-silhouette.png", "retina.jpg": "retina.jpg", "brick.png": "brick-wall.png",
    "grass.png": "grass.png", "gravel.png": "gravel.png", "page.png": "printed-page.png",
    "text.png": "text.png", "ihc.png": "immunohistochemistry.png",
}


def copy_demo_photos(destination: Path) -> Path:
    """Copy scikit-image's sample photos into `destination`; returns it."""
    import skimage

    source = Path(skimage.__file__).parent / "data"
    destination.mkdir(parents=True, exist_ok=True)
    for name, shown_as in DEMO_PHOTOS.items():
        if (source / name).is_file() and not (destination / shown_as).exists():
            shutil.copyfile(source / name, destination / shown_as)
    return destination
