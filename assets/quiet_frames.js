// Gradio 6's page-level loading tracker stays "pending" after the app has loaded (hidden) and keeps a
// requestAnimationFrame loop running to update its elapsed-time counter: ~60 frames a second for as long as the
// page is open, ~0.1 core of a 2-core machine in Chromium, taken from the benchmark that the page is watching.
// Frames asked for by Gradio's status trackers are served 5 times a second instead; every other caller (plots,
// transitions) keeps the display's rate. A visible tracker's seconds counter still ticks (in 0.2 s steps).
(() => {
  const frame = window.requestAnimationFrame.bind(window);
  const cancel = window.cancelAnimationFrame.bind(window);
  const slow = new Set();
  window.requestAnimationFrame = (callback) => {
    if (!(new Error().stack || "").includes("statustracker")) return frame(callback);
    const id = -window.setTimeout(() => { slow.delete(id); callback(performance.now()); }, 200);
    slow.add(id);
    return id;
  };
  window.cancelAnimationFrame = (id) => (slow.delete(id) ? window.clearTimeout(-id) : cancel(id));
})();
