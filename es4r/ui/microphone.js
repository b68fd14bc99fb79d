// ES4R hears loudness (stage 3 reads each turn's energy), so the microphone is opened raw:
// automatic gain control, noise suppression and echo cancellation off where the browser
// allows. Wraps getUserMedia once; what was asked and what the track reports are kept on
// window for the page (and the browser test) to read.
(() => {
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia || media.es4rRaw) return;
  const original = media.getUserMedia.bind(media);
  const raw = { autoGainControl: false, noiseSuppression: false, echoCancellation: false };
  media.getUserMedia = (constraints) => {
    if (constraints && constraints.audio) {
      const audio = constraints.audio === true ? {} : constraints.audio;
      constraints = { ...constraints, audio: { ...audio, ...raw } };
      window.es4rMicrophoneConstraints = constraints.audio;
    }
    return original(constraints).then((stream) => {
      const track = stream.getAudioTracks()[0];
      if (track && track.getSettings) window.es4rMicrophoneSettings = track.getSettings();
      return stream;
    });
  };
  media.es4rRaw = true;
})();
