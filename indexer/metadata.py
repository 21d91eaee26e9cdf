"""What a photo's header says, read without decoding its pixels: size, date taken, camera, GPS."""

from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

from common.images import DEFAULT_MAX_PIXELS, open_image


def read_metadata(file: Path | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """width and height (as displayed, after EXIF rotation), taken_at, camera, gps_lat, gps_lon."""
    with open_image(file, max_pixels) as image:
        width, height = image.size
        # Pillow decodes a whole PNG to look for EXIF stored after the pixels: read only what precedes them.
        exif = Image.Exif() if image.format == "PNG" and "exif" not in image.info else image.getexif()
    if exif.get(Base.Orientation) in (5, 6, 7, 8):  # stored rotated by 90 degrees
        width, height = height, width
    details = exif.get_ifd(IFD.Exif)
    camera = camera_name(*(str(exif.get(tag, "")).strip("\x00 ") for tag in (Base.Make, Base.Model)))
    latitude, longitude = _gps(exif.get_ifd(IFD.GPSInfo))
    return {"width": width, "height": height,
            "taken_at": _date(details.get(Base.DateTimeOriginal) or exif.get(Base.DateTime)),
            "camera": camera or None, "gps_lat": latitude, "gps_lon": longitude}


def _date(value) -> datetime | None:
    try:
        return datetime.strptime(str(value).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _gps(gps: dict) -> tuple[float | None, float | None]:
    """Decimal degrees from EXIF's (degrees, minutes, seconds) rationals and N/S, E/W references."""
    try:
        coordinates = []
        for value_tag, reference_tag, negative in ((GPS.GPSLatitude, GPS.GPSLatitudeRef, "S"),
                                                   (GPS.GPSLongitude, GPS.GPSLongitudeRef, "W")):
            degrees, minutes, seconds = (float(part) for part in gps[value_tag])
            sign = -1.0 if str(gps[reference_tag]).strip("\x00 ").upper() == negative else 1.0
            coordinates.append(sign * (degrees + minutes / 60 + seconds / 3600))
        return coordinates[0], coordinates[1]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None, None


def camera_name(make: str, model: str) -> str:
    """Make and model as one name, the make once: ("Canon", "Canon EOS 80D") -> "Canon EOS 80D"."""
    if make and model.casefold().startswith(make.casefold()):
        return model
    return f"{make} {model}".strip()
