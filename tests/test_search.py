"""Queries: the combined-query syntax, negative terms, image queries, "more like this", tagging."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.search import (
    MAX_RESULTS,
    MAX_TERMS,
    Term,
    combined_probability,
    make_filters,
    more_like_this,
    parse_query,
    percent,
    query_vector,
    search_image,
    search_text,
    tag_image,
)
from embedding import load_encoder
from embedding.words import read_labels
from indexer import Library, index_folders
from indexer.tags import tag_library


def test_parse_query():
    assert parse_query("beach, -people, 2:sunset") == [Term("beach", 1.0), Term("people", -1.0), Term("sunset", 2.0)]
    assert parse_query("  ein Hund im Schnee ") == [Term("ein Hund im Schnee", 1.0)]
    assert parse_query("-0.5: crowds, 1.5:雪") == [Term("crowds", -0.5), Term("雪", 1.5)]
    assert parse_query("dog, 0:cat") == [Term("dog", 1.0)]  # weight 0 drops a term
    assert parse_query(" , ") == []
    with pytest.raises(ValueError, match="positive term"):
        parse_query("-people, -cars")
    with pytest.raises(ValueError, match="empty term"):
        parse_query("dog, -")
    for absurd in ("9" * 400 + ":cat", "dog, 100000:cat", "dog, -101:cat"):  # once: [] without a word
        with pytest.raises(ValueError, match="a weight is a number from -100 to 100"):
            parse_query(absurd)
    assert len(parse_query(", ".join(["dog"] * MAX_TERMS))) == MAX_TERMS
    with pytest.raises(ValueError, match=f"at most {MAX_TERMS} terms .*, this one {MAX_TERMS + 1}"):
        parse_query(",".join(["a"] * (MAX_TERMS + 1)))
    with pytest.raises(ValueError, match="at most"):
        parse_query(",".join(["a"] * 10_000))  # once 97.7 s, holding up every other query meanwhile
    with pytest.raises(ValueError, match="at most 2,000 characters"):
        parse_query("a dog " * 400)


def test_result_counts_out_of_range_are_refused_in_words(searchable, photo_folder):
    library, encoder = searchable
    photo = str(sorted(photo_folder.iterdir())[0])
    for k in (-1, 0, MAX_RESULTS + 1, 10**9):  # once: a bare AssertionError, or 7.45 GiB allocated
        with pytest.raises(ValueError, match=f"number of results is 1 to {MAX_RESULTS:,}"):
            search_text(library, encoder, "dog", k)
        with pytest.raises(ValueError, match="number of results"):
            more_like_this(library, photo, k)
    assert len(search_text(library, encoder, "dog", MAX_RESULTS)) == 48  # the whole (small) library


@pytest.fixture(scope="module")
def searchable(tiny_run, photo_folder, tmp_path_factory):
    encoder = load_encoder(str(tiny_run))
    library = Library(tmp_path_factory.mktemp("library"))
    index_folders(library, encoder, [photo_folder], progress=False)
    return library, encoder


def test_negative_terms_push_results_away(searchable):
    library, encoder = searchable
    def vector(query: str) -> np.ndarray:
        terms = parse_query(query)
        return query_vector(read_labels(encoder, [term.text for term in terms]), terms)

    plain, minus = vector("a dog runs"), vector("a dog runs, -a man on a bicycle")
    man = encoder.embed_texts(["a man on a bicycle"])[0]
    assert float(minus @ man) < float(plain @ man)  # the query moved away from the excluded term
    assert np.linalg.norm(minus) == pytest.approx(1.0, abs=1e-5)
    assert [r.path for r in search_text(library, encoder, "a dog runs", 48)] != [
        r.path for r in search_text(library, encoder, "a dog runs, -a man on a bicycle", 48)]


def test_a_combined_query_scores_each_term_by_its_own_calibration():
    each = np.array([[0.9, 0.05], [0.9, 0.9], [0.2, 0.0], [0.0, 1.0]])
    got = combined_probability(each, np.array([1.0, -1.0]))  # beach, -people
    assert got == pytest.approx([0.9 * 0.95, 0.9 * 0.1, 0.2, 0.0])  # P(beach) x P(no people); 0 and 1: no NaN
    assert combined_probability(each[:, :1], np.array([1.0])) == pytest.approx(each[:, 0])  # one term: its own
    assert combined_probability(each, np.array([2.0, 1.0])) == pytest.approx([0.81 * 0.05, 0.81 * 0.9, 0, 0])


def test_shown_percentages_tell_sure_matches_apart_and_never_say_certain():
    """"dog" once showed 57 of Flickr8k's 1,000 test photos at 100% (all of them dogs: not a wrong probability,
    but a wall a person cannot rank by)."""
    sure = [1 - 2e-2, 1 - 3e-3, 1 - 4e-4, 1 - 5e-5, 1 - 1e-9, 1.0]
    assert [percent(p) for p in sure] == ["98%", "99.7%", "99.96%", "99.995%", "99.999%", "99.999%"]
    assert [percent(p) for p in (0.5, 0.626, 0.01, 0.004, 3e-5, 0.0)] == ["50%", "62%", "1%", "0.4%", "0.003%",
                                                                           "0.001%"]


def test_an_excluded_terms_photos_go_down_the_list_and_the_shown_probability_is_the_terms(searchable):
    """`beach, -people` once put 6 photos with people in its top 8, each shown at 0% (the sum of the terms'
    vectors, read by the model's calibration for sentences)."""
    library, encoder = searchable
    query = "a dog runs, -a man on a bicycle"
    labels = read_labels(encoder, ["a dog runs", "a man on a bicycle"])
    results = search_text(library, encoder, query, 48)
    each = labels.probability(library.vectors_of([r.id for r in results]) @ labels.vectors.T)
    expected = each[:, 0] * (1 - each[:, 1])
    assert [r.probability for r in results] == pytest.approx(expected.tolist(), rel=1e-4)
    assert [r.probability for r in results] == sorted((r.probability for r in results), reverse=True)


def test_weak_matches_are_hidden_by_threshold(searchable):
    library, encoder = searchable
    everything = search_text(library, encoder, "a dog", 48)
    cut = sorted(r.probability for r in everything)[24]
    strong = search_text(library, encoder, "a dog", 48, min_probability=cut)
    assert 0 < len(strong) < 48 and all(r.probability >= cut for r in strong)


def test_image_queries_and_more_like_this(searchable, photo_folder):
    library, encoder = searchable
    first = sorted(photo_folder.iterdir())[0]
    by_image = search_image(library, encoder, Image.open(first), k=5)
    assert by_image[0].path == str(first) and by_image[0].score == pytest.approx(1.0, abs=1e-3)
    similar = more_like_this(library, str(first), k=5)
    assert len(similar) == 5 and str(first) not in [r.path for r in similar]
    assert [r.path for r in similar] == [r.path for r in by_image[1:5]] + [similar[-1].path]
    with pytest.raises(ValueError, match="not in the library"):
        more_like_this(library, "/nowhere.jpg")


def test_tags_are_independent_probabilities(searchable, photo_folder):
    _, encoder = searchable
    image = Image.open(sorted(photo_folder.iterdir())[0])
    tags = tag_image(encoder, image, ["dog", " snow ", "", "Katze"])
    assert list(tags) == ["dog", "snow", "Katze"] and all(0 < p < 1 for p in tags.values())
    alone = tag_image(encoder, image, ["dog"])
    assert alone["dog"] == pytest.approx(tags["dog"], rel=1e-5)  # no softmax: other labels change nothing


def test_the_tag_panel_and_library_tags_read_labels_the_same_way(searchable, photo_folder, tmp_path):
    """Both go through embedding.words.read_labels: one photo, one label, one probability everywhere."""
    _, encoder = searchable
    path = sorted(photo_folder.iterdir())[0]
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [path], progress=False)
    tag_library(library, encoder, {"Hund": 0.0, "雪": 0.0})
    stored = library.image_tags(str(path))
    panel = tag_image(encoder, Image.open(path), ["Hund", "雪"])
    labels = read_labels(encoder, ["Hund", "雪"])
    direct = labels.probability(labels.vectors @ encoder.embed_images([path])[0])
    from_record = labels.probability(labels.vectors @ library.vector(str(path)))  # the library's float16 copy
    for j, label in enumerate(["Hund", "雪"]):
        assert stored[label] == pytest.approx(float(from_record[j]), abs=1e-6)
        assert stored[label] == pytest.approx(float(direct[j]), abs=1e-3)
        assert panel[label] == pytest.approx(float(direct[j]), abs=1e-5)


