/// The click-to-segment page, served by the binary itself (no CDN, no build step): plain
/// HTML, JavaScript and CSS. `window.evsamTest` in the script lets the browser test read
/// what is drawn.
enum WebAssets {
  /// The page.
  static let indexHTML = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>evsam · click to segment</title>
    <link rel="stylesheet" href="/app.css">
    </head>
    <body data-status="empty" data-mask-pixels="0">
    <header>
      <h1>evsam</h1>
      <label class="button primary" for="file" title="Open one or several PNG or JPEG images (O)">Open images…</label>
      <input type="file" id="file" accept="image/png,image/jpeg" multiple hidden>
      <div class="tools">
        <button id="previous" title="The previous image of those opened (←)" disabled>‹</button>
        <span id="image-position" class="position"></span>
        <button id="next" title="The next image of those opened (→)" disabled>›</button>
        <button id="fit" title="Fit the image in the view again (0); the wheel zooms, a middle-button or Space drag pans" disabled>Fit</button>
      </div>
      <div class="tools">
        <button id="undo" title="Undo the last prompt, or the last kept mask (Ctrl+Z)" disabled>Undo</button>
        <button id="clear" title="Remove the prompts and the current mask (Esc)" disabled>Clear</button>
        <button id="keep" title="Keep the current mask as an annotation (Enter)" disabled>Keep mask</button>
        <button id="everything" title="Run the automatic mask generator on the whole image" disabled>Segment everything</button>
        <button id="download-png" title="Download the current mask as a PNG" disabled>Mask PNG</button>
        <button id="download-coco" title="Download the kept annotations (and the current mask) as COCO JSON" disabled>COCO JSON</button>
      </div>
      <span id="model" class="model"></span>
    </header>
    <main>
      <section id="stage" class="empty">
        <canvas id="view" width="1" height="1"></canvas>
        <div id="drop-hint">
          <p><strong>Drop a PNG or JPEG here</strong> or use “Open image…”.</p>
          <p>Left-click adds a foreground point, right- or shift-click a background point, dragging draws a box.</p>
        </div>
      </section>
      <aside>
        <div id="status" role="status">No image yet.</div>
        <div id="candidates-box" hidden>
          <h2>Candidates</h2>
          <div id="candidates"></div>
          <label class="check"><input type="checkbox" id="always-multi"> three candidates for every prompt</label>
        </div>
        <h2>Classes</h2>
        <div id="classes" role="radiogroup" aria-label="Class of the next annotation"></div>
        <form id="add-class" class="add-class">
          <input id="class-name" placeholder="new class" aria-label="New class name" maxlength="60">
          <input type="color" id="class-color" aria-label="Colour of the new class" value="#3cb44b">
          <button type="submit">Add</button>
        </form>
        <h2>Annotations <span id="annotation-count">0</span></h2>
        <ol id="annotations"></ol>
        <p id="other-annotations" class="help"></p>
        <details>
          <summary>Segment-everything settings</summary>
          <label>points per side <input type="number" id="pps" min="1" max="64" value="32"></label>
          <label>predicted IoU threshold <input type="number" id="iou-thresh" min="0" max="1" step="0.01" value="0.88"></label>
          <label>stability threshold <input type="number" id="stability-thresh" min="0" max="1" step="0.01" value="0.95"></label>
        </details>
        <p class="help">Keys: <kbd>1</kbd>–<kbd>3</kbd> candidate, <kbd>Enter</kbd> keep, <kbd>Ctrl</kbd>+<kbd>Z</kbd> undo (a prompt, or the last keep), <kbd>Esc</kbd> clear.</p>
      </aside>
    </main>
    <script src="/app.js"></script>
    </body>
    </html>
    """#

  /// The page's script: prompts, drawing, downloads.
  static let script = #"""
    // evsam click-to-segment page: no framework, no network beyond this server.
    "use strict";

