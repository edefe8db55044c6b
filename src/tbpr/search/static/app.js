// tbpr search page: no external resources. Every /api call carries the API key (if one is stored in
// sessionStorage) as X-API-Key; images are fetched the same way and shown through blob: URLs, because
// an <img src> cannot send headers. The search (?q=...&k=... or ?similar=ID&k=...) lives in the URL, so
// a reload or a shared link shows the same results.
"use strict";

const KEY_STORAGE = "tbpr-api-key";
const $ = (id) => document.getElementById(id);

class HttpError extends Error {
  constructor(status, detail, sentKey) {
    super(detail);
    this.status = status;
    this.sentKey = sentKey;
  }
}

let generation = 0; // bumps with every search so late answers of an older one are dropped
let blobUrls = [];
const retryAfterKey = new Set(); // what failed for want of a key, re-run once one is entered
let lastQuery = "";
let shown = []; // the hits on screen: {hit, img, button}
let viewing = -1; // index in `shown` of the enlarged result

function apiHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function api(path, options = {}) {
  const headers = apiHeaders(options.headers);
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new HttpError(response.status, detail, "X-API-Key" in headers);
  }
  return response;
}

async function postJson(path, body) {
  return (await api(path, {
    method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
  })).json();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function handleError(err, retry) {
  if (err instanceof HttpError && err.status === 401) {
    retryAfterKey.add(retry);
    showError(err.sentKey
      ? "The API key was rejected: enter the right key."
      : "This server needs an API key: enter it to continue.");
    openKeyDialog();
  } else {
    showError(err instanceof HttpError ? `Error: ${err.message}` : `Cannot reach the server (${err.message}).`);
  }
}

async function loadHealth() {
  try {
    const health = await (await api("/api/health")).json();
    $("gallery-info").textContent =
      `${health.gallery_size.toLocaleString()} images \u00b7 model ${health.model} \u00b7 ${health.index_kind} index`;
  } catch (err) {
    $("gallery-info").textContent = "gallery unavailable";
    handleError(err, loadHealth);
  }
}

// ----------------------------------------------------------------------------- the search in the URL

function currentK() {
  return Number($("k").value);
}

function setK(k) {
  const select = $("k");
  if (![...select.options].some((o) => o.value === String(k))) select.add(new Option(String(k)));
  select.value = String(k);
}

function pushUrl(params) {
  const search = `?${new URLSearchParams(params)}`;
  if (search !== window.location.search) history.pushState(null, "", search);
}

// Run the search the URL describes (on load and on back/forward); an empty URL shows the examples.
function runFromUrl() {
  const params = new URLSearchParams(window.location.search);
  const k = Number(params.get("k"));
  if (Number.isInteger(k) && k > 0) setK(k);
  if (params.get("similar")) {
    similar(params.get("similar"), false);
  } else if (params.get("q")) {
    $("query").value = params.get("q");
    search(false);
  } else {
    clearResults();
  }
}

// ------------------------------------------------------------------------------------------ searching

async function search(push = true) {
  const query = $("query").value.trim();
  if (!query) {
    showError("Type a description first.");
    $("query").focus();
    return;
  }
  const k = currentK();
  if (push) pushUrl({ q: query, k });
  await run(() => postJson("/api/search", { query, k }), (answer) => {
    lastQuery = answer.query;
    return `in ${Math.round(answer.took_ms)} ms, best first.`;
  }, () => search(false));
}

async function similar(id, push = true) {
  const k = currentK();
  if (push) pushUrl({ similar: id, k });
  await run(() => postJson("/api/similar", { id, k }), (answer) => {
    lastQuery = `similar to ${answer.path}`;
    return `similar to ${answer.path}, best first.`;
  }, () => similar(id, false));
}

async function run(request, describe, retry) {
  const mine = ++generation;
  showError("");
  $("status").textContent = "Searching\u2026";
  try {
    const answer = await request();
    if (mine === generation) render(answer, describe(answer), mine);
  } catch (err) {
    if (mine !== generation) return;
    $("status").textContent = "";
    handleError(err, retry);
  }
}

function clearResults() {
  ++generation;
  blobUrls.forEach((url) => URL.revokeObjectURL(url));
  blobUrls = [];
  shown = [];
  $("results").replaceChildren();
  $("status").textContent = "";
  $("examples").hidden = false;
}

function render(answer, detail, mine) {
  clearResults();
  generation = mine;
  $("examples").hidden = true;
  const n = answer.results.length;
  $("status").textContent = n ? `${n} result${n === 1 ? "" : "s"} ${detail}` : "No results.";
  answer.results.forEach((hit, index) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "result";
    button.setAttribute("aria-label", `Rank ${hit.rank}, score ${hit.score.toFixed(3)}, ${hit.path}: enlarge`);
    const img = document.createElement("img");
    img.alt = `Result ${hit.rank}`;
    img.decoding = "async";
    const caption = document.createElement("span");
    caption.className = "caption";
    const rank = document.createElement("b");
    rank.textContent = `#${hit.rank}`;
    const score = document.createElement("span");
    score.textContent = hit.score.toFixed(3);
    caption.append(rank, score);
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = hit.path.split("/").pop();
    path.title = hit.path;
    button.append(img, caption, path);
    button.addEventListener("click", () => openViewer(index));
    const more = document.createElement("button");
    more.type = "button";
    more.className = "link similar";
    more.textContent = "Similar";
    more.setAttribute("aria-label", `Find images similar to result ${hit.rank}`);
    more.addEventListener("click", () => similar(hit.id));
    item.append(button, more);
    $("results").append(item);
    shown.push({ hit, img, button });
    loadImage(hit.image_url, img, mine);
  });
}

