// The reply's voice, sentence by sentence. Each sentence arrives as its own small WAV file (app.py
// sends one per "voice" event, while the LLM writes the next sentence); here they are queued and
// played in order in a plain <audio> element in #reply-voice-slot. A plain file plays as soon as
// it arrives; Gradio's streaming audio encoded each chunk to AAC and served it through an HLS
// playlist, which cost ~0.7 s before the first sound. Sending a turn or starting a new
// conversation stops the voice of the reply before, and that reply's sentences still to come
// (their file names begin "turnN-") are not played.
(() => {
  if (window.es4rReplyVoice) return;
  const queue = [];
  // Gradio sends a value again (at the end of its event, and when the next event starts): play
  // each file once, ever (every sentence is a file of its own)
  const seen = new Set();
  let current = null;
  let newest = 0;  // the newest reply turn heard of
  let floor = 1;  // sentences of an earlier turn than this are dropped
  const turnOf = (file) => Number(((file.orig_name || file.url).match(/turn(\d+)-/) || [0, 0])[1]);
  const slot = () => document.querySelector("#reply-voice-slot");
  const note = (text) => {
    const box = document.querySelector("#reply-voice-note");
    if (box) box.textContent = text;
  };
  const played = [];  // the reply turn of each sentence played, in order (read by the browser test)
  const heard = {};  // reply turn -> seconds of its sentences played to their end
  const playNext = () => {
    const [url, turn] = queue.shift() || [];
    if (!url) {  // the reply is spoken; its last sentence stays in the player, for replay
      current = null;
      return;
    }
    played.push(turn);
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "auto";
    audio.src = url;
    const next = () => { if (current === audio) playNext(); };
    audio.addEventListener("ended", () => { heard[turn] = (heard[turn] || 0) + (audio.duration || 0); });
    audio.addEventListener("ended", next);
    audio.addEventListener("error", next);
    const box = slot();
    if (box) box.replaceChildren(audio);
    current = audio;
    note("");
    audio.play().catch(() => note("Your browser did not let the reply play by itself: press play."));
  };
  const stop = () => {
    queue.length = 0;
    if (current) current.pause();
    current = null;
    const box = slot();
    if (box) box.replaceChildren();
    note("");
  };
  // A new turn is on its way (Send pressed, or the person started speaking hands-free): the
  // voice of the reply before stops, and that reply's sentences still to come are dropped.
  // Returns what was heard of the reply cut off — its turn, the sentences begun, the seconds
  // played — or null when none was playing: the page's history keeps only that part as said.
  const interrupt = () => {
    let cut = null;
    if (current !== null && !current.ended) {
      const turn = played[played.length - 1];
      cut = { turn, units: played.filter((t) => t === turn).length,
              seconds: (heard[turn] || 0) + (current.currentTime || 0) };
    }
    stop();
    floor = Math.max(newest, document.querySelectorAll("#chat .message.user").length) + 1;
    return cut;
  };
  window.es4rReplyVoice = {
    add(file) {
      const url = file && file.url;
      if (!url || seen.has(url)) return;
      seen.add(url);
      const turn = turnOf(file);
      if (turn < floor) return;
      newest = Math.max(newest, turn);
      queue.push([url, turn]);
      if (!current) playNext();
    },
    stop,
    interrupt,
    speaking: () => current !== null && !current.paused,
    played,
  };
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("#send, #new-conversation");
    if (!button || button.disabled) return;
    if (button.id === "new-conversation") {  // turns count from 1 again
      stop();
      newest = 0;
      floor = 1;
    } else {  // the turn being sent is newer than every reply heard of and every turn in the chat
      interrupt();
    }
  }, true);
})();
