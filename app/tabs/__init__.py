"""The page's tabs, one module each: TITLE and build(page, ui), called inside the tab's gr.Tab."""
