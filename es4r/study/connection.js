// The study page keeps working through a server restart. Its address always says where the
// annotator is (?resume=ID on an item, ?break=ID on a break, set from #study-place), so any
// reload — Gradio's own on reconnecting, this script's, the annotator's — lands there again.
// Every 2 s it asks the server for the page; when that fails it says so above everything,
// makes every control inert (nothing can be saved) and stops the clips; when the server is
// back it reloads, and the server's load handler reopens the same place.
if (!window.studyConnection) {
  window.studyConnection = true;
  const PING_MS = 2000;
  const here = location.origin + location.pathname;
  const banner = document.createElement("div");
  banner.id = "study-connection";
  banner.setAttribute("role", "alert");
  banner.hidden = true;
  banner.textContent = "Connection to the study server lost. Your saved answers are safe; " +
    "answering is paused until the server is back, then this page resumes where you were.";
  document.body.prepend(banner);
  const keepPlaceInAddress = () => {
    const place = document.querySelector("#study-place [data-place]");
    if (!place) return;  // the page has not heard from the server yet
    const who = place.dataset.annotator;
    const search = place.dataset.place && who ? `?${place.dataset.place}=${encodeURIComponent(who)}` : "";
    if (location.search !== search) history.replaceState(null, "", here + search);
  };
  new MutationObserver(keepPlaceInAddress).observe(document.body, { childList: true, subtree: true, attributes: true });
  let lost = false;
  setInterval(async () => {
    let alive = false;
    try {
      await fetch(here, { cache: "no-store" });
      alive = true;
    } catch (error) { alive = false; }
    if (!alive && !lost) {
      lost = true;
      banner.hidden = false;
      document.body.classList.add("study-offline");
      for (const app of document.querySelectorAll("gradio-app, .gradio-container")) app.inert = true;
      for (const media of document.querySelectorAll("audio")) media.pause();
    } else if (alive && lost) {
      location.reload();
    }
  }, PING_MS);
}
