// soundsift search page: plain JavaScript, no external resources. Text is inserted with
// textContent only (file names are untrusted), and every request goes to this server.
// A server started with an access token answers 401 until the page has it: the page asks once, keeps it
// in localStorage and sends it as a header; POST /api/login then sets an HttpOnly, SameSite=Strict
// session cookie, which the <audio> and <img> elements (they cannot send headers) use.
"use strict";

const form = document.getElementById("search-form");
const input = document.getElementById("q");
const kSelect = document.getElementById("k");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const info = document.getElementById("info");
const button = form.querySelector("button[type=submit]");
const likeBar = document.getElementById("like-bar");
const likeName = document.getElementById("like-name");
const likeClear = document.getElementById("like-clear");
const names = new Map(); // id -> path of the sounds shown so far (for the "more like" bar)
let like = null; // id of the example sound of the current query, or null
const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token");
const tokenMessage = document.getElementById("token-message");
const TOKEN_KEY = "soundsift-token";

function storedToken() {
  try { return localStorage.getItem(TOKEN_KEY); } catch { return null; }
}

function keepToken(token) {
  try {
    if (token === null) localStorage.removeItem(TOKEN_KEY);
    else localStorage.setItem(TOKEN_KEY, token);
  } catch { /* storage refused: the token lasts until the page is closed */ }
  sessionToken = token;
}

let sessionToken = storedToken();

function authHeaders() {
  return sessionToken ? { Authorization: `Bearer ${sessionToken}` } : {};
}

// Resolves with the token the user types into the token form.
function askToken(message) {
  tokenMessage.textContent = message;
  tokenForm.hidden = false;
  form.hidden = true;
  tokenInput.value = "";
  tokenInput.focus();
  return new Promise((resolve) => {
    tokenForm.addEventListener("submit", (event) => {
      event.preventDefault();
      tokenForm.hidden = true;
      form.hidden = false;
      resolve(tokenInput.value.trim());
    }, { once: true });
  });
}

// Until the server accepts this browser: 200 from /api/login (no token needed, or the kept one is right,
// and the session cookie is set); a refused token is forgotten and asked for again.
async function unlock() {
  let message = "This server needs an access token.";
  for (;;) {
    const response = await fetch("/api/login", { method: "POST", headers: authHeaders() });
    if (response.ok) return;
    if (response.status !== 401) throw new Error(`${response.status} ${response.statusText}`);
    if (sessionToken) message = "That access token was refused; enter the current one.";
    keepToken(null);
    keepToken(await askToken(message));
  }
}

// fetch with the token; a 401 (the server's token changed) unlocks again and retries once.
async function apiFetch(url, options = {}) {
  const send = () => fetch(url, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
  const response = await send();
  if (response.status !== 401) return response;
  await unlock();
  return send();
}

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

function errorMessage(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => `${(d.loc || []).slice(-1)[0] || "request"}: ${d.msg}`).join("; ");
  }
  return `${response.status} ${response.statusText}`;
}

function formatDuration(seconds) {
  if (!(seconds > 0)) return "";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.floor(seconds % 60);
  return `${m}:${String(s).padStart(2, "0")}`;
}

// mm:ss-mm:ss, whole seconds rounded down / up: the same text as the CLI's search output.
function formatSpan(start, end) {
  const mmss = (t) => `${String(Math.floor(t / 60)).padStart(2, "0")}:${String(t % 60).padStart(2, "0")}`;
  return `${mmss(Math.floor(start))}-${mmss(Math.ceil(end))}`;
}

// The hit's best moment when it is a part of its file (start/end in seconds), else null.
function momentOf(hit) {
  const start = Number(hit.start), end = Number(hit.end), duration = Number(hit.duration);
  if (!(duration > 0) || !Number.isFinite(start) || !Number.isFinite(end) || !(end > start)) return null;
  if (start <= 0.05 && end >= duration - 0.05) return null; // the whole file
  return { start: Math.max(0, start), end: Math.min(end, duration), duration };
}

// Start a player at its hit's moment: once the metadata is known (seeking needs it), unless the
// listener already moved it. /api/audio answers Range requests, so seeking in long files is cheap.
function cueMoment(audio, start) {
  if (!(start > 0)) return;
  const seek = () => { if (audio.currentTime < 0.01) audio.currentTime = start; };
  if (audio.readyState >= 1) seek();
  else audio.addEventListener("loadedmetadata", seek, { once: true });
}

// Play a span of a result (its best moment or another one) and pause at its end; a seek by the
// listener outside the span lets the player run on.
function playSpan(audio, start, end) {
  audio.dataset.stopAt = end > start ? String(end) : "";
  audio.dataset.from = String(start);
  audio.currentTime = start;
  audio.play().catch(() => {}); // a refused autoplay leaves the player at the moment, ready
}

function watchSpan(audio) {
  audio.addEventListener("timeupdate", () => {
    const stopAt = Number(audio.dataset.stopAt);
    if (stopAt > 0 && audio.currentTime >= stopAt) { audio.pause(); audio.dataset.stopAt = ""; }
  });
  audio.addEventListener("seeking", () => {
    const from = Number(audio.dataset.from || 0), stopAt = Number(audio.dataset.stopAt);
    if (stopAt > 0 && (audio.currentTime < from - 0.5 || audio.currentTime > stopAt)) audio.dataset.stopAt = "";
  });
}