    const PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [67, 99, 216], [245, 130, 49],
      [145, 30, 180], [66, 212, 244], [240, 50, 230], [191, 239, 69], [250, 190, 212],
      [70, 153, 144], [220, 190, 255], [154, 99, 36], [255, 250, 200], [128, 0, 0], [170, 255, 195]];
    const CURRENT = [30, 144, 255];

    const $ = (id) => document.getElementById(id);
    const view = $("view");
    const ctx = view.getContext("2d");

    const state = {
      file: null, fileName: "image", imageId: null, width: 0, height: 0, picture: null,
      points: [],          // {x, y, label}
      box: null,           // [x0, y0, x1, y1]
      history: [],         // undo stack of prompt snapshots
      result: null,        // prompts[0] of the last segment answer
      candidate: 0,
      layer: null,         // canvas with the current mask drawn
      maskPixels: 0,
      annotations: [],     // {segmentation, area, bbox (COCO), score, source, layer, color, category}
      classes: [{ name: "object", color: PALETTE[0] }],  // the COCO categories, in order
      classIndex: 0,       // the class the next annotation gets
      imageKey: null,      // which file the annotations belong to (fileKey)
      images: new Map(),   // fileKey → {name, width, height, annotations} of the other images opened
      opening: 0,          // the latest openFile call; an older one that finishes late gives way
      everythingRequests: 0,
      queue: [],           // the files opened together, shown one at a time
      queueIndex: 0,
      zoom: { s: 1, tx: 0, ty: 0 },  // the view's scale and shift (CSS transform)
      pan: null,
      space: false,
      drag: null,
      seq: 0,
      pending: 0,
    };

    // ---------------------------------------------------------------- COCO RLE

    // pycocotools' compressed counts: 6-bit groups, offset by 48, each run after the second stored
    // as the difference to the run two before.
    function decodeCounts(text) {
      const counts = [];
      let p = 0;
      while (p < text.length) {
        let x = 0, k = 0, more = 1, c = 0;
        while (more) {
          c = text.charCodeAt(p) - 48;
          x |= (c & 0x1f) << (5 * k);
          more = c & 0x20;
          p++; k++;
          if (!more && (c & 0x10)) x |= -1 << (5 * k);
        }
        if (counts.length > 2) x += counts[counts.length - 2];
        counts.push(x);
      }
      return counts;
    }

    function runsOf(segmentation) {
      return typeof segmentation.counts === "string" ? decodeCounts(segmentation.counts) : segmentation.counts;
    }

    // Draws a mask (column-major runs, background first) into a canvas of the image's size.
    function maskLayer(segmentation, color, alpha) {
      const [h, w] = segmentation.size;
      const canvas = document.createElement("canvas");
      canvas.width = w; canvas.height = h;
      const c2 = canvas.getContext("2d");
      const img = c2.createImageData(w, h);
      const d = img.data;
      let index = 0, on = false, pixels = 0;
      for (const run of runsOf(segmentation)) {
        if (on) {
          for (let i = index; i < index + run; i++) {
            const x = (i / h) | 0, y = i - x * h, o = (y * w + x) * 4;
            d[o] = color[0]; d[o + 1] = color[1]; d[o + 2] = color[2]; d[o + 3] = alpha;
          }
          pixels += run;
        }
        index += run;
        on = !on;
      }
      c2.putImageData(img, 0, 0);
      canvas.pixels = pixels;
      return canvas;
    }

    // ---------------------------------------------------------------- drawing

    function redraw() {
      if (!state.picture) return;
      ctx.clearRect(0, 0, view.width, view.height);
      ctx.drawImage(state.picture, 0, 0, state.width, state.height);
      for (const a of state.annotations) ctx.drawImage(a.layer, 0, 0);
      if (state.layer) ctx.drawImage(state.layer, 0, 0);
      const r = Math.max(4, Math.round(Math.min(state.width, state.height) / 90));
      ctx.lineWidth = Math.max(2, r / 2.5);
      const box = state.drag && state.drag.box ? state.drag.box : state.box;
      if (box) {
        ctx.strokeStyle = "#ffe600";
        ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
      }
      for (const p of state.points) {
        ctx.beginPath();
        ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
        ctx.fillStyle = p.label === 1 ? "#00c83c" : "#e61e1e";
        ctx.fill();
        ctx.strokeStyle = "#fff";
        ctx.stroke();
      }
    }

    function setStatus(text, kind) {
      $("status").textContent = text;
      document.body.dataset.status = kind || "idle";
    }

    function updateControls() {
      const ready = state.imageId !== null;
      const hasPrompt = state.points.length > 0 || state.box !== null;
      $("undo").disabled = state.history.length === 0;
      $("clear").disabled = !hasPrompt && !state.layer;
      $("keep").disabled = !state.layer;
      $("everything").disabled = !ready;
      $("previous").disabled = state.queueIndex <= 0;
      $("next").disabled = state.queueIndex >= state.queue.length - 1;
      $("image-position").textContent = state.queue.length > 1 ? `${state.queueIndex + 1} / ${state.queue.length}` : "";
      $("fit").disabled = state.zoom.s === 1 && state.zoom.tx === 0 && state.zoom.ty === 0;
      $("download-png").disabled = !state.layer;
      const others = otherImages();
      const otherCount = others.reduce((n, i) => n + i.annotations.length, 0);
      $("download-coco").disabled = !state.layer && state.annotations.length === 0 && otherCount === 0;
      $("other-annotations").textContent = otherCount === 0 ? "" :
        `${otherCount} more on ${others.length} other image(s), kept for when you open them again and included in the COCO download.`;
      document.body.dataset.maskPixels = String(state.maskPixels);
      document.body.dataset.annotations = String(state.annotations.length);

      const box = $("candidates-box"), list = $("candidates");
      list.replaceChildren();
      box.hidden = !ready;
      if (state.result && state.result.masks.length > 1) {
        state.result.masks.forEach((m, i) => {
          const b = document.createElement("button");
          b.textContent = `${i + 1} · ${m.score.toFixed(2)}`;
          b.title = `candidate ${i + 1}: predicted IoU ${m.score.toFixed(3)}, ${m.area} px`;
          if (i === state.candidate) b.classList.add("selected");
          b.onclick = () => chooseCandidate(i);
          list.appendChild(b);
        });
      }

      const ol = $("annotations");
      ol.replaceChildren();
      state.annotations.forEach((a, i) => {
        const li = document.createElement("li");
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = `rgb(${a.color.join(",")})`;
        li.appendChild(sw);
        li.appendChild(document.createTextNode(`${a.category}: ${a.source}, ${a.area} px`));
        const del = document.createElement("button");
        del.textContent = "×";
        del.title = "Remove this annotation";
        del.onclick = () => { state.annotations.splice(i, 1); redraw(); updateControls(); };
        li.appendChild(del);
        ol.appendChild(li);
      });
      $("annotation-count").textContent = String(state.annotations.length);
    }

    // ---------------------------------------------------------------- server calls

    async function api(path, options) {
      const response = await fetch(path, options);
      const type = response.headers.get("Content-Type") || "";
      const body = type.includes("json") ? await response.json() : null;
      if (!response.ok) {
        const e = body && body.error ? body.error : { status: response.status, code: "http", message: response.statusText };
        const error = new Error(e.message);
        error.code = e.code;
        error.status = response.status;
        throw error;
      }
      return body;
    }

    function postJSON(path, body) {
      return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    }

    async function upload() {
      const info = await api("/v1/images", {
        method: "POST",
        headers: { "Content-Type": state.file.type || "application/octet-stream" },
        body: state.file,
      });
      state.imageId = info.id;
      if (info.width !== state.width || info.height !== state.height) {
        // The browser and the server disagree on the upright size (EXIF); the server's frame wins.
        state.width = info.width; state.height = info.height;
        view.width = info.width; view.height = info.height;
      }
      return info;
    }

    // Runs a call that needs the image on the server; if the cache dropped it, uploads it again once.
    async function withImage(call) {
      try {
        return await call();
      } catch (e) {
        if (e.code !== "image_not_found" || !state.file) throw e;
        setStatus("The server dropped the image from its cache; uploading it again…", "encoding");
        await upload();
        return await call();
      }
    }

    async function openFile(file) {
      if (!file) return;
      if (!/^image\/(png|jpeg)$/.test(file.type) && !/\.(png|jpe?g)$/i.test(file.name)) {
        setStatus(`${file.name} is not a PNG or JPEG image.`, "error");
        return;
      }
      // The file is decoded before the state changes: one the browser cannot show leaves the
      // current image, its prompts and its annotations exactly as they were.
      const opening = ++state.opening;
      const picture = new Image();
      const url = URL.createObjectURL(file);
      picture.src = url;
      try {
        await picture.decode();
      } catch (e) {
        URL.revokeObjectURL(url);
        if (opening === state.opening) {
          setStatus(`${file.name} cannot be shown by the browser; ${state.file ? "the current image stays" : "open a PNG or JPEG"}.`, "error");
        }
        return;
      }
      if (opening !== state.opening) return;
      const seq = ++state.seq;
      // The annotations of the image being left stay with it, for when it is opened again
      // (and for the COCO download); those of the image opened come back.
      shelveAnnotations();
      const key = fileKey(file);
      const shelved = state.images.get(key);
      state.images.delete(key);
      Object.assign(state, {
        file, fileName: file.name.replace(/\.[^.]*$/, "") || "image", imageKey: key, imageId: null,
        points: [], box: null, history: [], result: null, layer: null, maskPixels: 0,
        annotations: shelved ? shelved.annotations : [],
      });
      state.picture = picture;
      state.width = picture.naturalWidth; state.height = picture.naturalHeight;
      view.width = state.width; view.height = state.height;
      $("stage").classList.remove("empty");
      redraw();
      updateControls();
      setStatus(`Encoding ${file.name}…`, "encoding");
      try {
        const info = await upload();
        if (seq !== state.seq) return;
        setStatus(`${file.name}: ${info.width}×${info.height}, encoded in ${Math.round(info.encode_ms)} ms. Click to segment.`, "ready");
      } catch (e) {
        if (seq === state.seq) setStatus(`Upload failed: ${e.message}`, "error");
      }
      updateControls();
    }

    // Files are told apart by name, size and date: the browser gives no path.
    function fileKey(file) {
      return `${file.name}|${file.size}|${file.lastModified}`;
    }

    function shelveAnnotations() {
      if (state.imageKey === null || state.annotations.length === 0) return;
      state.images.set(state.imageKey, {
        name: state.file.name, width: state.width, height: state.height, annotations: state.annotations,
      });
    }

    function otherImages() {
      return [...state.images.values()].filter((i) => i.annotations.length > 0);
    }

    function multimaskWanted() {
      return $("always-multi").checked || (state.points.length === 1 && state.box === null);
    }

    async function segment(refine) {
      if (state.imageId === null) return;
      const seq = ++state.seq;
      if (state.points.length === 0 && state.box === null) {
        state.result = null; state.layer = null; state.maskPixels = 0;
        redraw(); updateControls();
        setStatus("No prompt.", "ready");
        return;
      }
      const body = { multimask: multimaskWanted() };
      if (state.points.length) {
        body.points = state.points.map((p) => [p.x, p.y]);
        body.labels = state.points.map((p) => p.label);
      }
      if (state.box) body.box = state.box;
      const handle = refine && state.result ? state.result.masks[state.candidate].handle : null;
      if (handle) body.mask_input = handle;
      setStatus("Segmenting…", "segmenting");
      state.pending++;
      try {
        let answer;
        try {
          answer = await withImage(() => postJSON(`/v1/images/${state.imageId}/segment`, body));
        } catch (e) {
          if (e.code !== "mask_not_found") throw e;
          delete body.mask_input;
          answer = await withImage(() => postJSON(`/v1/images/${state.imageId}/segment`, body));
        }
        if (seq !== state.seq) return;
        state.result = answer.prompts[0];
        chooseCandidate(state.result.best);
        setStatus(`Mask in ${Math.round(answer.decode_ms)} ms: ${state.result.masks.length} candidate(s).`, "ready");
      } catch (e) {
        if (seq === state.seq) setStatus(`Segmenting failed: ${e.message}`, "error");
      } finally {
        state.pending--;
      }
    }

    function chooseCandidate(i) {
      if (!state.result || !state.result.masks[i]) return;
      state.candidate = i;
      state.layer = maskLayer(state.result.masks[i].segmentation, CURRENT, 130);
      state.maskPixels = state.layer.pixels;
      redraw();
      updateControls();
    }

    async function everything() {
      if (state.imageId === null) return;
      const seq = ++state.seq;
      const settings = {
        points_per_side: Number($("pps").value) || 32,
        pred_iou_thresh: Number($("iou-thresh").value),
        stability_score_thresh: Number($("stability-thresh").value),
      };
      state.everythingRequests++;
      setStatus("Segmenting everything…", "everything");
      try {
        const t0 = performance.now();
        const doc = await withImage(() => postJSON(`/v1/images/${state.imageId}/everything`, settings));
        if (seq !== state.seq) return;
        state.annotations = state.annotations.filter((a) => a.source !== "everything");
        // Largest first, so small masks stay visible on top.
        const found = doc.annotations.slice().sort((a, b) => b.area - a.area);
        found.forEach((a) => addAnnotation(a.segmentation, a.area, cocoBoxFromSAM(a.bbox, a.area), a.predicted_iou, "everything"));
        redraw();
        updateControls();
        setStatus(`Everything: ${found.length} mask(s) in ${Math.round(performance.now() - t0)} ms.`, "ready");
      } catch (e) {
        if (seq === state.seq) setStatus(`Segment everything failed: ${e.message}`, "error");
      }
    }

    // /everything answers SAM's records, whose bbox is [x, y, x1 − x0, y1 − y0] of the first
    // and last mask pixels; a COCO box (and /segment's) counts the pixels, one more each way.
    function cocoBoxFromSAM(box, area) {
      return area > 0 ? [box[0], box[1], box[2] + 1, box[3] + 1] : [0, 0, 0, 0];
    }

    // Kept masks take the chosen class and its colour; everything-mode masks, which are many
    // and unlabelled, take the class too but a colour each, so that they stay apart.
    function addAnnotation(segmentation, area, bbox, score, source) {
      const cls = state.classes[state.classIndex];
      const color = source === "everything" ? PALETTE[state.annotations.length % PALETTE.length] : cls.color;
      state.annotations.push({ segmentation, area, bbox, score, source, color, category: cls.name, layer: maskLayer(segmentation, color, 115) });
    }

    // ---------------------------------------------------------------- classes

    function hexColor(rgb) {
      return "#" + rgb.map((v) => v.toString(16).padStart(2, "0")).join("");
    }

    function addClass(name, color) {
      name = name.trim();
      if (!name) return false;
      const existing = state.classes.findIndex((c) => c.name === name);
      if (existing >= 0) { state.classIndex = existing; renderClasses(); return false; }
      state.classes.push({ name, color });
      state.classIndex = state.classes.length - 1;
      renderClasses();
      return true;
    }

    function renderClasses() {
      const list = $("classes");
      list.replaceChildren();
      state.classes.forEach((c, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "class" + (i === state.classIndex ? " selected" : "");
        b.setAttribute("role", "radio");
        b.setAttribute("aria-checked", String(i === state.classIndex));
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = hexColor(c.color);
        b.appendChild(sw);
        b.appendChild(document.createTextNode(c.name));
        b.onclick = () => { state.classIndex = i; renderClasses(); };
        list.appendChild(b);
      });
      $("class-color").value = hexColor(PALETTE[state.classes.length % PALETTE.length]);
    }

    // ---------------------------------------------------------------- prompts

    function snapshot() {
      state.history.push({ points: state.points.slice(), box: state.box });
    }

    function imagePoint(event) {
      const r = view.getBoundingClientRect();
      const x = ((event.clientX - r.left) * state.width) / r.width;
      const y = ((event.clientY - r.top) * state.height) / r.height;
      return { x: Math.min(Math.max(x, 0), state.width), y: Math.min(Math.max(y, 0), state.height) };
    }

    view.addEventListener("contextmenu", (e) => e.preventDefault());
    view.addEventListener("mousedown", (e) => {
      if (state.imageId === null) return;
      e.preventDefault();
      if (e.button === 1 || state.space) {
        state.pan = { x: e.clientX, y: e.clientY };
        return;
      }
      state.drag = { start: imagePoint(e), screen: [e.clientX, e.clientY], button: e.button, shift: e.shiftKey, box: null };
    });
    window.addEventListener("mousemove", (e) => {
      if (state.pan) {
        setZoom(state.zoom.s, state.zoom.tx + e.clientX - state.pan.x, state.zoom.ty + e.clientY - state.pan.y);
        state.pan = { x: e.clientX, y: e.clientY };
        return;
      }
      const d = state.drag;
      if (!d || d.button !== 0) return;
      if (!d.box && Math.hypot(e.clientX - d.screen[0], e.clientY - d.screen[1]) < 5) return;
      const p = imagePoint(e);
      d.box = [Math.min(d.start.x, p.x), Math.min(d.start.y, p.y), Math.max(d.start.x, p.x), Math.max(d.start.y, p.y)];
      redraw();
    });
    window.addEventListener("mouseup", (e) => {
      if (state.pan) { state.pan = null; return; }
      const d = state.drag;
      if (!d) return;
      state.drag = null;
      snapshot();
      if (d.box) {
        state.box = d.box.map((v) => Math.round(v * 10) / 10);
        segment(false);
      } else {
        const label = d.button === 2 || d.shift ? 0 : 1;
        state.points.push({ x: Math.round(d.start.x * 10) / 10, y: Math.round(d.start.y * 10) / 10, label });
        // Refine the mask shown with the new point, as SAM's own demo does.
        segment(state.points.length > 1 || state.box !== null);
      }
      redraw();
      updateControls();
    });

    // The history holds prompt snapshots and, after a keep, the kept annotation with the prompts
    // that made it: undoing a keep takes the annotation back and shows its mask again.
    function undo() {
      const previous = state.history.pop();
      if (!previous) return;
      if (previous.kept) {
        const i = state.annotations.indexOf(previous.kept);
        if (i >= 0) state.annotations.splice(i, 1);
        state.history = previous.history;
        setStatus("Took the last kept mask back.", "ready");
      }
      state.points = previous.points;
      state.box = previous.box;
      segment(false);
    }

    function clearPrompts() {
      if (state.points.length || state.box) snapshot();
      state.points = []; state.box = null;
      segment(false);
    }

    function keep() {
      if (!state.result || !state.layer) return;
      const m = state.result.masks[state.candidate];
      addAnnotation(m.segmentation, m.area, m.bbox, m.score, "kept");
      const kept = { kept: state.annotations[state.annotations.length - 1], points: state.points, box: state.box, history: state.history };
      state.points = []; state.box = null; state.history = [kept]; state.result = null; state.layer = null; state.maskPixels = 0;
      state.seq++;
      redraw();
      updateControls();
      setStatus(`Kept annotation ${state.annotations.length}. Click the next object.`, "ready");
    }

    // ---------------------------------------------------------------- downloads

    function download(blob, name) {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }

    function downloadMask() {
      if (!state.result) return;
      const seg = state.result.masks[state.candidate].segmentation;
      const layer = maskLayer(seg, [255, 255, 255], 255);
      const out = document.createElement("canvas");
      out.width = layer.width; out.height = layer.height;
      const c2 = out.getContext("2d");
      c2.fillStyle = "#000";
      c2.fillRect(0, 0, out.width, out.height);
      c2.drawImage(layer, 0, 0);
      out.toBlob((blob) => download(blob, `${state.fileName}_mask.png`), "image/png");
    }

    // Every bbox here is COCO's [x, y, width, height] with width = x1 + 1 − x0 (see
    // cocoBoxFromSAM). The image shown is image 1; the other annotated images follow.
    function cocoDocument() {
      const current = state.annotations.map((a) => a);
      if (state.result && state.layer) {
        const m = state.result.masks[state.candidate];
        current.push({ segmentation: m.segmentation, area: m.area, bbox: m.bbox, score: m.score, category: state.classes[state.classIndex].name });
      }
      const images = [{ name: state.file ? state.file.name : "image", width: state.width, height: state.height, annotations: current }]
        .concat(otherImages());
      // Every class defined, then any other name an annotation carries, numbered from 1.
      const names = state.classes.map((c) => c.name);
      images.forEach((image) => image.annotations.forEach((a) => { if (!names.includes(a.category)) names.push(a.category); }));
      const annotations = [];
      images.forEach((image, i) => image.annotations.forEach((a) => annotations.push({
        id: annotations.length + 1, image_id: i + 1, category_id: names.indexOf(a.category) + 1,
        segmentation: a.segmentation, area: a.area, bbox: a.bbox, iscrowd: 0, score: a.score,
      })));
      return {
        info: { description: "evsam annotations", date_created: new Date().toISOString() },
        images: images.map((image, i) => ({ id: i + 1, file_name: image.name, width: image.width, height: image.height })),
        categories: names.map((name, i) => ({ id: i + 1, name, supercategory: name })),
        annotations,
      };
    }

    function downloadCOCO() {
      const json = JSON.stringify(cocoDocument());
      download(new Blob([json], { type: "application/json" }), `${state.fileName}_coco.json`);
    }

    // ---------------------------------------------------------------- zoom, pan, several images

    // The view is scaled and shifted by a CSS transform about its centre; prompts still map
    // to image pixels through its on-screen rectangle (imagePoint).
    function setZoom(s, tx, ty) {
      state.zoom = { s, tx, ty };
      view.style.transform = s === 1 && tx === 0 && ty === 0 ? "" : `translate(${tx}px, ${ty}px) scale(${s})`;
      updateControls();
    }

    // Zooms by `factor` keeping the image point under (x, y) on the page where it is.
    function zoomAt(factor, x, y) {
      const z = state.zoom;
      const s = Math.min(Math.max(z.s * factor, 1), 32);
      const k = s / z.s;
      const r = view.getBoundingClientRect();
      // The transform's origin (the view's centre before the transform) on the page.
      const cx = r.left + r.width / 2 - z.tx, cy = r.top + r.height / 2 - z.ty;
      setZoom(s, x - cx - k * (x - cx - z.tx), y - cy - k * (y - cy - z.ty));
    }

    $("stage").addEventListener("wheel", (e) => {
      if (state.imageId === null) return;
      e.preventDefault();
      zoomAt(Math.exp(-e.deltaY / 500), e.clientX, e.clientY);
    }, { passive: false });

    function openQueue(files) {
      const images = [...files];
      if (images.length === 0) return;
      state.queue = images;
      state.queueIndex = 0;
      setZoom(1, 0, 0);
      openFile(images[0]);
    }

    function step(delta) {
      const i = state.queueIndex + delta;
      if (i < 0 || i >= state.queue.length) return;
      state.queueIndex = i;
      setZoom(1, 0, 0);
      openFile(state.queue[i]);
    }

    // ---------------------------------------------------------------- wiring

    $("file").addEventListener("change", (e) => openQueue(e.target.files));
    $("previous").onclick = () => step(-1);
    $("next").onclick = () => step(1);
    $("fit").onclick = () => setZoom(1, 0, 0);
    $("undo").onclick = undo;
    $("clear").onclick = clearPrompts;
    $("keep").onclick = keep;
    $("everything").onclick = everything;
    $("download-png").onclick = downloadMask;
    $("download-coco").onclick = downloadCOCO;
    $("add-class").addEventListener("submit", (e) => {
      e.preventDefault();
      const hex = $("class-color").value;
      const rgb = [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
      if (addClass($("class-name").value, rgb)) $("class-name").value = "";
    });
    renderClasses();
    $("always-multi").onchange = () => segment(false);

    const stage = $("stage");
    stage.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("dragover"); });
    stage.addEventListener("dragleave", () => stage.classList.remove("dragover"));
    stage.addEventListener("drop", (e) => {
      e.preventDefault();
      stage.classList.remove("dragover");
      openQueue(e.dataTransfer.files);
    });

    window.addEventListener("keyup", (e) => { if (e.key === " ") state.space = false; });
    window.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement) return;
      // Enter on a focused control presses that control; keeping the mask as well would make
      // one key do two things (a second "Segment everything", say).
      if (e.key === "Enter" && e.target instanceof Element && e.target.closest("button, a, summary, select, textarea, label")) return;
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
      else if (e.key === "Escape") clearPrompts();
      else if (e.key === "Enter") { e.preventDefault(); keep(); }
      else if (e.key === "o") $("file").click();
      else if (e.key === "ArrowLeft") step(-1);
      else if (e.key === "ArrowRight") step(1);
      else if (e.key === "0") setZoom(1, 0, 0);
      else if (e.key === " ") { state.space = true; e.preventDefault(); }
      else if (/^[1-3]$/.test(e.key)) chooseCandidate(Number(e.key) - 1);
    });

    api("/v1/models").then((m) => { $("model").textContent = m.models.map((x) => x.name).join(", "); }).catch(() => {});
    updateControls();

    // For automated tests: what is drawn, without reading the page's internals.
    window.evsamTest = {
      state,
      maskPixels: () => state.maskPixels,
      // Pixels of the visible canvas that differ from the image drawn alone: the overlay at work.
      overlayPixels() {
        if (!state.picture) return 0;
        const base = document.createElement("canvas");
        base.width = view.width; base.height = view.height;
        const b = base.getContext("2d");
        b.drawImage(state.picture, 0, 0, state.width, state.height);
        const a = ctx.getImageData(0, 0, view.width, view.height).data;
        const o = b.getImageData(0, 0, view.width, view.height).data;
        let n = 0;
        for (let i = 0; i < a.length; i += 4) {
          if (Math.abs(a[i] - o[i]) + Math.abs(a[i + 1] - o[i + 1]) + Math.abs(a[i + 2] - o[i + 2]) > 24) n++;
        }
        return n;
      },
      coco: cocoDocument,
    };
    """#

  /// The page's style sheet.
  static let style = #"""
    * { box-sizing: border-box; }
    html, body { margin: 0; height: 100%; }
    body { font: 14px/1.4 system-ui, sans-serif; color: #1d2330; background: #eef0f4; display: flex; flex-direction: column; }
    header { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; padding: 8px 12px; background: #1d2330; color: #fff; }
    header h1 { font-size: 18px; margin: 0 8px 0 0; letter-spacing: 0.5px; }
    .tools { display: flex; flex-wrap: wrap; gap: 6px; }
    .model { margin-left: auto; opacity: 0.75; font-size: 12px; }
    button, .button { font: inherit; padding: 5px 10px; border-radius: 5px; border: 1px solid #8a93a6; background: #f7f8fa; color: #1d2330; cursor: pointer; }
    button:disabled { opacity: 0.45; cursor: default; }
    .button.primary { background: #3b82f6; border-color: #3b82f6; color: #fff; }
    main { flex: 1; display: flex; min-height: 0; }
    #stage { flex: 1; position: relative; display: flex; align-items: center; justify-content: center; padding: 12px; min-width: 0; overflow: hidden; }
    #stage.dragover { outline: 3px dashed #3b82f6; outline-offset: -10px; }
    #view { max-width: 100%; max-height: 100%; box-shadow: 0 1px 6px rgba(0,0,0,0.25); background: #fff; cursor: crosshair; }
    .position { color: #cbd5e1; font-size: 13px; min-width: 3em; text-align: center; }
    #stage.empty #view { display: none; }
    #drop-hint { text-align: center; color: #5b6474; max-width: 420px; }
    #stage:not(.empty) #drop-hint { display: none; }
    aside { width: 290px; padding: 12px; background: #fff; border-left: 1px solid #d5d9e2; overflow-y: auto; }
    aside h2 { font-size: 13px; text-transform: uppercase; letter-spacing: 0.5px; color: #5b6474; margin: 16px 0 6px; }
    #status { padding: 8px; border-radius: 5px; background: #eef0f4; min-height: 2.4em; }
    body[data-status="error"] #status { background: #fde2e2; color: #8a1c1c; }
    body[data-status="encoding"] #status, body[data-status="segmenting"] #status, body[data-status="everything"] #status { background: #fff6d6; }
    #candidates { display: flex; gap: 6px; }
    #candidates button.selected { background: #3b82f6; border-color: #3b82f6; color: #fff; }
    .check { display: block; margin-top: 6px; font-size: 12px; }
    #annotations { padding-left: 20px; margin: 0; max-height: 40vh; overflow-y: auto; }
    #annotations li { margin: 2px 0; }
    #annotations .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: middle; }
    #classes { display: flex; flex-wrap: wrap; gap: 4px; }
    #classes .class.selected { outline: 2px solid rgb(30, 144, 255); }
    #classes .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: middle; }
    .add-class { display: flex; gap: 4px; margin: 6px 0 10px; }
    #class-name { flex: 1; min-width: 0; }
    #annotations button { padding: 0 6px; margin-left: 6px; font-size: 11px; }
    details label { display: flex; justify-content: space-between; margin: 4px 0; font-size: 12px; }
    details input { width: 70px; }
    .help { font-size: 12px; color: #5b6474; }
    kbd { border: 1px solid #c3c8d3; border-radius: 3px; padding: 0 3px; font-size: 11px; background: #f7f8fa; }
    """#
}
