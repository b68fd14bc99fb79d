// How long a turn feels in the page: from pressing Send to the transcript in the chat, to the
// first words of the reply, and to the reply's voice starting. Measured here, in the browser (the latency
// table holds the server's stage times); shown in #page-timing and kept on
// window.es4rPageTiming for the browser test.
(() => {
  if (window.es4rPageTimingInstalled) return;
  window.es4rPageTimingInstalled = true;
  const GIVE_UP_MS = 180000;  // a voice that never starts (autoplay blocked) stops the search
  let turn = null;
  const seconds = (t) => ((t - turn.sent) / 1000).toFixed(1);
  const show = () => {
    const box = document.querySelector("#page-timing");
    if (!box || !turn) return;
    const text = turn.text ? `reply text after ${seconds(turn.text)} s` : "waiting for the reply text";
    const voice = turn.voice ? `voice after ${seconds(turn.voice)} s` : "voice not started yet";
    box.textContent = `In your browser, from pressing Send: ${text}, ${voice}.`;
    window.es4rPageTiming = { heard_s: turn.heard ? (turn.heard - turn.sent) / 1000 : null,
                              text_s: turn.text ? (turn.text - turn.sent) / 1000 : null,
                              voice_s: turn.voice ? (turn.voice - turn.sent) / 1000 : null,
                              words_at_text: turn.wordsAtText, words_at_voice: turn.wordsAtVoice };
  };
  // Media events do not bubble, and players may keep their <audio> in a shadow root: while a
  // turn waits for its voice, look for a playing one in the reply's player every 50 ms.
  const media = (root) => {
    const found = [...root.querySelectorAll("audio, video")];
    for (const element of root.querySelectorAll("*")) {
      if (element.shadowRoot) found.push(...media(element.shadowRoot));
    }
    return found;
  };
  const botMessages = () => document.querySelectorAll("#chat .message.bot");
  const userMessages = () => document.querySelectorAll("#chat .message.user");
  // The reply as the page shows it (kept at the first words and when the voice starts, so a
  // test can see that both came before the reply was complete).
  const replyShown = () => {
    const bots = botMessages();
    return bots.length > turn.bots ? bots[bots.length - 1].innerText.trim() : "";
  };
  document.addEventListener("click", (event) => {
    const send = event.target.closest && event.target.closest("#send");
    if (!send || send.disabled) return;
    const player = document.querySelector("#reply-voice");
    // The previous reply may still be playing: only a clip that was not there at Send counts.
    const earlier = new Set(player ? media(player).map((m) => m.currentSrc) : []);
    turn = { sent: performance.now(), bots: botMessages().length, users: userMessages().length, heard: null,
             text: null, voice: null, earlier };
    show();
  }, true);
  new MutationObserver(() => {
    if (turn && !turn.heard && userMessages().length > turn.users) {  // the transcript is on the page
      turn.heard = performance.now();
      show();
    }
    if (!turn || turn.text) return;
    const bots = botMessages();
    const last = bots[bots.length - 1];
    const words = last ? last.innerText.trim() : "";
    if (bots.length > turn.bots && words && words !== "…") {
      turn.text = performance.now();
      turn.wordsAtText = words;
      show();
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
  setInterval(() => {
    if (!turn || turn.voice || performance.now() - turn.sent > GIVE_UP_MS) return;
    const player = document.querySelector("#reply-voice");
    if (player && media(player).some((m) => !m.paused && m.currentTime > 0 && !turn.earlier.has(m.currentSrc))) {
      turn.voice = performance.now();
      turn.wordsAtVoice = replyShown();
      show();
    }
  }, 50);
})();
