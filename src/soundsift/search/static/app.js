// soundsift search page: plain JavaScript, no external resources. Text is inserted with
// textContent only (file names are untrusted), and every request goes to this server.
"use strict";

const form = document.getElementById("search-form");
const input = document.getElementById("q");
const kSelect = document.getElementById("k");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const info = document.getElementById("info");
const button = form.querySelector("button");

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
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = `/api/audio/${encodeURIComponent(hit.id)}`;
    li.append(rank, score, path, audio);
    results.append(li);
  }
}

// Only one player at a time.
results.addEventListener("play", (event) => {
  for (const a of results.querySelectorAll("audio")) if (a !== event.target) a.pause();
}, true);

async function search(query, k, push) {
  if (!query.trim()) { setStatus("Type what the sound is like.", true); return; }
  button.disabled = true;
  setStatus("Searching\u2026");
  const params = new URLSearchParams({ q: query, k: String(k) });
  try {
    const response = await fetch(`/api/search?${params}`, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    if (!response.ok) { setStatus(errorMessage(body, response), true); return; }
    render(body);
    setStatus(body.length ? `${body.length} result${body.length === 1 ? "" : "s"} for \u201c${query}\u201d`
                          : "No results: the index is empty.");
    if (push) history.pushState({ q: query, k }, "", `?${params}`);
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
  const q = params.get("q");
  const k = params.get("k");
  if (k && [...kSelect.options].some((o) => o.value === k)) kSelect.value = k;
  if (q) { input.value = q; search(q, kSelect.value, false); }
}
window.addEventListener("popstate", fromLocation);

fetch("/api/info").then((r) => (r.ok ? r.json() : null)).then((data) => {
  if (!data) { info.textContent = ""; return; }
  input.maxLength = data.max_query_chars;
  for (const o of [...kSelect.options]) if (Number(o.value) > data.max_k) o.remove();
  const hours = data.total_hours >= 0.1 ? `, ${data.total_hours.toFixed(1)} h of audio` : "";
  info.textContent = `${data.items} sounds indexed${hours}`;
}).catch(() => { info.textContent = ""; });

fromLocation();
