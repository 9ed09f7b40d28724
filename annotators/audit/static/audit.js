// The clip page: frame-exact stepping, playback controls, tag shortcuts. Re-initialised on
// every panel HTMX swaps in (the next clip loads without a page reload).
(function () {
  let player = null, axis = null;

  function init(root) {
    const v = root.querySelector("video#clip");
    player = null;
    axis = null;
    if (!v) return;
    const fps = parseFloat(v.dataset.fps), n = parseInt(v.dataset.frames, 10);
    const label = root.querySelector("#frame");
    // The label shows the frame the browser actually presents: requestVideoFrameCallback
    // gives that frame's media time, so it never drifts from the decoded frame index.
    const onFrame = (now, meta) => {
      const f = Math.min(n - 1, Math.max(0, Math.round(meta.mediaTime * fps)));
      label.textContent = f;
      label.dataset.frame = f;
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
    // Seek to the middle of a frame's display interval: no rounding at a boundary can land
    // on a neighbour, in any browser.
    // Steps count from the frame last asked for, not the one on screen: keys pressed faster
    // than seeks complete still add up.
    let target = 0;
    const show = (i) => { target = Math.min(n - 1, Math.max(0, i)); v.pause(); v.currentTime = (target + 0.5) / fps; };
    v.addEventListener("play", () => { target = null; });
    const current = () => (target === null ? parseInt(label.dataset.frame, 10) : target);
    player = {
      v, show, current,
      step: (d) => show(current() + d),
      play: () => (v.paused ? v.play() : v.pause()),
      slow: () => { v.playbackRate = v.playbackRate === 1 ? 0.25 : 1; root.querySelector("#rate").textContent = v.playbackRate + "x"; },
      loop: () => { v.loop = !v.loop; root.querySelector("#looping").textContent = v.loop ? "looping" : ""; },
    };
    root.querySelectorAll("[data-act]").forEach((b) => b.addEventListener("click", () => {
      ({back: () => player.step(-1), fwd: () => player.step(1), play: player.play, slow: player.slow, loop: player.loop})[b.dataset.act]();
    }));
    root.querySelectorAll(".mark").forEach((m) => m.addEventListener("click", () => show(parseInt(m.dataset.frame, 10))));
    const strip = root.querySelector(".filmstrip");
    strip.addEventListener("click", (e) => {
      const frames = strip.dataset.frames.split(",").map(Number);
      show(frames[Math.min(frames.length - 1, Math.floor((e.offsetX / strip.clientWidth) * frames.length))]);
    });
  }

  function toggle(i) {  // the i-th (from 0) tag of the active axis
    if (!axis) return;
    const boxes = axis.querySelectorAll("input");
    if (i < boxes.length) boxes[i].checked = boxes[i].type === "radio" ? true : !boxes[i].checked;
  }

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "password"))) {
      if (e.key === "Escape") t.blur();
      return;
    }
    if (!player || e.ctrlKey || e.metaKey || e.altKey) return;
    const form = document.getElementById("labels");
    const acts = {",": () => player.step(-1), ".": () => player.step(1), " ": player.play, s: player.slow, l: player.loop,
      f: () => { const x = document.getElementById("failure"); x.checked = !x.checked; },
      n: () => form.querySelector("textarea").focus(),
      Enter: () => form.requestSubmit()};
    if (acts[e.key]) { e.preventDefault(); acts[e.key](); return; }
    const pick = form.querySelector(`fieldset.axis[data-key="${e.key}"]`);
    if (pick) {
      form.querySelectorAll("fieldset.axis").forEach((f) => f.classList.remove("active"));
      pick.classList.add("active");
      axis = pick;
      e.preventDefault();
      return;
    }
    const digit = /^Digit([0-9])$/.exec(e.code);  // 1-9 0: tags 1-10; with Shift: tags 11-20
    if (digit) { toggle((digit[1] === "0" ? 9 : parseInt(digit[1], 10) - 1) + (e.shiftKey ? 10 : 0)); e.preventDefault(); }
  });

  document.addEventListener("htmx:afterSwap", () => init(document));
  document.addEventListener("DOMContentLoaded", () => init(document));
})();
