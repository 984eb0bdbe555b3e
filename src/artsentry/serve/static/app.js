"use strict";
// The artsentry page: sends each photo to POST /v1/analyze?explain=true and shows the answer, or
// several photos of one listing together to POST /v1/listing?explain=true.
// Everything comes from this server; nothing is loaded from the internet.
(function () {
  const results = document.getElementById("results");
  const input = document.getElementById("file");
  const drop = document.getElementById("drop");
  const template = document.getElementById("card");
  const oneListing = document.getElementById("one-listing");
  const lots = document.getElementById("lots");
  // the tile scan is offered only when the model has a lot threshold (evaluate --lots)
  const lotsQuery = () => (lots.checked ? "&lots=true" : "");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const pct = (p) => (100 * p).toFixed(1) + "%";

  fetch("v1/models").then((r) => r.json()).then((m) => {
    const parts = [];
    if (m.ivory) parts.push("ivory model " + m.ivory.name + " v" + m.ivory.version + " (threshold " + m.ivory.threshold +
      (m.ivory.lot_threshold != null ? "; photos of several objects " + m.ivory.lot_threshold.toFixed(3) : "") + ")");
    if (m.ivory && m.ivory.lot_threshold != null) document.getElementById("lots-option").hidden = false;
    if (m.culture) parts.push("culture model " + m.culture.name + " v" + m.culture.version);
    if (m.register) parts.push("register of " + m.register.objects +
      (m.register.objects === 1 ? " object" : " objects") +
      (m.register.threshold == null ? " (no no-match threshold: matches ranked, not decided)" : ""));
    document.getElementById("loaded").textContent = parts.length ? "Loaded: " + parts.join("; ") : "No model loaded";
  }).catch(() => { document.getElementById("loaded").textContent = "Could not reach the server"; });

  function showClassification(box, c, title) {
    if (!c) return;
    if (c.decision) {
      const flagged = c.decision === "flag";
      const label = el("div", "label " + (flagged ? "flag" : "pass"),
        flagged ? "Flag: looks like " + c.positive_label : "Pass: not " + c.positive_label);
      box.appendChild(label);
      box.appendChild(el("div", "", "p(" + c.positive_label + ") = " + c.probability.toFixed(3) +
        " (threshold " + c.threshold.toFixed(3) + ")"));
      const bar = el("div", "bar");
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-label", "probability of " + c.positive_label);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "1");
      bar.setAttribute("aria-valuenow", String(c.probability));
      const fill = el("span");
      fill.style.width = pct(c.probability);
      bar.appendChild(fill);
      box.appendChild(bar);
    } else {
      const sorted = Object.entries(c.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 3);
      box.appendChild(el("div", "", title + ": " + sorted.map(([k, v]) => k + " " + pct(v)).join(", ")));
    }
  }

  function showMatches(box, reg) {
    if (!reg) return;
    box.appendChild(el("h4", "", "Register matches"));
    if (!reg.matches.length) {  // a search always ranks every registered object it finds: none means none held
      box.appendChild(el("p", "nomatch", "The register holds no objects yet: nothing to match."));
      return;
    }
    if (reg.no_match) box.appendChild(el("p", "nomatch", "No match among the registered objects."));
    const undecided = reg.no_match === null;  // a register without a threshold ranks, never decides
    if (undecided) box.appendChild(el("p", "nomatch", "Not decided: the register has no no-match threshold " +
      "(artsentry register calibrate). Its closest objects, ranked:"));
    const list = el("ol");
    reg.matches.forEach((m) => {
      const li = el("li", m.matched ? "match" : m.matched === false ? "below" : "");
      const img = el("img");
      img.alt = m.photo ? "registered photo of " + (m.title || m.object_id) : "";
      if (m.photo) img.src = m.photo;
      li.appendChild(img);
      const text = el("div");
      text.appendChild(el("strong", "", m.title || m.object_id));
      text.appendChild(el("div", "", m.object_id + (m.status ? " · " + m.status : "") +
        (m.department ? " · " + m.department : "")));
      const scored = reg.scoring === "contrast" ? "match score " + m.score.toFixed(3) + " · " : "";
      text.appendChild(el("div", "", scored + "similarity " + m.similarity.toFixed(3) +
        (m.matched === false ? " (below threshold)" : "")));
      li.appendChild(text);
      list.appendChild(li);
    });
    if (reg.matches.length && !reg.no_match) box.appendChild(list);
    else if (reg.matches.length) {
      const det = el("details");
      det.appendChild(el("summary", "", "Closest objects (below threshold)"));
      det.appendChild(list);
      box.appendChild(det);
    }
  }

  function newCard(file, where, last) {
    const card = template.content.firstElementChild.cloneNode(true);
    const picture = card.querySelector(".picture");
    card.querySelector(".name").textContent = file.name;
    picture.alt = "uploaded photo " + file.name;
    picture.src = URL.createObjectURL(file);
    // a photo this browser cannot show (HEIC, TIFF): the server's copy of it replaces it once analysed
    picture.addEventListener("error", () => { if (card.serverPhoto) picture.src = card.serverPhoto; }, { once: true });
    if (last) where.append(card); else where.prepend(card);  // newest photo first; a listing's in order
    return card;
  }

  function failed(card, message) {
    const status = card.querySelector(".status");
    status.textContent = "Could not analyse: " + message;
    status.className = "status error";
  }

  async function post(url, form) {
    const r = await fetch(url, { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    return body;
  }

  async function analyse(file) {
    const card = newCard(file, results);
    const form = new FormData();
    form.append("file", file);
    try {
      show(card, await post("v1/analyze?explain=true" + lotsQuery(), form));
    } catch (err) {
      failed(card, err.message);
    }
  }

  // Several photos of one listing: one request to /v1/listing, one verdict by the server's rule
  // (the listing is to review when any photo is flagged or matches; not cleared when a photo could not
  // be read), then each photo's card.
  async function analyseListing(files) {
    const box = el("section", "listing");
    box.setAttribute("aria-label", "listing of " + files.length + " photos");
    const head = el("div", "listing-verdict", "Analysing a listing of " + files.length + " photos…");
    head.setAttribute("role", "status");
    box.appendChild(head);
    const photos = el("div", "listing-photos");
    box.appendChild(photos);
    results.prepend(box);
    const cards = files.map((f) => newCard(f, photos, true));
    const form = new FormData();
    files.forEach((f) => form.append("file", f));
    let body;
    try {
      body = await post("v1/listing?explain=true" + lotsQuery(), form);
    } catch (err) {
      head.textContent = "Could not analyse the listing: " + err.message;
      head.className = "listing-verdict error";
      cards.forEach((c) => failed(c, "see the listing above"));
      return;
    }
    const parts = [body.flagged_photos + " of " + body.photos + " photos flagged"];
    if (body.matched_photos) parts.push(body.matched_photos + " matching a registered object (best: " + body.best_match + ")");
    if (body.unreadable) parts.push(body.unreadable + " unreadable");
    // status: review, partly screened (a pass on the photos read; some could not be), clear
    const verdict = {review: ["review", "flag"], "partly screened": ["partly screened, not cleared", "weak"],
                     clear: ["pass", "pass"]}[body.status] || ["review", "flag"];
    head.textContent = "Listing: " + verdict[0] + " · " + parts.join(" · ");
    head.className = "listing-verdict " + verdict[1];
    body.results.forEach((res, i) => {
      if (res.error) failed(cards[i], res.error);
      else show(cards[i], res.result);
    });
  }

  function show(card, body) {
    const heat = card.querySelector(".heat");
    const status = card.querySelector(".status");
    status.textContent = "Analysed in " + body.seconds.toFixed(2) + " s";
    showClassification(card.querySelector(".verdict"), body.ivory, "ivory");
    const lot = body.ivory && body.ivory.lot;
    if (lot) {
      // the tile that decided, outlined on the photo (box in the photo's pixels)
      const where = lot.box ? "the outlined part of the photo" : "the whole photo";
      card.querySelector(".verdict").appendChild(el("p", "lot", "Scanned in tiles: highest in " + where +
        "; the whole photo alone scores " + lot.whole_probability.toFixed(3) + "."));
      if (lot.box) {
        const w = body.image.width, h = body.image.height, b = lot.box;
        const frame = el("div", "tile");
        frame.setAttribute("aria-label", "tile that decided");
        frame.style.left = pct(b[0] / w); frame.style.top = pct(b[1] / h);
        frame.style.width = pct((b[2] - b[0]) / w); frame.style.height = pct((b[3] - b[1]) / h);
        card.querySelector(".photo").appendChild(frame);
      }
    }
    const q = body.image.quality;
    if (q && q.warnings.length) {
      card.querySelector(".verdict").appendChild(el("p", "weak", "Weak evidence: " + q.warnings.join("; ") +
        ". The model is less accurate on such photos; a better photo would tell more."));
    }
    showClassification(card.querySelector(".culture"), body.culture, "Culture");
    showMatches(card.querySelector(".matches"), body.register);
    if (body.overlay) {
      const picture = card.querySelector(".picture");
      const o = body.overlay;
      card.serverPhoto = o.photo;
      // the overlay lies on the photo as the model read it: the upload itself when the browser shows it
      // and it has that shape (to the pixel the overlay was rounded to), the server's copy otherwise
      const reshaped = Math.abs(o.height - o.width * body.image.height / body.image.width) > 1.5 ||
                       Math.abs(o.width - o.height * body.image.width / body.image.height) > 1.5;
      if (reshaped || (picture.complete && picture.naturalWidth === 0)) picture.src = body.overlay.photo;
      heat.src = body.overlay.png;
      heat.alt = "evidence overlay (" + body.overlay.method + " for " + body.overlay.target + ")";
      heat.hidden = false;
      const toggle = card.querySelector(".toggle");
      toggle.hidden = false;
      toggle.querySelector("input").addEventListener("change", (e) => { heat.hidden = !e.target.checked; });
    }
    const models = [body.ivory, body.culture].filter(Boolean).map((c) => c.model.name + " v" + c.model.version);
    card.querySelector(".trace").textContent = "image sha256 " + body.image.sha256 +
      (models.length ? " · " + models.join(", ") : "");
  }

  function handle(files) {
    const list = Array.from(files);
    if (oneListing.checked && list.length > 1) analyseListing(list);
    else list.forEach(analyse);
  }
  input.addEventListener("change", () => { handle(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => handle(e.dataTransfer.files));
  // a photo copied from a listing page or a screenshot tool, pasted anywhere on the page (Ctrl+V)
  document.addEventListener("paste", (e) => {
    const files = Array.from((e.clipboardData && e.clipboardData.files) || []).filter((f) => f.type.startsWith("image/"));
    if (files.length) { e.preventDefault(); handle(files); }
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
})();