def test_make_filters_reads_form_values():
    assert not make_filters().active() and not make_filters(None, None, None, None, None).active()
    f = make_filters(" /photos ", "2024-01-01", "2024-12-31", "yes", "Hund")
    assert (f.folder, str(f.taken_from), str(f.taken_to), f.has_gps, f.tag) == (
        "/photos", "2024-01-01", "2024-12-31", True, "Hund")
    assert make_filters(gps="no").has_gps is False
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        make_filters(taken_from="1.1.2024")
    with pytest.raises(ValueError, match="any, yes or no"):
        make_filters(gps="maybe")


def test_filters_restrict_the_vector_search_itself(tmp_path, checkpoint):
    """k results come back from the allowed photos even when better matches are filtered out."""
    encoder = load_encoder(str(checkpoint[0]))
    rng = np.random.default_rng(0)
    for folder, count in (("2023", 6), ("2024", 6)):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        for i in range(count):
            image = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
            exif = Image.Exif()
            exif.get_ifd(0x8769)[0x9003] = f"{folder}:0{i + 1}:15 10:00:00"
            if i % 2:
                exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 8.0, 0.0), 3: "E", 4: (11.0, 34.0, 0.0)})
            image.save(tmp_path / "photos" / folder / f"{i}.jpg", exif=exif)
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [tmp_path / "photos"], progress=False)

    def paths(filters, k=12):
        return [r.path for r in search_text(library, encoder, "dog", k, filters=filters)]

    assert len(paths(None)) == 12
    in_2024 = paths(make_filters(folder=str(tmp_path / "photos" / "2024")), k=5)
    assert len(in_2024) == 5 and all("/2024/" in p for p in in_2024)
    spring = paths(make_filters(taken_from="2023-02-01", taken_to="2023-04-15"))
    assert sorted(p.rsplit("/", 2)[-2:][1] for p in spring) == ["1.jpg", "2.jpg", "3.jpg"]
    with_gps = paths(make_filters(gps="yes"))
    assert len(with_gps) == 6 and all(int(p[-5]) % 2 for p in with_gps)
    assert paths(make_filters(folder=str(tmp_path / "nowhere"))) == []

    tag_library(library, encoder, {"Hund": 0.0, "cat": 1.0})  # thresholds: everything, nothing
    assert len(paths(make_filters(tag="Hund"))) == 12 and paths(make_filters(tag="cat")) == []
    assert set(library.image_tags(with_gps[0])) == {"Hund"}


