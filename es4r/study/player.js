// The study page's players and keys. One clip plays at a time. Every stretch a reply's player
// really plays is reported to the server, which opens the questions once the stretches, joined,
// cover the clip (the study's listening module): a stretch opens when the player starts and closes
// when it pauses, ends or jumps. The reports carry the page's whole log for that clip, so one
// that is lost or overtaken is made good by the next (the server keeps each event once).
if (!window.studyPlayers) {
  window.studyPlayers = true;
  window.studyMedia = new Set();
  const page = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  const logs = new Map();  // clip token -> events reported for it from this page
  let seq = 0;
  const seconds = (value) => Math.round(value * 1000) / 1000;
  const report = (media, event, from, to = null) => {
    const clip = media.dataset.clip;
    if (!clip || !media.dataset.side) return;  // context clips are not gated
    const log = logs.get(clip) || [];
    logs.set(clip, log);
    log.push({ seq: ++seq, event, from: seconds(from), to: to === null ? null : seconds(to),
               at: seconds(performance.now() / 1000) });  // the page's clock: reports may arrive late
    if (window.studyReport) window.studyReport({ page, clip, events: log });
  };
  const track = (media) => {
    media.dataset.tracked = "1";
    let start = null, last = 0, lastWall = 0;  // the open stretch, and the player's last known place
    const open = () => {
      if (start !== null) return;
      start = last = media.currentTime;
      lastWall = performance.now();
      report(media, "play", start);
    };
    const close = (event, to) => {
      if (start === null) return;
      report(media, event, start, Math.max(start, to));
      start = null;
    };
    media.addEventListener("play", () => claim(media));
    media.addEventListener("playing", open);
    media.addEventListener("timeupdate", () => {
      if (start !== null && !media.seeking) { last = media.currentTime; lastWall = performance.now(); }
    });
    media.addEventListener("pause", () => {
      const ended = media.ended || media.currentTime >= media.duration - 0.001;
      close(ended ? "ended" : "pause", ended ? media.duration : media.currentTime);
    });
    media.addEventListener("ended", () => close("ended", media.duration));
    media.addEventListener("seeking", () => {  // where it was: the last report plus the time since
      close("seek", Math.min(media.duration, last + (performance.now() - lastWall) / 1000 * media.playbackRate));
    });
    media.addEventListener("seeked", () => { if (!media.paused) open(); });
  };
  // One clip at a time, however a clip is started: the player's own control starts it without
  // calling play() from script, so the claim is made on its "play" event as well.
  const claim = (media) => {
    for (const other of window.studyMedia) if (other !== media && !other.paused) other.pause();
    window.studyMedia.add(media);
  };
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function (...args) {
    claim(this);
    return play.apply(this, args);
  };
  new MutationObserver(() => {
    for (const media of document.querySelectorAll("audio:not([data-tracked])")) track(media);
    for (const media of window.studyMedia) {  // a clip of an item no longer shown stops
      if (!media.isConnected && !media.paused) media.pause();
    }
  }).observe(document.body, { childList: true, subtree: true });
  const choiceForKey = { "1": "win", "2": "tie", "3": "lose" };
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" ||
        (target.tagName === "INPUT" && target.type !== "radio"))) return;
    if (document.body.classList.contains("study-offline")) return;  // nothing can be saved now
    const key = event.key.toLowerCase();
    if (key in choiceForKey) {
      const open = [...document.querySelectorAll(".study-criterion")]
        .find((group) => !group.querySelector("input:checked"));
      const input = open && open.querySelector(`input[value="${choiceForKey[key]}"]`);
      if (input && !input.disabled) { input.click(); event.preventDefault(); }
    } else if (key === "j" || key === "k") {
      const media = document.querySelector(`#study-audio-${key === "j" ? "a" : "b"} audio`);
      if (media) { if (media.paused) media.play(); else media.pause(); event.preventDefault(); }
    } else if (key === "enter") {
      const next = document.querySelector("#study-next");
      if (next && !next.disabled) { next.click(); event.preventDefault(); }
    }
  });
}