// Further moments of a long file (the API's "moments" after the best one), as buttons that play them.
function extraMoments(hit, duration) {
  const out = [];
  for (const m of (hit.moments || []).slice(1)) {
    const moment = momentOf({ start: m.start, end: m.end, duration });
    if (moment) out.push(moment);
  }
  return out;
}

function render(hits) {
  results.replaceChildren();
  for (const hit of hits) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.id = String(hit.id);
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `${hit.rank}.`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    score.title = "cosine similarity";
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = hit.path;
    const duration = formatDuration(hit.duration);
    if (duration) {
      const d = document.createElement("span");
      d.className = "duration";
      d.textContent = duration;
      path.append(d);
    }
    const moment = momentOf(hit);
    if (moment) {
      const span = document.createElement("span");
      span.className = "moment";
      span.textContent = formatSpan(moment.start, moment.end);
      span.title = "best-matching moment";
      path.append(span);
      li.dataset.start = String(moment.start);
      li.dataset.end = String(moment.end);
      for (const other of extraMoments(hit, moment.duration)) {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.className = "moment-more";
        chip.textContent = formatSpan(other.start, other.end);
        chip.setAttribute("aria-label", `Play ${hit.path} from ${formatSpan(other.start, other.end)} (another moment)`);
        chip.dataset.start = String(other.start);
        chip.dataset.end = String(other.end);
        path.append(chip);
      }
    }
    const thumb = document.createElement("img");
    thumb.className = "thumb";
    thumb.width = 96;
    thumb.height = 32;
    thumb.alt = "spectrogram";
    thumb.loading = "lazy";
    thumb.decoding = "async";
    thumb.src = `/api/thumbnail/${encodeURIComponent(hit.id)}`;
    // The thumbnail is a button that plays the result from its moment (keyboard: Tab, Enter/Space).
    const play = document.createElement("button");
    play.type = "button";
    play.className = "thumb-play";
    play.setAttribute("aria-label", moment ? `Play ${hit.path} from ${formatSpan(moment.start, moment.end)}`
                                           : `Play ${hit.path}`);
    play.append(thumb);
    if (moment) {
      // Marks the moment across the thumbnail (CSSOM properties: allowed by the page's CSP).
      const mark = document.createElement("span");
      mark.className = "moment-mark";
      mark.style.left = `${(100 * moment.start / moment.duration).toFixed(3)}%`;
      mark.style.width = `${(100 * (moment.end - moment.start) / moment.duration).toFixed(3)}%`;
      play.append(mark);
    }
    thumb.addEventListener("error", () => { thumb.hidden = true; play.classList.add("no-thumb"); }, { once: true });
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = `/api/audio/${encodeURIComponent(hit.id)}`;
    audio.setAttribute("aria-label", `Player for ${hit.path}`);
    if (moment) cueMoment(audio, moment.start);
    watchSpan(audio);
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more";
    more.textContent = "More like this";
    more.setAttribute("aria-label", `More sounds like ${hit.path}`);
    more.dataset.id = String(hit.id);
    const dupes = document.createElement("button");
    dupes.type = "button";
    dupes.className = "dupes";
    dupes.textContent = "Duplicates";
    dupes.setAttribute("aria-label", `Files that duplicate ${hit.path}`);
    dupes.setAttribute("aria-expanded", "false");
    const actions = document.createElement("span");
    actions.className = "actions";
    actions.append(dupes, more);
    const dupeList = document.createElement("ul");
    dupeList.className = "dupe-list";
    dupeList.hidden = true;
    li.append(rank, score, path, actions, play, audio, dupeList);
    results.append(li);
    names.set(String(hit.id), hit.path);
  }
}

results.addEventListener("click", (event) => {
  const play = event.target.closest("button.thumb-play");
  if (play) {
    const li = play.closest(".result");
    // From the moment, every time, to its end (a whole file plays to its end).
    playSpan(li.querySelector("audio"), Number(li.dataset.start || 0), Number(li.dataset.end || 0));
    return;
  }
  const chip = event.target.closest("button.moment-more");
  if (chip) {
    playSpan(chip.closest(".result").querySelector("audio"), Number(chip.dataset.start), Number(chip.dataset.end));
    return;
  }
  const dupes = event.target.closest("button.dupes");
  if (dupes) { showDuplicates(dupes.closest(".result"), dupes); return; }
  const more = event.target.closest("button.more");
  if (!more) return;
  setLike(more.dataset.id);
  input.value = "";
  search("", kSelect.value, true, true);
});