def test_thumbnails_are_small_cached_and_never_the_original(tmp_path):
    from app.thumbnails import SIDE, UNREADABLE, thumbnail

    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(big)
    made = thumbnail(tmp_path / "library", 7, str(big))
    assert made == str(tmp_path / "library" / "thumbnails" / "id7.jpg")
    with Image.open(made) as preview:
        assert max(preview.size) == SIDE and preview.size[0] > preview.size[1]  # aspect kept
    big.unlink()
    assert thumbnail(tmp_path / "library", 7, str(big)) == made  # cached: the original is not read again
    placeholder = str(tmp_path / "library" / "thumbnails" / UNREADABLE)
    assert thumbnail(tmp_path / "library", 8, str(big)) == placeholder  # unreadable: a placeholder, not its path


def test_copies_for_the_page_are_made_only_of_the_bytes_that_were_indexed(tmp_path):
    """A photo rewritten with other bytes, or replaced by a link to another file, since it was indexed shows as
    the placeholder: the page never serves what is now at an indexed path (/etc/passwd, another photo)."""
    from app.thumbnails import UNREADABLE, thumbnail, view_copy

    photo, other = tmp_path / "photo.jpg", tmp_path / "other.jpg"
    Image.new("RGB", (2000, 1000), "blue").save(photo)
    Image.new("RGB", (64, 48), "red").save(other)
    indexed = hashlib.blake2b(photo.read_bytes(), digest_size=16).hexdigest()  # as the indexer hashes it
    library = tmp_path / "library"
    large = view_copy(library, 1, str(photo), indexed)
    with Image.open(large) as copy:
        assert copy.size == (1600, 800) and Path(large).parent.name == "views"
    for replacement in ("text", other, Path("/etc/passwd")):
        photo.unlink()
        if isinstance(replacement, str):
            photo.write_text("not a photo any more")
        else:
            photo.symlink_to(replacement)
        assert Path(thumbnail(library, 1, str(photo), indexed)).name == UNREADABLE  # no preview made yet
        assert view_copy(library, 1, str(photo), indexed) == large  # made from the indexed bytes, then kept


def test_a_photo_edited_and_indexed_again_gets_its_own_thumbnail(tmp_path, checkpoint):
    """Once: the edited photo took the freed id of its old version, and the old picture's preview with it."""
    from app.thumbnails import thumbnail

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), "blue").save(photos / "a.png")
    Image.new("RGB", (64, 48), "red").save(photos / "b.png")  # indexed last: the highest id
    encoder = load_encoder(str(checkpoint[0]))
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)

    def preview_colour() -> tuple[int, float]:
        result = next(r for r in search_text(library, encoder, "x", 2) if r.path.endswith("b.png"))
        with Image.open(thumbnail(library.folder, result.id, result.path, result.hash)) as preview:
            return result.id, np.asarray(preview.convert("RGB"), dtype=float).mean(axis=(0, 1))

    old_id, red = preview_colour()
    Image.new("RGB", (64, 48), "green").save(photos / "b.png")
    index_folders(library, encoder, [photos], progress=False)
    new_id, green = preview_colour()
    assert new_id > old_id  # ids are never given twice
    assert red[0] > 200 > red[1] and green[1] > 100 > green[0]
