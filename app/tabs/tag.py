"""Tag an image: each label's own probability for an uploaded image; a caption when the model has a
LocCa decoder. Both are API endpoints too (/tag, /caption)."""

import gradio as gr

from app.page import Page, image_upload
from app.search import how_read, tag_image

TITLE = "Tags"


def build(page: Page, ui: gr.Blocks) -> None:
    def tag(image: str | None, labels: str) -> dict[str, float]:
        return page.checked(lambda: tag_image(page.encoder, page.upload(image), labels.split(",")))

    def reading(labels: str) -> str:
        return page.checked(lambda: how_read(page.encoder, labels.split(",")))

    def caption(image: str | None, language: str) -> str:
        from embedding.locca import caption_images  # torch, loaded with the model by then

        return page.checked(lambda: caption_images(page.encoder, page.decoder, [page.upload(image)], language)[0])

    with gr.Row():
        upload = image_upload(label="Image", elem_id="tag-image")
        with gr.Column():
            labels = gr.Textbox(label="Labels, comma-separated, any language", elem_id="tag-labels",
                                value="dog, cat, beach, snow, people, Fahrrad, 汽车")
            button = gr.Button("Tag", variant="primary", elem_id="tag-button")
            tags = gr.Label(label="Independent probability per label", num_top_classes=20, elem_id="tags")
            read = gr.Markdown(elem_id="tags-read")
    button.click(tag, [upload, labels], tags, api_name="tag").success(reading, [labels], read,
                                                                      api_visibility="private")
    if page.decoder is not None:
        languages = page.decoder.config.languages
        with gr.Row():
            language = gr.Dropdown(languages, value=languages[0], label="Caption language",
                                   elem_id="caption-language")
            caption_button = gr.Button("Caption", elem_id="caption-button")
            written = gr.Textbox(label="Caption (LocCa decoder)", interactive=False, elem_id="caption")
        caption_button.click(caption, [upload, language], written, api_name="caption")
