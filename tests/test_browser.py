"""The app in a real browser (Debian's chromium driven by playwright): what a person sees and clicks."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from embedding import load_encoder
from indexer import Library, index_folders
from tests.conftest import REPO, serving

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("SIGSEARCH_ARTIFACTS", REPO / "test-artifacts"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app_url(tiny_run, photo_folder, tmp_path_factory):
    """The app on photos where a user keeps them: below the home folder, not /tmp or the working folder (Gradio
    serves files from those two by itself, which once hid a photo view that failed everywhere else), and
    gathered there as links to another disk's files (a folder of links once indexed to nothing)."""
    home = Path.home() / f".sigsearch-test-{os.getpid()}"
    shutil.copytree(photo_folder, home / "other-disk")
    (home / "Pictures" / "gathered").mkdir(parents=True)
    for file in (home / "other-disk").iterdir():
        os.symlink(file, home / "Pictures" / "gathered" / file.name)
    library = Library(home / "library")
    index_folders(library, load_encoder(str(tiny_run)), [home / "Pictures"], progress=False)
    library.close()
    env = {"GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("browser") / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    try:
        with serving("--library", str(home / "library"), env=env) as url:
            yield url
    finally:
        shutil.rmtree(home)


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    yield page
    page.close()


def search(page, url: str, query: str) -> list[str]:
    """Type a query, press Enter, wait for the gallery; returns the captions shown, in order."""
    page.goto(url)
    page.locator("#result-note").get_by_text("The newest").wait_for(timeout=30_000)  # the library, before a search
    box = page.locator("#query textarea")
    box.fill(query)
    box.press("Enter")
    page.wait_for_function("() => !document.querySelector('#result-note').innerText.startsWith('The newest')",
                           timeout=30_000)
    page.locator("#results img").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    return page.locator("#results .caption-label").all_inner_texts()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_german_query_shows_photos_that_really_load(page, app_url, photo_folder):
    captions = search(page, app_url, "Zwei Hunde spielen im Schnee")
    assert len(captions) == 24 and all("%" in c and ".jpg" in c for c in captions)
    images = page.locator("#results img")
    for i in range(images.count()):  # galleries load lazily: bring each into view, then check it decoded
        images.nth(i).scroll_into_view_if_needed()
        images.nth(i).evaluate("img => img.decode()")
        assert images.nth(i).evaluate("img => img.naturalWidth") > 0
    assert "/thumbnails/" in images.first.get_attribute("src")  # previews, not multi-megabyte originals
    shot(page, "german-query")


def test_the_photo_view_opens_over_the_results_steps_by_key_and_searches_on(page, app_url):
    """The view once sat below all results (the bottom of a 2,400 px page) while Gradio's own preview opened
    too; now it covers the window, one photo at a time, as photo apps do."""
    before = search(page, app_url, "Ein Hund rennt")
    page.locator("#results img").nth(3).click()
    full = page.locator("#full-size img")  # the selection, large, with its path
    full.wait_for(timeout=30_000)
    full.evaluate("img => img.decode()")
    assert full.evaluate("img => img.naturalWidth") > 0 and "/views/" in full.get_attribute("src")  # the app's copy
    details = page.locator("#selected-path")
    assert before[3].split(" · ")[1] in details.inner_text()
    assert page.locator("#photo-view").bounding_box() == {"x": 0, "y": 0, "width": 1280, "height": 900}
    assert full.bounding_box()["height"] >= 0.6 * 900 and page.locator("#results .preview").count() == 0
    shot(page, "photo-view-over-results")
    for key, shown in (("ArrowRight", 4), ("ArrowRight", 5), ("ArrowLeft", 4)):  # the keys step through the results
        page.keyboard.press(key)
        details.get_by_text(before[shown].split(" · ")[1]).wait_for(timeout=30_000)
    page.keyboard.press("Escape")
    page.locator("#photo-view").wait_for(state="hidden", timeout=30_000)
    page.locator("#results img").nth(3).click()
    page.locator("#more-like").click()  # from the view: more like the photo it shows
    page.wait_for_function("first => document.querySelector('#results .caption-label')?.innerText !== first",
                           arg=before[0], timeout=30_000)
    after = page.locator("#results .caption-label").all_inner_texts()
    assert after != before and all(c.split(" · ")[0].endswith("% alike") for c in after)
    assert page.locator("#photo-view").is_hidden()  # the view closed on the new results
    shot(page, "more-like-this")


def test_a_negative_term_changes_the_results(page, app_url):
    plain = search(page, app_url, "Hund")
    without = search(page, app_url, "Hund, -Gras, -ein Mann")
    assert plain != without
    shot(page, "negative-term")


def test_an_uploaded_image_gets_tags(page, app_url, photo_folder):
    page.goto(app_url)
    page.get_by_role("tab", name="Tags").click()
    page.locator("#tag-image input[type=file]").set_input_files(str(sorted(photo_folder.iterdir())[0]))
    page.locator("#tag-labels textarea").fill("Hund, snow, 猫")
    page.locator("#tag-button").click()
    page.locator("#tags").get_by_text("猫").first.wait_for(timeout=30_000)
    text = page.locator("#tags").inner_text()
    assert "Hund" in text and "snow" in text and "%" in text
    shot(page, "tags")


def dog_photo(flickr: Path) -> Path:
    """The first test photo (never seen in training or in fitting words) all of whose English captions say dog."""
    for line in (flickr / "captions_test.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if all(re.search(r"\bdogs?\b", c.lower()) for c in record["en"]["caption"]):
            return flickr / "images" / f"{record['image/key']}.jpg"
    raise AssertionError("no dog photo in the test captions")


@pytest.fixture(scope="module")
def bundled_url(flickr, tmp_path_factory, bundled):
    """The app on the bundled model (as `python -m app` runs it), over a library of one photo of a dog."""
    folder = tmp_path_factory.mktemp("bundled")
    (folder / "photos").mkdir()
    shutil.copy(dog_photo(flickr), folder / "photos")
    library = Library(folder / "library")
    index_folders(library, bundled, [folder / "photos"], progress=False)
    library.close()
    env = {"GRADIO_TEMP_DIR": str(folder / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with serving("--library", str(folder / "library"), env=env) as url:
        yield url


def test_the_bundled_model_tags_a_dog_photo_dog_hund_and_perro(page, bundled_url, flickr):
    """#21: one-word tags clear the default threshold on a photo that plainly holds them, in two caption
    languages and in Spanish, which no caption is in (it borrows the learned words nearest it)."""
    page.goto(bundled_url)
    page.get_by_role("tab", name="Tags").click()
    page.locator("#tag-image input[type=file]").set_input_files(str(dog_photo(flickr)))
    page.locator("#tag-labels textarea").fill("dog, Hund, perro, bicycle")
    page.locator("#tag-button").click()
    page.locator("#tags").get_by_text("bicycle").first.wait_for(timeout=60_000)
    shown = dict(re.findall(r"(dog|Hund|perro|bicycle)\s+(\d+(?:\.\d+)?)%", page.locator("#tags").inner_text()))
    assert set(shown) == {"dog", "Hund", "perro", "bicycle"}, page.locator("#tags").inner_text()
    assert min(float(shown[label]) for label in ("dog", "Hund", "perro")) > 50  # DEFAULT_THRESHOLD, in percent
    assert float(shown["bicycle"]) < 50
    page.locator("#tags-read").get_by_text("perro → pes").wait_for(timeout=30_000)  # how each label was read
    shot(page, "tags-dog")


def test_a_path_outside_the_library_is_forbidden(page, app_url):
    response = page.request.get(f"{app_url}gradio_api/file=/etc/passwd")
    assert response.status == 403


def test_the_page_counts_photos_and_says_why_a_search_is_empty(page, app_url, photo_folder):
    page.goto(app_url)
    count = len(list(photo_folder.iterdir()))
    page.locator("#header").get_by_text(f"Search {count} photos").wait_for(timeout=30_000)
    search(page, app_url, "ein Hund")
    assert page.locator("#result-note").inner_text().strip() == "The best 24 photos (raise “Results” for more)."
    page.locator("#filters").get_by_text("Filters").click()
    folder = page.locator("#filters").get_by_label("Only below folder")
    folder.fill("/nowhere")
    folder.press("Enter")  # a changed filter searches again
    page.locator("#result-note").get_by_text("No photos below the folder /nowhere").wait_for(timeout=30_000)
    assert page.locator("#results img").count() == 0
    shot(page, "empty-reason")


def test_a_bad_upload_says_what_is_wrong_and_a_good_ones_results_open(page, app_url, photo_folder, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("a text file with an image's name")
    page.goto(app_url)
    page.get_by_role("tab", name="By image").click()
    page.locator("#search-upload input[type=file]").set_input_files(str(fake))
    note = page.locator("#image-result-note")
    note.get_by_text("that upload cannot be used: not an image").wait_for(timeout=30_000)
    assert page.locator("#image-results img").count() == 0
    shot(page, "bad-upload")
    page.locator("#search-upload input[type=file]").set_input_files(str(sorted(photo_folder.iterdir())[0]))
    page.locator("#image-results img").first.wait_for(timeout=30_000)  # a good one: results, each opens
    assert page.locator("#image-results .caption-label").first.inner_text().startswith("100% alike")
    page.locator("#image-results img").first.click()
    page.locator("#image-selected-path").get_by_text("folder").wait_for(timeout=30_000)
    first = page.locator("#image-results .caption-label").first.inner_text()
    page.locator("#image-more-like").click()  # "more like" the selected result, in the same units
    page.wait_for_function("first => document.querySelector('#image-results .caption-label')?.innerText !== first",
                           arg=first, timeout=30_000)
    assert all(c.split(" · ")[0].endswith("% alike")
               for c in page.locator("#image-results .caption-label").all_inner_texts())
    page.locator("#image-filters").get_by_text("Filters").click()  # the filters apply to image queries too
    folder = page.locator("#image-filters").get_by_label("Only below folder")
    folder.fill("/nowhere")
    folder.press("Enter")
    page.locator("#image-result-note").get_by_text("No photos below the folder /nowhere").wait_for(timeout=30_000)
    assert page.locator("#image-results img").count() == 0


@pytest.fixture(scope="module")
def managed_url(tiny_run, photo_folder, flickr, tmp_path_factory):
    """The app with indexing from the page allowed below a folder that holds 1,000 more photos."""
    folder = tmp_path_factory.mktemp("managed")
    more = folder / "allowed" / "more"
    more.mkdir(parents=True)
    for path in sorted((flickr / "images").glob("*.jpg"))[:1000]:
        shutil.copy(path, more)
    exif = Image.Exif()  # one photo that says when, with what and where it was taken
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 12:30:00"
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "W", 4: (13.0, 24.0, 36.0)})
    (folder / "trip").mkdir()
    Image.open(sorted(photo_folder.iterdir())[0]).save(folder / "trip" / "holiday.jpg", exif=exif)
    library = Library(folder / "library")
    index_folders(library, load_encoder(str(tiny_run)), [photo_folder, folder / "trip"], progress=False)
    library.close()
    env = {"GRADIO_TEMP_DIR": str(folder / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with serving("--library", str(folder / "library"), "--allow-index", str(folder / "allowed"), "--watch",
                 env=env) as url:
        yield url, more, folder / "trip"


def test_the_library_tab_indexes_with_moving_progress_and_removes_a_folder(page, managed_url, photo_folder):
    url, more, _ = managed_url
    before = len(list(photo_folder.iterdir())) + 1  # and the holiday photo
    page.goto(url)
    page.locator("#header").get_by_text(f"Search {before} photos").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Library").click()
    page.locator("#index-folder textarea").fill(str(more))
    page.locator("#index-button").click()
    seen, counts = [], set()  # what the progress overlay and the header say while 1,000 photos index
    while "indexed" not in page.locator("#index-log textarea").input_value():
        text = page.locator("#index-log").inner_text()
        if text not in seen:
            seen.append(text)
        counts.add(int(re.search(r"Search ([\d,]+) photos", page.locator("#header").inner_text())[1].replace(",", "")))
        page.wait_for_timeout(100)
    progress = [text for text in seen if "indexing" in text]
    assert len(set(progress)) >= 5, seen
    assert any(before < count < before + 1000 for count in counts), counts  # the count rises as the run commits
    assert page.locator(".progress-text, .eta-bar").count() <= 1  # one overlay, not one per output
    after = before + 1000
    page.locator("#library-status").get_by_text(f"{after:,} photos").wait_for(timeout=10_000)
    page.locator("#header").get_by_text(f"Search {after:,} photos").wait_for(timeout=15_000)  # the header follows
    choice = page.locator("#library-folders input")
    choice.click()
    choice.fill(str(more))  # the one folder with this name, chosen from the list
    page.locator("#library-folders ul li").filter(has_text=str(more)).first.click()
    page.locator("#remove-button").click()
    page.locator("#confirm-remove").get_by_text("Remove 1,000 photos below").wait_for(timeout=30_000)  # asks first
    page.wait_for_timeout(1000)
    assert f"Search {after:,} photos" in page.locator("#header").inner_text()  # nothing removed by asking
    page.locator("#confirm-remove-button").click()
    page.wait_for_function("() => document.querySelector('#index-log textarea').value.startsWith('removed 1,000')",
                           timeout=30_000)
    page.locator("#header").get_by_text(f"Search {before} photos").wait_for(timeout=15_000)
    shot(page, "library-tab")


def test_the_page_opens_on_the_library_and_a_photo_shows_when_where_and_with_what(page, managed_url, photo_folder):
    url, _, _ = managed_url
    page.goto(url)
    note = page.locator("#result-note")
    note.get_by_text("The newest 24 photos").wait_for(timeout=30_000)  # photos before any search, by day
    view = page.locator("#library-view")
    view.locator(".day img").nth(23).wait_for(timeout=30_000)
    assert view.locator(".day img").count() == 24 and page.locator("#results").is_hidden()
    # A day each, counted whole ("Tuesday 01 December 2026 · 24 of 40 photos shown"): once "24 photos" for a day
    # of 1,000, the photos loaded so far.
    headings = [h.strip() for h in view.locator(".day-heading h4").all_inner_texts()]
    days = [re.fullmatch(r"\w+ \d\d \w+ \d{4} · (?:(\d+) of )?([\d,]+) photos?(?: shown)?", h) for h in headings]
    assert all(days), headings
    assert sum(int(day[1] or day[2]) for day in days) == 24 and days[-1][1] == "24"
    assert int(days[-1][2]) == len(list(photo_folder.iterdir()))  # all copied today, each day counted whole
    page.mouse.wheel(0, 3000)  # scrolling down to "Show more" loads the next page
    note.get_by_text("The newest 48 photos").wait_for(timeout=30_000)
    view.locator(".day img").nth(47).wait_for(timeout=30_000)
    count = page.locator("#result-count input[type=number]")  # a number typed in a slider applies on Enter
    count.fill("30")
    count.press("Enter")
    note.get_by_text("The newest 30 photos").wait_for(timeout=30_000)
    page.locator("#filters").get_by_text("Filters").click()
    since = page.locator("#filters").get_by_label("Taken from (YYYY-MM-DD)")
    since.fill("2021-01-01")
    since.press("Enter")  # without a query, the filters narrow the library view: only the dated photo
    note.get_by_text("The newest 1 photo passing the filters").wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#library-view .day img').length === 1", timeout=30_000)
    assert view.locator(".caption-label").all_inner_texts() == ["12:30 · holiday.jpg"]
    assert [h.strip() for h in view.locator(".day-heading h4").all_inner_texts()] == ["Sunday 04 July 2021 · 1 photo"]
    assert page.locator("#show-more").is_hidden()  # all shown: nothing more to ask for
    assert view.locator(".day img").bounding_box()["width"] < 1280 / 4  # a lone photo keeps a tile's size
    view.locator(".day img").first.click()
    details = page.locator("#selected-path")
    details.get_by_text("taken 2021-07-04 12:30").wait_for(timeout=30_000)
    text = details.inner_text()
    assert "Canon EOS 5D" in text and "place 52.52000, -13.41000" in text and "holiday.jpg" in text
    assert "/trip" in text  # the folder it lies in
    shot(page, "photo-view")


def test_a_phone_sees_every_tab_a_full_width_search_box_and_the_photo_view(browser, app_url):
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone.goto(app_url)
        phone.locator("#result-note").get_by_text("The newest").wait_for(timeout=30_000)
        for name in ("Search", "By image", "Tags", "Library"):  # none hidden under "More"
            assert phone.get_by_role("tab", name=name).is_visible(), name
        box = phone.locator("#query textarea").bounding_box()
        slider = phone.locator("#result-count").bounding_box()
        assert box["width"] >= 0.75 * 390 and slider["y"] > box["y"] + box["height"]  # the sliders go below
        phone.locator("#library-view .day img").first.click()
        phone.locator("#selected-path").get_by_text("folder").wait_for(timeout=30_000)
        view = phone.locator("#full-size").bounding_box()
        assert view["x"] >= 0 and view["x"] + view["width"] <= 390 + 1  # the photo view fits the screen
        shot(phone, "phone")
    finally:
        phone.close()



def test_a_photo_copied_into_a_watched_folder_shows_up_without_a_restart(page, managed_url, photo_folder):
    url, _, trip = managed_url  # the app runs with --watch; the holiday photo's folder is one of the library's
    shutil.copy(sorted(photo_folder.iterdir())[1], trip / "just-copied.jpg")
    for _ in range(30):  # the library view shows the newest photo first: the one just copied, once indexed
        page.goto(url)
        first = page.locator("#library-view .caption-label").first
        first.wait_for(timeout=30_000)
        if first.inner_text().endswith("just-copied.jpg"):
            break
        page.wait_for_timeout(1000)
    assert first.inner_text().endswith("just-copied.jpg")
    shot(page, "watched")
