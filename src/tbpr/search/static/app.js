// tbpr search page: no external resources. Every /api call carries the API key (if one is stored in
// sessionStorage) as X-API-Key; images are fetched the same way and shown through blob: URLs, because
// an <img src> cannot send headers.
"use strict";

const KEY_STORAGE = "tbpr-api-key";
const $ = (id) => document.getElementById(id);

class HttpError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

let generation = 0; // bumps with every search so late answers of an older one are dropped
let blobUrls = [];
let retryAfterKey = null;
let lastQuery = "";

function apiHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: apiHeaders(options.headers) });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new HttpError(response.status, detail);
  }
  return response;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function handleError(err, retry) {
  if (err instanceof HttpError && err.status === 401) {
    retryAfterKey = retry;
    showError("This server needs an API key: enter it to continue.");
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

async function search() {
  const query = $("query").value.trim();
  if (!query) {
    showError("Type a description first.");
    $("query").focus();
    return;
  }
  const k = Number($("k").value);
  const mine = ++generation;
  showError("");
  $("status").textContent = "Searching\u2026";
  try {
    const body = JSON.stringify({ query, k });
    const answer = await (await api("/api/search", {
      method: "POST", body, headers: { "Content-Type": "application/json" },
    })).json();
    if (mine === generation) {
      lastQuery = answer.query;
      render(answer, mine);
    }
  } catch (err) {
    if (mine !== generation) return;
    $("status").textContent = "";
    handleError(err, search);
  }
}

function render(answer, mine) {
  blobUrls.forEach((url) => URL.revokeObjectURL(url));
  blobUrls = [];
  const list = $("results");
  list.replaceChildren();
  const n = answer.results.length;
  $("status").textContent = n
    ? `${n} result${n === 1 ? "" : "s"} in ${Math.round(answer.took_ms)} ms, best first.`
    : "No results.";
  for (const hit of answer.results) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "result";
    button.setAttribute("aria-label", `Rank ${hit.rank}, score ${hit.score.toFixed(3)}: enlarge`);
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
    button.append(img, caption);
    button.addEventListener("click", () => openViewer(hit, img, button));
    item.append(button);
    list.append(item);
    loadImage(hit.image_url, img, mine);
  }
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
    img.alt = `Result image unavailable: ${err.message}`;
    img.classList.add("broken");
  }
}

function openViewer(hit, img, opener) {
  const viewer = $("viewer");
  $("viewer-image").src = img.src;
  $("viewer-image").alt = `Result ${hit.rank}, enlarged`;
  $("viewer-title").textContent = `Rank ${hit.rank} \u00b7 score ${hit.score.toFixed(3)}`;
  $("viewer-query").textContent = `\u201c${lastQuery}\u201d`;
  $("viewer-detail").textContent = `${hit.path} \u00b7 id ${hit.id}`;
  viewer.addEventListener("close", () => opener.focus(), { once: true });
  viewer.showModal();
}

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
    const retry = retryAfterKey;
    retryAfterKey = null;
    loadHealth();
    if (retry && retry !== loadHealth) retry();
  }
  $("query").focus();
});

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
$("key-button").addEventListener("click", openKeyDialog);
$("query").focus();
loadHealth();