// "Duplicates": the files identical to this one or near-duplicates of it (re-encoded, resampled,
// trimmed, louder or quieter), listed under the result; a second click hides the list.
async function showDuplicates(li, toggle) {
  const list = li.querySelector(".dupe-list");
  if (!list.hidden) { list.hidden = true; toggle.setAttribute("aria-expanded", "false"); return; }
  const response = await apiFetch(`/api/duplicates/${encodeURIComponent(li.dataset.id)}`);
  const body = await response.json().catch(() => null);
  if (!response.ok) { setStatus(errorMessage(body, response), true); return; }
  list.replaceChildren();
  for (const m of body) {
    const item = document.createElement("li");
    item.dataset.id = String(m.id);
    item.textContent = `${m.similarity.toFixed(3)}  ${m.path}${m.identical ? " (same content)" : ""}`;
    list.append(item);
  }
  if (!body.length) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "No duplicates in the index.";
    list.append(none);
  }
  list.hidden = false;
  toggle.setAttribute("aria-expanded", "true");
}

function setLike(id) {
  like = id;
  likeBar.hidden = like === null;
  if (like !== null) likeName.textContent = names.get(like) || `sound ${like}`;
}

likeClear.addEventListener("click", () => {
  setLike(null);
  input.focus();
});

// Only one player at a time.
results.addEventListener("play", (event) => {
  for (const a of results.querySelectorAll("audio")) if (a !== event.target) a.pause();
}, true);

const folderInput = document.getElementById("folder");
const minInput = document.getElementById("dmin");
const maxInput = document.getElementById("dmax");
const whereInput = document.getElementById("where");

// A text value for the filter grammar (docs/library.md), quoted with a quote it does not contain.
function quoted(text) {
  return text.includes("'") ? `"${text}"` : `'${text}'`;
}

// The page's filters as one `where` expression for /api/search ("" when none).
function whereFilter() {
  const parts = [];
  const folder = folderInput.value.trim().replace(/^\/+|\/+$/g, "");
  if (folder) parts.push(`folder ~ ${quoted(folder)}`);
  if (minInput.value !== "") parts.push(`duration >= ${Number(minInput.value)}`);
  if (maxInput.value !== "") parts.push(`duration <= ${Number(maxInput.value)}`);
  if (whereInput.value.trim()) parts.push(`(${whereInput.value.trim()})`);
  return parts.join(" and ");
}

async function search(query, k, push, focusResults) {
  query = query.trim();
  if (!query && like === null) { setStatus("Type what the sound is like.", true); return; }
  button.disabled = true;
  setStatus("Searching\u2026");
  const params = new URLSearchParams();
  if (query) params.set("q", query);
  if (like !== null) params.set("like", like);
  params.set("k", String(k));
  params.set("moments", "3"); // a long recording's best moment and up to two more
  const where = whereFilter();
  if (where) params.set("where", where);
  const pageParams = new URLSearchParams(params);
  pageParams.delete("where");
  pageParams.delete("moments");
  for (const [name, el] of [["folder", folderInput], ["min", minInput], ["max", maxInput], ["where", whereInput]]) {
    if (el.value.trim()) pageParams.set(name, el.value.trim());
  }
  const what = [query && `\u201c${query}\u201d`, like !== null && `sounds like ${likeName.textContent}`]
    .filter(Boolean).join(" + ");
  try {
    const response = await apiFetch(`/api/search?${params}`, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    if (!response.ok) { setStatus(errorMessage(body, response), true); return; }
    render(body);
    setStatus(body.length ? `${body.length} result${body.length === 1 ? "" : "s"} for ${what}${where ? " (filtered)" : ""}`
                          : where ? "No sounds match the filters."
                          : like !== null ? "No other sounds in the index." : "No results: the index is empty.");
    if (push) history.pushState({ q: query, like, k }, "", `?${pageParams}`);
    if (focusResults) (results.querySelector("button.more") || likeClear).focus(); // keyboard: stay in the list
  } catch (err) {
    setStatus(`Search failed: ${err}`, true);
  } finally {
    button.disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search(input.value, kSelect.value, true);
});

function fromLocation() {
  const params = new URLSearchParams(location.search);
  const q = params.get("q") || "";
  const k = params.get("k");
  const id = params.get("like");
  if (k && [...kSelect.options].some((o) => o.value === k)) kSelect.value = k;
  folderInput.value = params.get("folder") || "";
  minInput.value = params.get("min") || "";
  maxInput.value = params.get("max") || "";
  whereInput.value = params.get("where") || "";
  setLike(id && /^[0-9]{1,15}$/.test(id) ? id : null);
  input.value = q;
  if (q || like !== null) search(q, kSelect.value, false);
}
window.addEventListener("popstate", fromLocation);

function showInfo() {
  return apiFetch("/api/info").then((r) => (r.ok ? r.json() : null)).then((data) => {
    if (!data) { info.textContent = ""; return; }
    input.maxLength = data.max_query_chars;
    for (const o of [...kSelect.options]) if (Number(o.value) > data.max_k) o.remove();
    const hours = data.total_hours >= 0.1 ? `, ${data.total_hours.toFixed(1)} h of audio` : "";
    info.textContent = `${data.items} sounds indexed${hours}`;
  }).catch(() => { info.textContent = ""; });
}

unlock().then(() => { showInfo(); fromLocation(); })
  .catch((err) => { info.textContent = ""; setStatus(`Cannot reach the server: ${err}`, true); });