async function loadImage(url, img, mine) {
  try {
    const blob = await (await api(url)).blob();
    if (mine !== generation) return;
    const objectUrl = URL.createObjectURL(blob);
    blobUrls.push(objectUrl);
    img.src = objectUrl;
  } catch (err) {
    if (mine !== generation) return;
    markUnavailable(img, err.message);
  }
}

function markUnavailable(img, why) {
  const placeholder = document.createElement("span");
  placeholder.className = "placeholder";
  placeholder.setAttribute("role", "img");
  placeholder.setAttribute("aria-label", `${img.alt}: image unavailable (${why})`);
  placeholder.textContent = "image unavailable";
  img.hidden = true;
  img.after(placeholder);
}

// ------------------------------------------------------------------------------------ enlarged view

function openViewer(index) {
  showInViewer(index);
  const viewer = $("viewer");
  if (!viewer.open) viewer.showModal();
}

function showInViewer(index) {
  viewing = index;
  const { hit, img } = shown[index];
  const loaded = Boolean(img.src) && !img.hidden;
  $("viewer-image").hidden = !loaded;
  $("viewer-missing").hidden = loaded;
  if (loaded) $("viewer-image").src = img.src;
  $("viewer-image").alt = `Result ${hit.rank}, enlarged`;
  $("viewer-title").textContent = `Rank ${hit.rank} \u00b7 score ${hit.score.toFixed(3)}`;
  $("viewer-query").textContent = `\u201c${lastQuery}\u201d`;
  $("viewer-detail").textContent = `${hit.path} \u00b7 id ${hit.id}`;
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index === shown.length - 1;
}

function step(delta) {
  const next = viewing + delta;
  if (next >= 0 && next < shown.length) showInViewer(next);
}

$("viewer").addEventListener("keydown", (event) => {
  if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
    event.preventDefault();
    step(event.key === "ArrowLeft" ? -1 : 1);
  }
});
$("viewer").addEventListener("click", (event) => { // a click on the backdrop, outside the box, closes
  const box = $("viewer").getBoundingClientRect();
  const inside = event.clientX >= box.left && event.clientX <= box.right
    && event.clientY >= box.top && event.clientY <= box.bottom;
  if (event.target === $("viewer") && !inside) $("viewer").close();
});
$("viewer").addEventListener("close", () => shown[viewing]?.button.focus());
$("viewer-prev").addEventListener("click", () => step(-1));
$("viewer-next").addEventListener("click", () => step(1));
$("viewer-similar").addEventListener("click", () => {
  const { hit } = shown[viewing];
  $("viewer").close();
  similar(hit.id);
});

// ------------------------------------------------------------------------------------------- API key

function openKeyDialog() {
  const dialog = $("key-dialog");
  if (dialog.open) return;
  $("key-input").value = sessionStorage.getItem(KEY_STORAGE) || "";
  dialog.showModal();
  $("key-input").focus();
}

$("key-dialog").addEventListener("close", () => {
  const action = $("key-dialog").returnValue;
  $("key-dialog").returnValue = "";
  if (action === "clear") {
    sessionStorage.removeItem(KEY_STORAGE);
  } else if (action === "save" && $("key-input").value) {
    sessionStorage.setItem(KEY_STORAGE, $("key-input").value);
    showError("");
    const retries = [...retryAfterKey];
    retryAfterKey.clear();
    loadHealth();
    retries.filter((retry) => retry !== loadHealth).forEach((retry) => retry());
  }
  $("query").focus();
});

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
for (const example of document.querySelectorAll("#examples .example")) {
  example.addEventListener("click", () => {
    $("query").value = example.textContent;
    search();
  });
}
$("key-button").addEventListener("click", openKeyDialog);
window.addEventListener("popstate", runFromUrl);
$("query").focus();
loadHealth();
runFromUrl();
