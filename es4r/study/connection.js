// The study page keeps working through a server restart. Every 2 s it asks the server for
// the page; when that fails it says so, pauses answering (nothing can be saved), and when
// the server is back it reopens the page for the same annotator, who resumes at their
// first unsaved item (the server's ?resume=ID load handler; answers already saved stay).
if (!window.studyConnection) {
  window.studyConnection = true;
  const PING_MS = 2000;
  const banner = document.createElement("div");
  banner.id = "study-connection";
  banner.setAttribute("role", "alert");
  banner.hidden = true;
  banner.textContent = "Connection to the study server lost. Your saved answers are safe; " +
    "answering is paused until the server is back, then this page resumes where you were.";
  document.body.prepend(banner);
  document.addEventListener("click", (event) => {  // remember who pressed Start, for the resume
    if (event.target.closest && event.target.closest("#study-start")) {
      const box = document.querySelector("#study-annotator-id textarea, #study-annotator-id input");
      if (box && box.value.trim()) sessionStorage.setItem("study-annotator", box.value.trim());
    }
  }, true);
  let lost = false;
  const here = location.origin + location.pathname;
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
    } else if (alive && lost) {
      const who = sessionStorage.getItem("study-annotator");
      location.replace(who ? `${here}?resume=${encodeURIComponent(who)}` : here);
    }
  }, PING_MS);
}
