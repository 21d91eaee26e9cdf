() => {
  // What Gradio's components do not do themselves: the photo view's keys, a slider's number applied on Enter,
  // and the next page of photos loaded as the page scrolls to "Show more".
  const shown = (element) => element && element.getClientRects().length > 0;  // offsetParent: null when fixed
  const KEYS = {ArrowLeft: ".previous-photo", ArrowRight: ".next-photo", Escape: ".close-photo"};
  document.addEventListener("keydown", (event) => {
    const view = [...document.querySelectorAll(".photo-view")].find(shown);
    if (view && KEYS[event.key] && !event.target.matches("input, textarea")) {
      event.preventDefault();
      view.querySelector(KEYS[event.key]).click();
    } else if (event.key === "Enter" && event.target.matches("input[type=number]")) {
      event.target.blur();  // a slider's box applies its number when it loses focus
    }
  });
  let asked = 0;  // when "Show more" was last clicked: one page at a time while the last one loads
  document.addEventListener("scroll", () => {
    const more = document.querySelector("#show-more");
    if (shown(more) && more.getBoundingClientRect().top < window.innerHeight + 300 && Date.now() - asked > 2000) {
      asked = Date.now();
      more.click();
    }
  }, {passive: true, capture: true});  // capture: a scroll of any element, not only the document
}
